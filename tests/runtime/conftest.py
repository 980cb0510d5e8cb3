"""Schedulers in the test process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from jobledger.runtime.executor import Executor
from jobledger.runtime.process import ProcessExecutor
from jobledger.runtime.scheduler import Scheduler, WorkerConfig
from jobledger.service import JobService
from jobledger.store.secretbox import SecretBox

StartScheduler = Callable[..., Awaitable[Scheduler]]


@pytest.fixture
async def start_scheduler(service: JobService, dsn: str) -> AsyncIterator[StartScheduler]:
    """Start schedulers in this process; all are stopped at the end of the test."""
    running: list[tuple[asyncio.Event, asyncio.Task[None], Executor]] = []

    async def start(
        executor: Executor | None = None, secrets_box: SecretBox | None = None, **config: object
    ) -> Scheduler:
        executor = executor or ProcessExecutor()
        settings: dict[str, object] = {
            "worker_id": f"w-{uuid.uuid4().hex[:8]}",
            "poll_interval": 5.0,
            "heartbeat_interval": 0.5,
            "lease_seconds": 10.0,
        }
        settings.update(config)
        scheduler = Scheduler(service, executor, WorkerConfig(**settings), dsn, secrets_box)  # type: ignore[arg-type]
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop))
        running.append((stop, task, executor))
        ready = asyncio.create_task(scheduler.ready.wait())
        await asyncio.wait([ready, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raise what stopped it
        assert scheduler.ready.is_set(), "scheduler did not become ready"
        return scheduler

    yield start
    for stop, _, _ in running:
        stop.set()
    await asyncio.gather(*(t for _, t, _ in running), return_exceptions=True)
    for _, _, executor in running:
        await executor.close()
