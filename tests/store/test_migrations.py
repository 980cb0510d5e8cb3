"""Versioned migrations, in the style of procrastinate's migration tests: a database made
from the version-1 baseline and upgraded through every migration has exactly the schema of
one made fresh from schema.sql, keeps its rows, and an up-to-date start takes no lock that
a long reader could hold up."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg

from jobledger.store.embedded import EmbeddedPostgres
from jobledger.store.migrate import latest_version, migrate, migrations

_numbers = itertools.count()
# Guards against a hang, not a measurement: every wait here is instant unless a lock blocks.
DEADLINE = 30

# Two job streams (the second with two events, so the hash chain links them), a job row, a
# project with the columns added over time, an account, a token and a log batch.
FILL = """
INSERT INTO events (event_id, stream_id, version, type, data, meta) VALUES
    ('00000000-0000-7000-8000-000000000001', '00000000-0000-7000-8000-0000000000a1', 1,
     'JobSubmitted', '{"image": "busybox"}', '{"actor": "alice", "correlation_id": "c-1"}'),
    ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-0000000000a2', 1,
     'JobSubmitted', '{"image": "alpine"}', '{"actor": "bob"}'),
    ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-0000000000a2', 2,
     'JobCancelled', '{}', '{"actor": "bob"}');
INSERT INTO jobs (id, project, state, spec, priority, labels, tags, submitted_by, attempt,
                  created_at, updated_at, version, last_position)
    VALUES ('00000000-0000-7000-8000-0000000000a1', 'default', 'queued', '{"image": "busybox"}',
            0, '{"team": "x"}', '{gpu}', 'alice', 1, now(), now(), 1, 1);
INSERT INTO projects (name, max_running_jobs, log_limit_bytes, submit_rate, submit_burst)
    VALUES ('default', 3, 1024, 2.5, 10);
INSERT INTO service_accounts (id, project, name, role, created_by)
    VALUES ('00000000-0000-7000-8000-0000000000b1', 'default', 'ci', 'operator', 'admin');
INSERT INTO api_tokens (id, service_account_id, hash, created_by)
    VALUES ('00000000-0000-7000-8000-0000000000c1', '00000000-0000-7000-8000-0000000000b1',
            '\\x00ff', 'admin');
INSERT INTO job_logs (job_id, first_seq, last_seq, attempt, lines, bytes)
    VALUES ('00000000-0000-7000-8000-0000000000a1', 1, 2, 1, '[]', 0);
