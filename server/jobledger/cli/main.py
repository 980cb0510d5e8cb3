"""The `jobledger` command: the parser of every verb, and running the one asked for."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .. import logconfig
from ..domain.errors import DomainError
from ..exitcodes import EXIT_ERROR, Exit
from . import clientverbs, definitionverbs, replay, schedules, secrets, server, workflows
from .options import add_client_args, env_option

DESCRIPTION = """\
jobledger runs jobs (a container image and a command) and keeps every change of every job
in an event log in PostgreSQL. `jobledger serve` starts the server (HTTP API and a
scheduler, with an embedded database unless --database-url); the client verbs (submit,
jobs, show, logs, cancel, audit, tokens) talk to it over HTTP; replay reads the log.
`jobledger VERB --help` tells more about each."""

EPILOG = """\
example:
  jobledger serve                                  # prints an admin token the first time
  export JOBLEDGER_TOKEN=jl_...
  jobledger submit --wait jobledger-test:latest -- echo hello
  jobledger jobs"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobledger",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = parser.add_argument_group("logging")
    env_option(
        g, "--log-format", env="JOBLEDGER_LOG_FORMAT", choices=["auto", "json", "console"],
        default="auto", help="the server's own logs: auto is console in a terminal, else JSON",
    )  # fmt: skip
    env_option(
        g, "--log-level", env="JOBLEDGER_LOG_LEVEL",
        help="least level shown (unset: info for serve and worker, warning for the tools, "
        "whose answer is their output)",
    )  # fmt: skip
    add_client_args(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.configure_serve_parser(sub)
    server.configure_worker_parser(sub)
    server.configure_migrate_parser(sub)
    replay.configure_replay_parser(sub)
    clientverbs.configure_logs_parser(sub)
    clientverbs.configure_submit_parser(sub)
    clientverbs.configure_jobs_parser(sub)
    clientverbs.configure_audit_parser(sub)
    clientverbs.configure_show_parser(sub)
    clientverbs.configure_cancel_parser(sub)
    clientverbs.configure_rerun_parser(sub)
    clientverbs.configure_tokens_parser(sub)
    secrets.configure_secrets_parser(sub)
    definitionverbs.configure_definitions_parser(sub)
    definitionverbs.configure_environments_parser(sub)
    schedules.configure_schedules_parser(sub)
    workflows.configure_workflows_parser(sub)
    return parser


async def run(args: argparse.Namespace) -> int:
    """The verb `args` asks for; a server verb's failures become `Exit`s."""
    if args.command in SERVER_VERBS:
        from .startup import server_errors

        with server_errors():
            code: int = await args.func(args)
            return code
    code = await args.func(args)
    return code


#: Verbs that run until stopped: their logs are how they are watched.
LONG_RUNNING = frozenset({"serve", "worker"})
#: Verbs that open the database and so load the server's modules.
SERVER_VERBS = frozenset({"serve", "worker", "migrate", "replay"})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or ("info" if args.command in LONG_RUNNING else "warning")
    logconfig.configure(args.log_format, level)
    try:
        code = asyncio.run(run(args))
        if not sys.stdout.closed:  # (a verb may close it, e.g. an export to stdout)
            sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`jobledger audit --json | head -1`): nothing more to say to
        # it. Later writes (the interpreter's flush at exit) go nowhere instead of failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exit as exc:
        print(f"jobledger: {exc.message}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        print(f"jobledger: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except DomainError as exc:
        print(f"jobledger: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
