"""How the CLI declares its options: each once, with the environment variable that sets its
default (shown in `--help`), and the argparse types the verbs share."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from ..client import DEFAULT_URL
from ..exitcodes import EXIT_USAGE, Exit

Group = argparse.ArgumentParser | argparse._ArgumentGroup


def env_option(
    group: Group,
    *flags: str,
    env: str,
    default: Any = None,
    type: Callable[[str], Any] | None = None,
    help: str | None = None,
    **kw: Any,
) -> argparse.Action:
    """An option whose default is the environment variable `env` when set (non-empty), else
    `default`; `--help` says which variable, and the default in force. A bad value in the
    variable is reported by argparse as a bad value of the option."""
    raw = os.environ.get(env)
    value = raw if raw else default
    shown = f"env {env}"
    if value is not None and value != "":
        shown += "; default: %(default)s"
    text = f"{help} ({shown})" if help else f"({shown})"
    # A string default goes through `type` (argparse does it when the option is not given).
    return group.add_argument(*flags, default=value, type=type, help=text, **kw)


def key_value(text: str) -> tuple[str, str]:
    """`KEY=VALUE` on the command line (an argparse type)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def iso_time(text: str) -> datetime:
    """An ISO 8601 time with its offset, e.g. 2030-01-01T09:00:00Z (an argparse type)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a timezone offset, e.g. 2030-01-01T09:00:00Z or +02:00"
        )
    return value


def add_database_args(p: argparse.ArgumentParser) -> None:
    """`--database-url` and `--data-dir`, the options of every verb that opens the database."""
    g = p.add_argument_group("database")
    env_option(
        g, "--database-url", env="DATABASE_URL",
        help="PostgreSQL URL; without it an embedded cluster is used",
    )  # fmt: skip
    env_option(
        g, "--data-dir", env="JOBLEDGER_DATA_DIR", type=Path,
        help="directory of the embedded cluster (unset: ~/.local/share/jobledger, or "
        "/var/lib/jobledger as root)",
    )  # fmt: skip


def add_client_args(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """`--url` and `--token`, the options of every verb that talks to a server. They are
    accepted before the verb (`top`: where the defaults are) and after it."""
    g = p.add_argument_group("server")
    url_help = "the server"
    token_help = (
        "API token, sent as `Authorization: Bearer` (prefer the variable: it keeps the "
        "token out of the process list)"
    )
    if top:
        env_option(g, "--url", env="JOBLEDGER_URL", default=DEFAULT_URL, help=url_help)
        env_option(g, "--token", env="JOBLEDGER_TOKEN", help=token_help)
    else:
        # SUPPRESS: not given after the verb, the value given before it (or its default) holds.
        g.add_argument("--url", default=argparse.SUPPRESS, help=f"{url_help} (env JOBLEDGER_URL)")
        g.add_argument(
            "--token", default=argparse.SUPPRESS, help=f"{token_help} (env JOBLEDGER_TOKEN)"
        )


def read_json_arg(path: str, what: str) -> Any:
    """The JSON document of a file argument (`-`: stdin), read before any request; a usage
    error naming the file when it cannot be read or is not JSON."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return msgspec.json.decode(text)
    except (OSError, UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise Exit(EXIT_USAGE, f"cannot read {what} from {path}: {exc}") from None
