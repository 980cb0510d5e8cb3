"""A mixed job history written through the real service: every state, retries, cancels,
several actors. The replay tests (rebuild, verify, export) compare what they read back."""

from __future__ import annotations

import asyncio
import contextlib
import random

from jobledger.domain.errors import DomainError
from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import (
    Command,
    ConfirmCancelled,
    Fail,
    Finish,
    RequestCancel,
    Start,
)
from jobledger.domain.specs import RetryPolicy
from jobledger.service import JobService
from tests.factories import spec

META = EventMeta(actor="test")

LIFECYCLES: list[list[Command]] = [
    [],
    [Start(worker_id="w1")],
    [Start(worker_id="w1"), Finish(exit_code=0)],
    [Start(worker_id="w2"), Finish(exit_code=2)],
    [Start(worker_id="w1"), Finish(exit_code=137, oom_killed=True)],
    [Start(worker_id="w1"), Fail(reason=FailureReason.TIMEOUT, exit_code=143)],
    [Start(worker_id="w1"), Fail(reason=FailureReason.START_ERROR, message="no such image")],
    [RequestCancel(reason="user")],
    [Start(worker_id="w1"), RequestCancel()],
    [Start(worker_id="w1"), RequestCancel(), ConfirmCancelled(exit_code=143)],
    [
        Start(worker_id="w1"),
        Finish(exit_code=1),
        Start(worker_id="w2"),
        Finish(exit_code=0),
    ],  # retried
]


async def write_mixed_history(service: JobService, jobs: int, *, seed: int = 7) -> None:
    """Submit `jobs` jobs (30 at a time, concurrently) and take each through one of the
    LIFECYCLES; projects p0/p1 and actors user0..2 alternate."""
    rng = random.Random(seed)

    async def one(n: int) -> None:
        retrying = n % 3 == 0
        s = spec(
            project=f"p{n % 2}",
            priority=rng.randint(-5, 5),
            labels={"n": str(n % 4)},
            retry=RetryPolicy(max_retries=1 if retrying else 0, backoff_seconds=0),
        )
        view, _ = await service.submit(s, EventMeta(actor=f"user{n % 3}", request_id=f"r{n}"))
        for cmd in LIFECYCLES[n % len(LIFECYCLES)]:
            # Some are refused, e.g. the second Start of a job that was not retried.
            with contextlib.suppress(DomainError):
                await service.execute(view.id, cmd, META)

    for chunk in range(0, jobs, 30):
        await asyncio.gather(*(one(n) for n in range(chunk, min(chunk + 30, jobs))))
