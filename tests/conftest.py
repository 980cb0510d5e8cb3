"""The test rig: one throwaway PostgreSQL cluster per session (initdb/pg_ctl from the
machine's binaries), a migrated template database, and a fresh clone of it per test."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jobledger.api.app import create_app
from jobledger.service import JobService
from jobledger.store.db import create_pool
from jobledger.store.embedded import EmbeddedPostgres
from jobledger.store.eventstore import EventStore
from jobledger.store.migrate import migrate
from jobledger.store.secretbox import SecretBox
from tests.docker_rig import docker_engine, test_image  # noqa: F401
from tests.watching import watcher  # noqa: F401

TEMPLATE = "jobledger_template"
#: The server-wide admin token of test apps (JOBLEDGER_ADMIN_TOKEN of test servers).
ADMIN_TOKEN = "jl_test_admin_token_for_the_suite_only"
#: The secrets key of test apps and workers (its id: `SECRETS_BOX.key_id`).
SECRETS_BOX = SecretBox(bytes(range(32)))
_db_numbers = itertools.count()

# Process attempt records of the suite's workers (and of their `jobledger worker` children,
# which inherit it) go to a directory of the run's own, not the machine's state directory.
os.environ.setdefault("JOBLEDGER_STATE_DIR", tempfile.mkdtemp(prefix="jobledger-state-"))

# Durability buys nothing in a throwaway cluster and costs seconds per test run.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres]:
    root = Path(tempfile.mkdtemp(prefix="jobledger-test-"))
    root.chmod(0o755)  # as root, the cluster runs as `postgres` and must reach its directory
    pg = EmbeddedPostgres(root / "pg", settings=FAST_SETTINGS)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_dsn(pg_cluster: EmbeddedPostgres) -> str:
    conn = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg_cluster.dsn(TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return pg_cluster.dsn(TEMPLATE)


@contextlib.asynccontextmanager
async def fresh_database(pg_cluster: EmbeddedPostgres) -> AsyncIterator[str]:
    """A database of its own, cloned from the migrated template; dropped afterwards."""
    name = f"test_{os.getpid()}_{next(_db_numbers)}"
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
        yield pg_cluster.dsn(name)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def dsn(pg_cluster: EmbeddedPostgres, template_dsn: str) -> AsyncIterator[str]:
    """A database of its own for one test."""
    async with fresh_database(pg_cluster) as url:
        yield url


@pytest.fixture
async def other_dsn(pg_cluster: EmbeddedPostgres, template_dsn: str) -> AsyncIterator[str]:
    """A second, separate database (e.g. to import an export into)."""
    async with fresh_database(pg_cluster) as url:
        yield url


@contextlib.asynccontextmanager
async def pool_on(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(dsn, min_size=1, max_size=20)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with pool_on(dsn) as p:
        yield p


@pytest.fixture
async def other_pool(other_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with pool_on(other_dsn) as p:
        yield p


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool)


@pytest.fixture
def service(store: EventStore) -> JobService:
    return JobService(store)


@pytest.fixture
async def client(
    service: JobService, dsn: str
) -> AsyncIterator[TestClient[web.Request, web.Application]]:  # type: ignore[type-arg]
    app = create_app(service, dsn, admin_token=ADMIN_TOKEN, secrets_box=SECRETS_BOX)
    async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        yield c
