"""The `jobledger` command line: `main` parses and runs a verb. The client verbs load the
HTTP client and the wire types only; the server verbs import the server when they run."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
