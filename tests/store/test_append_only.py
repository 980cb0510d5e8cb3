"""I3: the database itself refuses to change or remove events."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from jobledger.domain.events import EventMeta, JobQueued
from jobledger.ids import uuid7
from jobledger.store.eventstore import EventStore


@pytest.fixture
async def one_event(store: EventStore) -> None:
    await store.append(uuid7(), 0, [JobQueued()], EventMeta(actor="test"))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'JobCancelled'",
        "UPDATE events SET data = '{}'::jsonb, meta = '{}'::jsonb",
        "DELETE FROM events",
        "TRUNCATE events",
        "TRUNCATE events CASCADE",
    ],
)
async def test_events_cannot_be_changed(
    pool: asyncpg.Pool, one_event: None, statement: str
) -> None:
    before = await pool.fetch("SELECT * FROM events ORDER BY position")
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await pool.execute(statement)
    assert await pool.fetch("SELECT * FROM events ORDER BY position") == before
    assert len(before) == 1


# Issue 19: only an archive run removes events, whole streams listed by a checkpoint event
# written in its own transaction. The checkpoint is inserted by hand here, as the guard sees
# it; tests/replay/test_archive_run.py goes through `replay archive` itself.


async def two_streams(store: EventStore) -> tuple[uuid.UUID, uuid.UUID]:
    a, b = uuid7(), uuid7()
    for sid in (a, b):
        await store.append(sid, 0, [JobQueued(), JobQueued()], EventMeta(actor="test"))
    return a, b


async def checkpoint(conn: asyncpg.Connection, streams: list[uuid.UUID]) -> uuid.UUID:
    """Write an archive checkpoint listing `streams` and name it for the guard (both in the
    connection's transaction)."""
    event_id = uuid7()
    await conn.execute(
        "INSERT INTO events (event_id, stream_id, version, type, data, meta, stream_type) "
        "VALUES ($1, $2, 1, 'StreamsArchived', $3::jsonb, '{}'::jsonb, 'archive')",
        event_id, uuid7(), json.dumps({"streams": [str(s) for s in streams]}),
    )  # fmt: skip
    await conn.execute("SELECT set_config('jobledger.archive_checkpoint', $1, true)", str(event_id))
    return event_id


async def test_an_archive_run_removes_the_streams_its_checkpoint_lists(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    a, b = await two_streams(store)
    async with pool.acquire() as conn, conn.transaction():
        await checkpoint(conn, [a])
        assert await conn.execute("DELETE FROM events WHERE stream_id = $1", a) == "DELETE 2"
    left = await pool.fetch("SELECT stream_id, stream_type FROM events ORDER BY position")
    assert [r["stream_id"] for r in left if r["stream_type"] == "job"] == [b, b]


@pytest.mark.parametrize(
    "case",
    [
        "no_checkpoint",
        "unknown_checkpoint",
        "checkpoint_of_another_transaction",
        "other_streams_listed",
        "part_of_a_stream",
        "the_checkpoint_itself",
    ],
)
async def test_a_delete_outside_its_archive_run_is_refused(
    pool: asyncpg.Pool, store: EventStore, case: str
) -> None:
    a, b = await two_streams(store)
    if case == "checkpoint_of_another_transaction":
        async with pool.acquire() as conn, conn.transaction():
            earlier = await checkpoint(conn, [a])
    before = await pool.fetch("SELECT * FROM events ORDER BY position")
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            async with conn.transaction():
                delete = "DELETE FROM events WHERE stream_id = $1"
                args: tuple[object, ...] = (a,)
                match case:
                    case "unknown_checkpoint":
                        await conn.execute(
                            "SELECT set_config('jobledger.archive_checkpoint', $1, true)",
                            str(uuid7()),
                        )
                    case "checkpoint_of_another_transaction":
                        await conn.execute(
                            "SELECT set_config('jobledger.archive_checkpoint', $1, true)",
                            str(earlier),
                        )
                    case "other_streams_listed":
                        await checkpoint(conn, [b])
                    case "part_of_a_stream":
                        await checkpoint(conn, [a])
                        delete += " AND version = 2"
                    case "the_checkpoint_itself":
                        cp = await checkpoint(conn, [a])
                        delete = "DELETE FROM events WHERE stream_id = $1 OR event_id = $2"
                        args = (a, cp)
                await conn.execute(delete, *args)
    assert await pool.fetch("SELECT * FROM events ORDER BY position") == before


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET type = 'JobCancelled'", "TRUNCATE events", "TRUNCATE events CASCADE"],
)
async def test_update_and_truncate_are_refused_inside_an_archive_run_too(
    pool: asyncpg.Pool, store: EventStore, statement: str
) -> None:
    a, b = await two_streams(store)
    before = await pool.fetch("SELECT * FROM events ORDER BY position")
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            async with conn.transaction():
                await checkpoint(conn, [a, b])
                await conn.execute(statement)
    assert await pool.fetch("SELECT * FROM events ORDER BY position") == before
