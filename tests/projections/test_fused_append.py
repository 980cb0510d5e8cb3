"""Issue 18: an append of job events is one statement (events, `jobs` rows, NOTIFY, and for a
submit the queue facts); a submit is that statement alone, with no BEGIN or COMMIT. The rows
it writes still equal the fold of the log (I2), times and positions included."""

from __future__ import annotations

import asyncio
import typing
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import msgspec
import pytest

from jobledger.domain.errors import ConcurrencyError
from jobledger.domain.events import EventMeta, FailureReason, JobRetryScheduled
from jobledger.domain.jobs import Fail, RequestCancel, Start, decide, fold
from jobledger.domain.specs import RetryPolicy
from jobledger.projections import jobs as jobs_projection
from jobledger.projections import queue
from jobledger.projections.jobs import AppendJobs, JobView, view_of
from jobledger.service import JobService
from jobledger.store.db import connect, create_pool
from jobledger.store.eventstore import (
    EVENTS_CHANNEL,
    AppendItem,
    Change,
    EventStore,
    Notification,
    PendingTime,
)
from tests.factories import spec

META = EventMeta(actor="test", correlation_id="req-1")


def test_every_time_column_of_a_job_is_one_the_statement_fills() -> None:
    hints = typing.get_type_hints(JobView)
    times = {name for name, t in hints.items() if datetime in (t, *typing.get_args(t))}
    assert times == set(jobs_projection.PENDING_TIMES)


def test_a_pending_time_keeps_its_event_and_offset_through_arithmetic() -> None:
    at = PendingTime(2) + timedelta(seconds=7.25)
    assert isinstance(at, PendingTime)
    assert (at.index, at.offset) == (2, timedelta(seconds=7.25))
    with pytest.raises(TypeError):
        _ = at - datetime(2026, 1, 1)


async def row_and_fold(service: JobService, job_id: uuid.UUID) -> tuple[JobView, JobView]:
    row = await jobs_projection.get(service.pool, job_id)
    job = fold(await service.store.read_stream(job_id))
    assert row is not None and job is not None
    return row, view_of(job)


async def test_a_submit_row_and_its_answer_are_the_fold_of_its_events(
    service: JobService,
) -> None:
    view, created = await service.submit(spec(), META)
    assert created
    row, folded = await row_and_fold(service, view.id)
    assert row == folded == view
    [event] = await service.store.read_stream(view.id)
    assert (row.created_at, row.updated_at, row.last_position) == (
        event.recorded_at,
        event.recorded_at,
        event.position,
    )


async def test_a_retry_time_computed_from_the_append_time_is_the_fold_s(
    service: JobService,
) -> None:
    retry = RetryPolicy(max_retries=2, backoff_seconds=7.123457)
    view, _ = await service.submit(spec(retry=retry), META)
    await service.execute(view.id, Start(worker_id="w1"), META)
    job = await service.execute(view.id, Fail(reason=FailureReason.EXIT_CODE, exit_code=3), META)
    row, folded = await row_and_fold(service, view.id)
    assert row == folded == view_of(job)
    last = (await service.store.read_stream(view.id))[-1]
    assert isinstance(last.event, JobRetryScheduled)
    assert row.scheduled_for == last.recorded_at + timedelta(seconds=last.event.delay_seconds)
    assert (row.updated_at, row.last_position) == (last.recorded_at, last.position)


async def test_two_events_of_one_append_each_give_their_own_time(service: JobService) -> None:
    views = [(await service.submit(spec(), META))[0] for _ in range(2)]
    # Cancelling a queued job appends JobCancelRequested and JobCancelled at once.
    done = await service.execute_many({v.id: RequestCancel() for v in views}, META)
    assert all(not isinstance(d, Exception) for d in done.values())
    for view in views:
        row, folded = await row_and_fold(service, view.id)
        assert row == folded
        _, asked, ended = await service.store.read_stream(view.id)
        assert asked.recorded_at < ended.recorded_at
        assert (row.cancel_requested_at, row.finished_at, row.updated_at) == (
            asked.recorded_at,
            ended.recorded_at,
            ended.recorded_at,
        )
        assert row.last_position == ended.position


