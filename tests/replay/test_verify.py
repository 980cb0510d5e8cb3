"""`replay verify`: a clean log passes; edits behind the append-only guard, removed events,
undecodable events and projection rows that disagree with the fold are each reported."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from jobledger.domain.events import EventMeta, JobCancelRequested, JobQueued, JobSubmitted
from jobledger.replay.verify import Problem, Verifier
from jobledger.service import JobService
from jobledger.store.chain import canonical, link
from jobledger.store.eventstore import EventStore
from tests.factories import spec
from tests.histories import write_mixed_history


async def verify(pool: asyncpg.Pool) -> tuple[list[Problem], Verifier]:
    verifier = Verifier(pool, batch=40)
    return [p async for p in verifier.problems()], verifier


async def behind_the_guard(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """Run a statement on `events` as its owner with the append-only trigger disabled."""
    async with pool.acquire() as conn, conn.transaction():
        for trigger in ("events_no_update", "events_delete_archived"):
            await conn.execute(f"ALTER TABLE events DISABLE TRIGGER {trigger}")
        await conn.execute(sql, *args)
        for trigger in ("events_no_update", "events_delete_archived"):
            await conn.execute(f"ALTER TABLE events ENABLE TRIGGER {trigger}")


async def a_stream(pool: asyncpg.Pool, events: int) -> uuid.UUID:
    """The id of some stream with exactly that many events."""
    sid: uuid.UUID = await pool.fetchval(
        "SELECT stream_id FROM events GROUP BY stream_id HAVING max(version) = $1 LIMIT 1", events
    )
    assert sid is not None
    return sid


@pytest.fixture
async def history(service: JobService) -> None:
    await write_mixed_history(service, 120)


async def test_a_clean_log_has_no_problems(pool: asyncpg.Pool, history: None) -> None:
    problems, verifier = await verify(pool)
    assert problems == []
    events = await pool.fetchval("SELECT count(*) FROM events")
    assert (verifier.report.streams, verifier.report.events) == (120, events)


async def test_the_database_chains_hashes_as_the_verifier_computes_them(
    store: EventStore,
) -> None:
    sid = uuid.uuid4()
    meta = EventMeta(actor="a", request_id="r")
    await store.append(sid, 0, [JobSubmitted(spec=spec()), JobQueued(attempt=1)], meta)
    await store.append(sid, 2, [JobCancelRequested(reason='é ✓ "quoted"')], meta)
    rows = await store.pool.fetch("SELECT * FROM events WHERE stream_id = $1 ORDER BY version", sid)
    previous = None
    for row in rows:
        fields = {k: row[k] for k in ("event_id", "stream_id", "version", "type", "schema_version")}
        expected = link(
            previous,
            canonical(**fields, recorded_at=row["recorded_at"], data=row["data"], meta=row["meta"]),
        )
        assert row["hash"] == expected
        previous = row["hash"]
    assert len({r["hash"] for r in rows}) == 3


async def test_an_event_edited_in_place_breaks_its_link(pool: asyncpg.Pool, history: None) -> None:
    sid = await a_stream(pool, 4)
    await behind_the_guard(
        pool,
        "UPDATE events SET data = jsonb_set(data, '{exit_code}', '77') "
        "WHERE stream_id = $1 AND version = 4",
        sid,
    )
    problems, _ = await verify(pool)
    chain = [p for p in problems if p.kind == "broken_chain"]
    assert [(p.stream_id, p.version) for p in chain] == [(sid, 4)]


async def test_an_edit_that_rewrites_its_own_hash_breaks_the_next_link(
    pool: asyncpg.Pool, history: None
) -> None:
    sid = await a_stream(pool, 4)
    # The forger recomputes the edited event's hash, but not its successor's.
    await behind_the_guard(
        pool,
        "UPDATE events SET meta = jsonb_set(meta, '{actor}', '\"someone-else\"') "
        "WHERE stream_id = $1 AND version = 2",
        sid,
    )
    await behind_the_guard(
        pool,
        "UPDATE events e SET hash = sha256(p.hash || events_canonical(e)) FROM events p "
        "WHERE e.stream_id = $1 AND e.version = 2 AND p.stream_id = $1 AND p.version = 1",
        sid,
    )
    problems, _ = await verify(pool)
    assert [(p.kind, p.stream_id, p.version) for p in problems] == [("broken_chain", sid, 3)]


async def test_a_removed_last_event_is_reported(pool: asyncpg.Pool, history: None) -> None:
    sid = await a_stream(pool, 4)
    await behind_the_guard(pool, "DELETE FROM events WHERE stream_id = $1 AND version = 4", sid)
    problems, _ = await verify(pool)
    assert [(p.kind, p.stream_id) for p in problems] == [("events_missing", sid)]
    assert "version 4" in problems[0].detail


async def test_a_removed_middle_event_is_a_version_gap(pool: asyncpg.Pool, history: None) -> None:
    sid = await a_stream(pool, 4)
    await behind_the_guard(pool, "DELETE FROM events WHERE stream_id = $1 AND version = 2", sid)
    problems, _ = await verify(pool)
    assert [(p.kind, p.stream_id, p.version) for p in problems] == [("version_gap", sid, 3)]


async def test_an_undecodable_event_is_reported(pool: asyncpg.Pool, history: None) -> None:
    sid = await a_stream(pool, 3)
    await behind_the_guard(
        pool, "UPDATE events SET type = 'JobExploded' WHERE stream_id = $1 AND version = 3", sid
    )
    problems, _ = await verify(pool)
    kinds = {(p.kind, p.version) for p in problems if p.stream_id == sid}
    assert kinds == {("broken_chain", 3), ("undecodable", 3)}
    assert all(p.stream_id == sid for p in problems)


async def test_projection_rows_that_disagree_with_the_log_are_reported(
    pool: asyncpg.Pool, history: None
) -> None:
    # Not a queued one (a retried job has three events too): its state must change below.
    changed = await pool.fetchval(
        "SELECT id FROM jobs WHERE version = 3 AND state <> 'queued' ORDER BY id LIMIT 1"
    )
    removed = await a_stream(pool, 2)
    orphan = uuid.uuid4()
    await pool.execute("UPDATE jobs SET state = 'queued', exit_code = 99 WHERE id = $1", changed)
    await pool.execute("DELETE FROM jobs WHERE id = $1", removed)
    await pool.execute(
        "INSERT INTO jobs SELECT $1, project, state, spec, priority, labels, tags, "
        "concurrency_key, concurrency_limit, NULL, submitted_by, attempt, requeue_reason, "
        "scheduled_for, worker_id, exit_code, failure_reason, message, usage, created_at, "
        "updated_at, started_at, finished_at, cancel_requested_at, cancel_requested_by, "
        "version, last_position FROM jobs WHERE id = $2",
        orphan, changed,
    )  # fmt: skip
    problems, verifier = await verify(pool)
    found = {(p.kind, p.stream_id) for p in problems}
    assert found == {
        ("projection_differs", changed),
        ("projection_missing", removed),
        ("orphan_projection", orphan),
    }
    differs = next(p for p in problems if p.kind == "projection_differs")
    assert differs.detail == "jobs row differs in: state, exit_code"
    assert verifier.report.problems == 3
