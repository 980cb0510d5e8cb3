"""The listener: typed payloads per channel, unreadable ones logged and skipped, a connection
that comes back after PostgreSQL drops it, and the worker identity lock."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import msgspec
import pytest
import structlog

from jobledger.store.eventstore import Change, Notification
from jobledger.store.logs import LogBatchNotice
from jobledger.store.notifications import EVENTS, LOG_BATCHES, Listener, WorkerIdInUse

WAIT = 10.0  # seconds a delivery may take before the test fails


@contextlib.asynccontextmanager
async def running(listener: Listener) -> AsyncIterator[Listener]:
    """The listener connected (first connection made), cancelled at the end."""
    task = asyncio.create_task(listener.run())
    try:
        async with asyncio.timeout(WAIT):
            await listener.started()
        yield listener
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def queue_handler() -> tuple[asyncio.Queue[object], Callable[[object], None]]:
    got: asyncio.Queue[object] = asyncio.Queue()
    return got, got.put_nowait


async def notify(pool: asyncpg.Pool, channel: str, payload: str) -> None:
    await pool.execute("SELECT pg_notify($1, $2)", channel, payload)


async def test_payloads_arrive_typed_and_unreadable_ones_are_logged_and_skipped(
    dsn: str, pool: asyncpg.Pool
) -> None:
    batches, on_batch = queue_handler()
    changes, on_change = queue_handler()
    listener = Listener(dsn, lambda: None)
    listener.on(LOG_BATCHES, on_batch)
    listener.on(EVENTS, on_change)
    job = uuid.uuid4()
    with structlog.testing.capture_logs() as logs:
        async with running(listener):
            await notify(pool, LOG_BATCHES.name, "not json")
            await notify(pool, LOG_BATCHES.name, '{"job_id": "not-a-uuid", "last_seq": 1}')
            await notify(
                pool, LOG_BATCHES.name, msgspec.json.encode(LogBatchNotice(job, 7)).decode()
            )
            await notify(pool, EVENTS.name, f'{{"changes": [["{job}", 3, "queued"]]}}')
            # Notifications arrive in order: the good ones come after the bad were handled.
            assert await asyncio.wait_for(batches.get(), WAIT) == LogBatchNotice(job, 7)
            assert await asyncio.wait_for(changes.get(), WAIT) == Notification(
                changes=[Change(job, 3, "queued")]
            )
    assert batches.empty() and changes.empty()
    unreadable = [e for e in logs if e["event"] == "unreadable notification"]
    assert [(e["channel"], e["payload"]) for e in unreadable] == [
        (LOG_BATCHES.name, "not json"),
        (LOG_BATCHES.name, '{"job_id": "not-a-uuid", "last_seq": 1}'),
    ]
    assert all(e["log_level"] == "warning" for e in unreadable)


async def test_the_connection_comes_back_after_it_is_terminated_and_delivers_again(
    dsn: str, pool: asyncpg.Pool
) -> None:
    connects: asyncio.Queue[None] = asyncio.Queue()
    batches, on_batch = queue_handler()
    listener = Listener(dsn, lambda: connects.put_nowait(None), application_name="jl-test-listen")
    listener.on(LOG_BATCHES, on_batch)
    async with running(listener):
        await asyncio.wait_for(connects.get(), WAIT)
        assert listener.conn is not None
        old_pid = listener.conn.get_server_pid()
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        # The owner is told, so it can look for what it missed while deaf.
        await asyncio.wait_for(connects.get(), WAIT)
        assert listener.conn is not None and listener.conn.get_server_pid() != old_pid
        pids = await pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'jl-test-listen'"
        )
        assert [r["pid"] for r in pids] == [listener.conn.get_server_pid()]
        job = uuid.uuid4()
        await notify(pool, LOG_BATCHES.name, msgspec.json.encode(LogBatchNotice(job, 1)).decode())
        assert await asyncio.wait_for(batches.get(), WAIT) == LogBatchNotice(job, 1)


async def test_a_worker_id_is_held_by_one_live_listener_at_a_time(dsn: str) -> None:
    first = Listener(dsn, lambda: None, identity="w-shared")
    async with running(first):
        second = Listener(dsn, lambda: None, identity="w-shared")
        await asyncio.wait_for(second.run(), WAIT)  # gives up at once: no retrying
        with pytest.raises(WorkerIdInUse):
            await second.started()
        # Another id is free meanwhile.
        async with running(Listener(dsn, lambda: None, identity="w-other")):
            pass
    # The first one's connection is gone: its lock went with it.
    async with running(Listener(dsn, lambda: None, identity="w-shared")):
        pass