async def test_a_concurrent_fused_append_is_a_conflict_and_writes_nothing(
    service: JobService, store: EventStore
) -> None:
    view, _ = await service.submit(spec(), META)
    prior = jobs_projection.job_of(view)
    before_row = await jobs_projection.get(service.pool, view.id)

    async def start(worker: str) -> object:
        [event] = decide(prior, Start(worker_id=worker))
        try:
            return await store.append_many(
                [AppendItem(view.id, 1, [event])], META, fused=AppendJobs({view.id: prior})
            )
        except ConcurrencyError as exc:
            return exc

    results = await asyncio.gather(*(start(f"w{n}") for n in range(4)))
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 3
    events = await store.read_stream(view.id)
    assert [e.version for e in events] == [1, 2]
    row, folded = await row_and_fold(service, view.id)
    assert row == folded and row.worker_id == events[-1].event.worker_id
    # A stale append now: refused, and neither the log nor the row moves.
    stale = await asyncio.gather(start("late"))
    assert isinstance(stale[0], ConcurrencyError)
    assert len(await store.read_stream(view.id)) == 2
    assert await jobs_projection.get(service.pool, view.id) == row != before_row


async def test_a_submit_announces_once_with_the_same_payload_as_before(
    service: JobService, dsn: str
) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()
    conn = await connect(dsn)
    await conn.add_listener(EVENTS_CHANNEL, lambda *args: got.put_nowait(args[-1]))
    try:
        view, _ = await service.submit(spec(), META)
        payload = await asyncio.wait_for(got.get(), 5)
        # Byte for byte what the append announced before it was fused: ids, never data.
        expected = msgspec.json.encode(Notification([Change(view.id, 1, "queued")])).decode()
        assert payload == expected == f'{{"changes":[["{view.id}",1,"queued"]]}}'
        await service.execute(view.id, Start(worker_id="w1"), META)
        assert await asyncio.wait_for(got.get(), 5) == (
            f'{{"changes":[["{view.id}",2,"running"]]}}'
        )
        await asyncio.sleep(0.2)
        assert got.empty()
    finally:
        await conn.close()


@pytest.fixture
async def logged(dsn: str) -> AsyncIterator[tuple[JobService, list[str]]]:
    """A service whose one connection logs every statement it sends."""
    queries: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        queries.append(query.query)

    async def setup(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(log)  # a set: once per connection

    pool = await create_pool(dsn, min_size=1, max_size=1, setup=setup)
    try:
        yield JobService(EventStore(pool)), queries
    finally:
        await pool.close()


async def test_a_submit_is_one_statement_without_a_transaction(
    logged: tuple[JobService, list[str]],
) -> None:
    service, queries = logged
    await service.submit(spec(), META)  # warm: the pool's first statements
    queries.clear()
    submitted = await service.submit_with_reason(spec(), META)
    assert submitted.waiting_reason is not None  # the facts came with the statement
    writes = [q for q in queries if "INSERT INTO" in q]
    assert len(writes) == 1
    assert "INSERT INTO events" in writes[0] and "INSERT INTO jobs" in writes[0]
    assert not [q for q in queries if q.strip().upper() in {"BEGIN", "BEGIN;", "COMMIT"}]
    # Nothing else: no separate read of the queue facts, no NOTIFY of its own.
    assert queries == writes, queries


async def test_the_statement_s_facts_give_the_same_reason_as_a_read_after(
    service: JobService,
) -> None:
    submitted = await service.submit_with_reason(spec(project="p1"), META)
    again = await queue.waiting_reasons(service.pool, [submitted.view])
    assert submitted.waiting_reason == again[submitted.view.id]
