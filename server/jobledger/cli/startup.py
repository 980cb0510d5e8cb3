"""How the server-side verbs start and stop: the database they open (`--database-url`, or
the embedded cluster), the job service on it, and the signals that end them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from ..exitcodes import EXIT_DATABASE, EXIT_ERROR, Exit
from ..service import JobService
from ..store.db import DatabaseUnavailable, connect, create_pool
from ..store.embedded import EmbeddedPostgres, EmbeddedPostgresError
from ..store.eventstore import EventStore
from ..store.migrate import migrate
from ..store.secretbox import (
    SecretBox,
    SecretsKeyError,
    box_from_env,
    create_key_file,
    read_key_file,
)

DATABASE_NAME = "jobledger"


def default_data_dir() -> Path:
    """Where the embedded database lives unless `--data-dir` (JOBLEDGER_DATA_DIR) says."""
    if os.geteuid() == 0:
        # Root's home is closed to the `postgres` user the cluster must run as.
        return Path("/var/lib/jobledger")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jobledger"


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    """The DSN to use, starting the embedded cluster when no URL is given. The cluster is
    stopped when the last process using it ends (two servers on one data directory, or a
    `replay` verb beside a server, never stop it under another)."""
    if args.database_url:
        yield args.database_url
        return
    data_dir = args.data_dir or default_data_dir()
    pg = EmbeddedPostgres(data_dir / "pg")
    lock = await asyncio.to_thread(pg.attach)
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
        await asyncio.to_thread(pg.detach, lock)


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


def default_key_file(data_dir: Path) -> Path:
    """The secrets key file of an embedded database: beside its data directory, not in it,
    so a copy of the data directory does not carry the key that opens its secrets."""
    return data_dir.parent / f"{data_dir.name}-secrets.key"


def secrets_box(args: argparse.Namespace, *, create: bool = False) -> SecretBox | None:
    """The secrets key this process holds: `JOBLEDGER_SECRETS_KEY`, else the file
    `JOBLEDGER_SECRETS_KEY_FILE` names, else (embedded database only) the key file beside
    its data directory, which `create` makes if it does not exist, saying so once. None
    without any: jobs that use secrets are then not claimed here, and none can be set."""
    import structlog

    log = structlog.get_logger("jobledger")
    box = box_from_env()
    if box is not None or args.database_url:
        return box
    path = default_key_file(args.data_dir or default_data_dir())
    if path.exists():
        return read_key_file(path)
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    box = create_key_file(path)
    log.warning(
        "created a secrets key file (keep it and back it up apart from the database: "
        "the stored secrets cannot be read without it)",
        path=str(path),
        key_id=box.key_id,
    )
    return box


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@contextlib.contextmanager
def server_errors() -> Iterator[None]:
    """The failures of a server-side verb as the CLI reports them: the database (exit 3),
    Docker asked for and absent, a worker id in use (exit 1)."""
    import asyncpg

    from ..runtime.executors import ExecutorUnavailable
    from ..store.migrate import SchemaError
    from ..store.notifications import WorkerIdInUse

    try:
        yield
    except (EmbeddedPostgresError, DatabaseUnavailable, SchemaError, asyncpg.PostgresError) as exc:
        raise Exit(EXIT_DATABASE, f"database error: {exc}") from exc
    except (ExecutorUnavailable, WorkerIdInUse, SecretsKeyError) as exc:
        raise Exit(EXIT_ERROR, str(exc)) from exc
