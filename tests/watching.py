"""Awaiting a job's state without sleeping: woken by the events channel."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Collection

import asyncpg
import pytest

from jobledger.projections import jobs as jobs_projection
from jobledger.projections.jobs import JobView
from jobledger.store.eventstore import EVENTS_CHANNEL


class JobWatcher:
    """Awaits job states through the events channel (the same NOTIFY the scheduler uses)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.changed = asyncio.Event()

    def notify(self, *_: object) -> None:
        self.changed.set()

    async def until(
        self, job_id: uuid.UUID, states: Collection[str], timeout: float = 30
    ) -> JobView:
        """The job's view once it is in one of `states`."""
        view = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self.changed.clear()  # before reading: a change after the read wakes us
                    view = await jobs_projection.get(self.pool, job_id)
                    if view is not None and view.state.value in states:
                        return view
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), 1.0)
        except TimeoutError:
            raise AssertionError(f"job {job_id} not in {states} after {timeout}s: {view}") from None


@pytest.fixture
async def watcher(pool: asyncpg.Pool, dsn: str) -> AsyncIterator[JobWatcher]:
    conn = await asyncpg.connect(dsn)
    w = JobWatcher(pool)
    await conn.add_listener(EVENTS_CHANNEL, w.notify)
    try:
        yield w
    finally:
        await conn.close()
