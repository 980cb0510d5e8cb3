"""`jobledger` command line: one `configure_*_parser` per subcommand."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import structlog
from aiohttp import web

from . import logs
from .domain.errors import DomainError
from .store.db import DatabaseUnavailable, connect, create_pool
from .store.embedded import EmbeddedPostgres, EmbeddedPostgresError
from .store.migrate import migrate

log = structlog.get_logger("jobledger")

#: Exit codes scripts can rely on, mapped from errors in this one place.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3

DATABASE_NAME = "jobledger"


def default_data_dir() -> Path:
    """Where the embedded database lives unless told otherwise."""
    if env := os.environ.get("JOBLEDGER_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        # Root's home is closed to the `postgres` user the cluster must run as.
        return Path("/var/lib/jobledger")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jobledger"


def add_database_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (env DATABASE_URL); without it an embedded cluster is used",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory of the embedded cluster (env JOBLEDGER_DATA_DIR; default "
        "~/.local/share/jobledger, or /var/lib/jobledger as root)",
    )


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    """The DSN to use, starting the embedded cluster when no URL is given (and stopping it
    afterwards if this process started it)."""
    if args.database_url:
        yield args.database_url
        return
    data_dir = args.data_dir or default_data_dir()
    pg = EmbeddedPostgres(data_dir / "pg")
    started = not pg.running
    await asyncio.to_thread(pg.start)
    try:
        conn = await connect(pg.dsn("postgres"))
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            await conn.close()
        yield pg.dsn(DATABASE_NAME)
    finally:
        if started:
            await asyncio.to_thread(pg.stop)


# ---- serve --------------------------------------------------------------------------------


def configure_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the HTTP API (and, as issues land, the scheduler)")
    add_database_args(p)
    p.add_argument("--host", default=os.environ.get("JOBLEDGER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("JOBLEDGER_PORT", "8080")))
    p.set_defaults(func=cmd_serve)


async def cmd_serve(args: argparse.Namespace) -> int:
    from .api.app import create_app
    from .service import JobService
    from .store.eventstore import EventStore

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with database(args) as dsn:
        pool = await create_pool(dsn)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            app = create_app(JobService(EventStore(pool)))
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, args.host, args.port)
            await site.start()
            where = (
                "DATABASE_URL"
                if args.database_url
                else f"embedded, {args.data_dir or default_data_dir()}"
            )
            log.info("jobledger serving", url=f"http://{args.host}:{args.port}", database=where)
            try:
                await stop.wait()
                log.info("shutting down")
            finally:
                await runner.cleanup()
        finally:
            await pool.close()
    return EXIT_OK


# ---- migrate ------------------------------------------------------------------------------


def configure_migrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="apply schema.sql to the database (idempotent)")
    add_database_args(p)
    p.set_defaults(func=cmd_migrate)


async def cmd_migrate(args: argparse.Namespace) -> int:
    async with database(args) as dsn:
        conn = await connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    print("schema is up to date")
    return EXIT_OK


# ---- replay -------------------------------------------------------------------------------


class RebuildReport(msgspec.Struct):
    projection: str
    jobs: int
    events: int
    seconds: float
    events_per_second: float


def configure_replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="tools that read the event log")
    add_database_args(p)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    rebuild = verbs.add_parser("rebuild", help="rebuild every projection from the event log")
    rebuild.set_defaults(func=cmd_replay_rebuild)


async def cmd_replay_rebuild(args: argparse.Namespace) -> int:
    from .projections import jobs as jobs_projection

    async with database(args) as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            events = await pool.fetchval("SELECT count(*) FROM events")
            started = time.perf_counter()
            count = await jobs_projection.rebuild(pool)
            seconds = time.perf_counter() - started
        finally:
            await pool.close()
    report = RebuildReport(
        "jobs", count, events, round(seconds, 3), round(events / max(seconds, 1e-9))
    )
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return EXIT_OK


# ---- entry point --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobledger", description=__doc__)
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=os.environ.get("JOBLEDGER_LOG_FORMAT", "auto"),
    )
    parser.add_argument("--log-level", default=os.environ.get("JOBLEDGER_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    configure_serve_parser(sub)
    configure_migrate_parser(sub)
    configure_replay_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    try:
        code: int = asyncio.run(args.func(args))
        return code
    except (EmbeddedPostgresError, DatabaseUnavailable, asyncpg.PostgresError) as exc:
        print(f"jobledger: database error: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except OSError as exc:
        print(f"jobledger: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except DomainError as exc:
        print(f"jobledger: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
