"""The web dashboard (issue 17): static pages served by `jobledger serve` under `/`, talking
to the API under `/api/v1` like any other client."""

from .serving import setup

__all__ = ["setup"]
