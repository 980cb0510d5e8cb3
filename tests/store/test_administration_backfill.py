"""A database from before administration had streams: its projects, service accounts and
tokens get their events on upgrade (actor `migration`, the rows' own times and creators),
so `replay verify` is clean, the tokens still work, and later changes chain on."""

from __future__ import annotations

import json
import re
import uuid

import asyncpg

from jobledger.administration import AccessService
from jobledger.domain.access import SERVICE_ACCOUNT, project_stream
from jobledger.domain.events import EventMeta
from jobledger.replay.verify import Verifier
from jobledger.store.access import AccessStore, Role, token_hash
from jobledger.store.embedded import EmbeddedPostgres
from jobledger.store.migrate import QUERIES, migrate, migrations
from tests.conftest import pool_on
from tests.store.test_migrations import connected, empty_database

#: The last version before administration's streams (by name: numbers change in merges).
BEFORE = next(m.version for m in migrations() if m.name.endswith("_administration_streams")) - 1
ACCOUNT = "00000000-0000-7000-8000-0000000000b1"
LIVE, REVOKED, ADMIN = (f"00000000-0000-7000-8000-0000000000c{n}" for n in (1, 2, 3))
# Rows as the code before this change wrote them (store/access.sql of then): a project
# created by an admin, one created by the limits route (no creator, a `real` rate), an
# account with a live token expiring later, a revoked one, and a server admin token.
OLD_WAY = f"""
INSERT INTO projects (name, max_running_jobs, log_limit_bytes, created_by)
    VALUES ('etl', 4, 4096, 'admin');
INSERT INTO projects (name, max_running_jobs, log_limit_bytes, submit_rate, submit_burst)
    VALUES ('adhoc', 10, NULL, 0.1, 3);
INSERT INTO service_accounts (id, project, name, role, created_at, created_by)
    VALUES ('{ACCOUNT}', 'etl', 'ci', 'operator', '2024-01-02T03:04:05.678901Z', 'admin');
INSERT INTO api_tokens (id, service_account_id, hash, description, created_by, expires_at)
    VALUES ('{LIVE}', '{ACCOUNT}', $1, 'deploys', 'etl/boss', now() + interval '1 day');
INSERT INTO api_tokens (id, service_account_id, hash, created_by, revoked_at)
    VALUES ('{REVOKED}', '{ACCOUNT}', $2, 'admin', now());
INSERT INTO api_tokens (id, service_account_id, hash, description, created_by)
    VALUES ('{ADMIN}', NULL, $3, 'first admin token', 'bootstrap');
"""


async def at_version(conn: asyncpg.Connection, version: int) -> None:
    """The schema as migrations 1..version left it."""
    await conn.execute(migrations()[0].path.read_text())
    await conn.execute(QUERIES["create_schema_migrations"])
    for m in migrations()[:version]:
        if m.version > 1:
            await conn.execute(m.path.read_text())
        await conn.execute(QUERIES["record_migration"], m.version, m.name)


async def test_rows_from_before_get_their_events_and_verify_is_clean(
    pg_cluster: EmbeddedPostgres,
) -> None:
    secrets = ["jl_live", "jl_revoked", "jl_admin"]
    async with empty_database(pg_cluster) as dsn:
        async with connected(dsn) as conn:
            await at_version(conn, BEFORE)
            # The old schema had the default project from 0005; the rows of the old code.
            hashes = {f"${n}": f"'\\x{token_hash(s).hex()}'" for n, s in enumerate(secrets, 1)}
            await conn.execute(re.sub(r"\$\d", lambda m: hashes[m.group()], OLD_WAY))
            before = {
                t: {tuple(r) for r in await conn.fetch(f"SELECT * FROM {t}")}
                for t in ("service_accounts", "api_tokens")
            }
            done = await migrate(conn)
            assert done.from_version == BEFORE
            again = await migrate(conn)  # the backfill is done once
            assert again.applied == ()

        async with pool_on(dsn) as pool:
            assert [p async for p in Verifier(pool).problems()] == []
            rows = await pool.fetch(
                "SELECT stream_type, type, data, meta FROM events ORDER BY position"
            )
            assert {json.loads(r["meta"])["actor"] for r in rows} == {"migration"}
            assert sorted((r["stream_type"], r["type"]) for r in rows) == sorted(
                [("project", "ProjectCreated")] * 3  # default, etl, adhoc
                + [("service_account", "ServiceAccountCreated")]
                + [("token", "TokenIssued")] * 3
                + [("token", "TokenRevoked")]
            )
            # Times and creators are the rows' own: the tables did not change but for
            # the stream ids (and a project that had no creator now names the migration).
            for table, old in before.items():
                now = {tuple(r)[: len(next(iter(old)))] for r in await pool.fetch(
                    f"SELECT * FROM {table}"
                )}  # fmt: skip
                assert now == old, table
            etl = await pool.fetchrow("SELECT * FROM projects WHERE name = 'etl'")
            assert (etl["stream_id"], etl["created_by"]) == (project_stream("etl"), "admin")
            assert (
                await pool.fetchval("SELECT created_by FROM projects WHERE name = 'adhoc'")
                == "migration"
            )
            assert await pool.fetchval(
                "SELECT stream_id FROM service_accounts"
            ) == SERVICE_ACCOUNT.stream_id("etl", "ci")

            # The tokens work as before, the revoked one does not.
            live, revoked, admin = await AccessStore(pool).authenticate_many(secrets)
            assert live is not None and (live.project, live.role) == ("etl", Role.OPERATOR)
            assert revoked is None
            assert admin is not None and admin.is_server_admin

            # Changes after the upgrade continue the backfilled streams; the chain holds.
            access = AccessService(pool)
            await access.set_limits("etl", 9, meta=EventMeta(actor="admin"))
            assert await access.revoke_token(uuid.UUID(LIVE), "etl", meta=EventMeta(actor="admin"))
            assert (
                await pool.fetchval(
                    "SELECT max(version) FROM events WHERE stream_id = $1", project_stream("etl")
                )
                == 2
            )
            assert [p async for p in Verifier(pool).problems()] == []
            assert (await AccessStore(pool).authenticate_many(["jl_live"])) == [None]
