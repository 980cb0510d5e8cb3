"""The fault rig: a PostgreSQL cluster of a test's own, which the test may stop, restart and
cut connections of, without touching the cluster the rest of the suite shares."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from jobledger.service import JobService
from jobledger.store.db import create_pool
from jobledger.store.embedded import EmbeddedPostgres
from jobledger.store.eventstore import EventStore
from jobledger.store.migrate import migrate
from tests.conftest import FAST_SETTINGS

DATABASE = "jobledger"


class OwnPostgres:
    """A cluster and one migrated database on it; `dsn` stays valid across restarts (a Unix
    socket in the data directory)."""

    def __init__(self, root: Path) -> None:
        self.pg = EmbeddedPostgres(root / "pg", settings=FAST_SETTINGS)
        self.dsn = self.pg.dsn(DATABASE)

    async def start(self) -> None:
        await asyncio.to_thread(self.pg.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.pg.stop)

    async def restart(self, down_seconds: float = 0.0) -> None:
        """`pg_ctl stop -m fast`, wait, start: every connection is cut, nothing is lost."""
        await self.stop()
        if down_seconds:
            await asyncio.sleep(down_seconds)
        await self.start()

    async def terminate(self, application_name: str | None = None) -> int:
        """`pg_terminate_backend` of the database's client connections (those of one
        application name, or all but this one); how many were cut."""
        conn = await asyncpg.connect(self.pg.dsn("postgres"))
        try:
            killed: int = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()"
                " AND ($2::text IS NULL OR application_name = $2)",
                DATABASE,
                application_name,
            )
        finally:
            await conn.close()
        return killed


@pytest.fixture
async def own_pg() -> AsyncIterator[OwnPostgres]:
    """A PostgreSQL cluster of this test's own (a few seconds to make): for tests that stop,
    restart or cut the database under the code."""
    root = Path(tempfile.mkdtemp(prefix="jobledger-fault-"))
    root.chmod(0o755)  # as root, the cluster runs as `postgres` and must reach its directory
    own = OwnPostgres(root)
    await own.start()
    try:
        admin = await asyncpg.connect(own.pg.dsn("postgres"))
        try:
            await admin.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(own.dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield own
    finally:
        await own.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def fault_service(own_pg: OwnPostgres) -> AsyncIterator[JobService]:
    """A job service on the test's own cluster."""
    pool = await create_pool(own_pg.dsn, min_size=1, max_size=10)
    try:
        yield JobService(EventStore(pool))
    finally:
        await pool.close()
