"""What the server-side commands share: the database they open (`--database-url`, or the
embedded cluster) and how they stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .service import JobService
from .store.db import connect, create_pool
from .store.embedded import EmbeddedPostgres
from .store.eventstore import EventStore
from .store.migrate import migrate

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


@contextlib.asynccontextmanager
async def service_for(
    args: argparse.Namespace, **pool_args: Any
) -> AsyncIterator[tuple[JobService, str]]:
    """A job service on the database the arguments name, with the schema brought up to
    date, and that database's URL; the pool is closed afterwards."""
    async with database(args) as dsn:
        pool = await create_pool(dsn, **pool_args)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            yield JobService(EventStore(pool)), dsn
        finally:
            await pool.close()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