"""
FILLED_TABLES = ("events", "jobs", "projects", "service_accounts", "api_tokens", "job_logs")


@contextlib.asynccontextmanager
async def empty_database(pg_cluster: EmbeddedPostgres) -> AsyncIterator[str]:
    """A database with nothing in it (not cloned from the migrated template); dropped after."""
    name = f"migrations_{os.getpid()}_{next(_numbers)}"
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield pg_cluster.dsn(name)
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def schema_dump(pg_cluster: EmbeddedPostgres, dsn: str) -> str:
    """`pg_dump --schema-only`, without the lines that differ between any two dumps."""
    # initdb may be a link on PATH; pg_dump is next to where it points (the same version).
    pg_dump = (pg_cluster.bin_dir / "initdb").resolve().with_name("pg_dump")
    proc = await asyncio.create_subprocess_exec(
        str(pg_dump),
        "--schema-only",
        "--dbname",
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    # The server and pg_dump versions, and (since 15.14) a random key to \restrict psql with.
    varying = ("-- Dumped from", "-- Dumped by", "\\restrict", "\\unrestrict")
    return "\n".join(ln for ln in out.decode().splitlines() if not ln.startswith(varying))


async def rows(conn: asyncpg.Connection, table: str) -> list[dict[str, object]]:
    return [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]


async def fresh_schema(pg_cluster: EmbeddedPostgres) -> str:
    """The dump of a database created by migrate from schema.sql."""
    async with empty_database(pg_cluster) as dsn, connected(dsn) as conn:
        done = await migrate(conn)
        assert done.applied == ("schema.sql",) and done.to_version == latest_version()
        return await schema_dump(pg_cluster, dsn)


async def test_baseline_upgraded_through_every_migration_equals_schema_sql(
    pg_cluster: EmbeddedPostgres,
) -> None:
    async with empty_database(pg_cluster) as dsn, connected(dsn) as conn:
        # A database as every release before versioning left it: the baseline, no version.
        await conn.execute(migrations()[0].path.read_text())
        await conn.execute(FILL)
        before = {table: await rows(conn, table) for table in FILLED_TABLES}

        done = await migrate(conn)

        assert (done.from_version, done.to_version) == (0, latest_version())
        assert done.applied == tuple(m.name for m in migrations())
        assert await schema_dump(pg_cluster, dsn) == await fresh_schema(pg_cluster)
        after = {table: await rows(conn, table) for table in FILLED_TABLES}
        assert [e.pop("stream_type") for e in after["events"]] == ["job"] * 3 + [
            "project", "service_account", "token",
        ]  # fmt: skip
        # The administration rows got their streams (tests/store/test_administration.py).
        after["events"] = after["events"][:3]
        for table in ("projects", "service_accounts"):
            assert all(r.pop("stream_id") is not None for r in after[table])
        assert after["projects"][0].pop("created_by") == "migration"  # made by a limits update
        before["projects"][0].pop("created_by")
        before["projects"][0]["retention_days"] = None  # 0017: the server's default
        for job in before["jobs"]:  # 0004 renamed the column, the values stay
            job["requeue_reason"] = job.pop("queue_reason")
            # 0006 took the job's correlation and its attempt's cause from its events.
            job["correlation_id"] = "c-1"
            job["cause_event_id"] = uuid.UUID("00000000-0000-7000-8000-000000000001")
            job["secrets"] = "{}"  # 0009: no start resolved a secret before they existed
            # 0010: a job from before definitions was made from none.
            job |= {"definition": None, "definition_version": None, "source": None}
            # 0015: a job from before job tokens and reruns has no parent and reruns none.
            job |= {"parent_job": None, "rerun_of": None}
        for token in before["api_tokens"]:  # 0015: tokens from before belong to no job
            token["job_id"] = None
            # 0013: a job from before workflows is no step's child.
            job |= {"workflow_run": None, "step": None}
            # 0014: a job from before inputs and outputs had neither.
            job |= {"inputs": "{}", "output": None, "output_sha256": None}
        assert after == before
        recorded = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        assert [tuple(r) for r in recorded] == [(m.version, m.name) for m in migrations()]
        # The hash chain still links an appended event to the upgraded stream's last one.
        await conn.execute(
            "INSERT INTO events (event_id, stream_id, version, type, data, meta) VALUES"
            " (gen_random_uuid(), '00000000-0000-7000-8000-0000000000a2', 3, 'JobQueued',"
            " '{}', '{}')"
        )


async def test_unversioned_database_is_stamped_and_a_second_migrate_does_nothing(
    pg_cluster: EmbeddedPostgres,
) -> None:
    async with empty_database(pg_cluster) as dsn, connected(dsn) as conn:
        await conn.execute(migrations()[0].path.read_text())
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None

        first = await migrate(conn)
        stamped = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
        second = await migrate(conn)

        assert first.applied[0] == "0001_baseline" and first.to_version == latest_version()
        assert (second.from_version, second.to_version) == (latest_version(), latest_version())
        assert second.applied == () and "up to date" in str(second)
        assert await conn.fetch("SELECT * FROM schema_migrations ORDER BY version") == stamped
        assert [r["version"] for r in stamped] == list(range(1, latest_version() + 1))


async def test_a_database_at_version_1_gets_only_the_later_migrations(
    pg_cluster: EmbeddedPostgres,
) -> None:
    async with empty_database(pg_cluster) as dsn, connected(dsn) as conn:
        await conn.execute(migrations()[0].path.read_text())
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT clock_timestamp());"
            "INSERT INTO schema_migrations (version, name) VALUES (1, '0001_baseline')"
        )

        done = await migrate(conn)

        assert done.from_version == 1
        assert done.applied == tuple(m.name for m in migrations()[1:])
        assert await schema_dump(pg_cluster, dsn) == await fresh_schema(pg_cluster)


async def test_start_on_an_up_to_date_database_neither_blocks_nor_is_blocked_by_a_reader(
    dsn: str,
) -> None:
    async with connected(dsn) as reader, connected(dsn) as starter, connected(dsn) as other:
        # What `replay verify`/`export` do: one snapshot held open over a long read.
        snapshot = reader.transaction(isolation="repeatable_read")
        await snapshot.start()
        assert await reader.fetchval("SELECT count(*) FROM jobs") == 0
        try:
            async with asyncio.timeout(DEADLINE):
                done, jobs_seen = await asyncio.gather(
                    migrate(starter), other.fetchval("SELECT count(*) FROM jobs")
                )
                assert await reader.fetchval("SELECT count(*) FROM jobs") == 0
        finally:
            await snapshot.rollback()
        assert done.applied == () and done.to_version == latest_version()
        assert jobs_seen == 0


async def test_concurrent_migrates_of_an_empty_database_make_one_schema(
    pg_cluster: EmbeddedPostgres,
) -> None:
    async with (
        empty_database(pg_cluster) as dsn,
        connected(dsn) as first,
        connected(dsn) as second,
    ):
        async with asyncio.timeout(DEADLINE):
            results = await asyncio.gather(migrate(first), migrate(second))

        assert sorted(r.applied for r in results) == [(), ("schema.sql",)]
        assert all(r.to_version == latest_version() for r in results)
        assert await first.fetchval("SELECT count(*) FROM schema_migrations") == 1
        assert await schema_dump(pg_cluster, dsn) == await fresh_schema(pg_cluster)
