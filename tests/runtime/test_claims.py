"""Claims: what is taken, in which order, and what the claim hands over."""

from __future__ import annotations

from datetime import timedelta

from server.domain.events import EventMeta
from server.domain.jobs import JobState
from server.projections import queue
from server.runtime.claims import claim
from server.service import JobService
from tests.factories import spec

META = EventMeta(actor="test")


async def test_jobs_waiting_for_a_later_time_are_passed_over_whatever_their_priority(
    service: JobService,
) -> None:
    now = await service.pool.fetchval("SELECT clock_timestamp()")
    later = now + timedelta(hours=1)
    for _ in range(30):  # more than a page of candidates, all better placed
        await service.submit(spec(priority=9, scheduled_for=later), META)
    due, _ = await service.submit(spec(priority=1, scheduled_for=now - timedelta(seconds=1)), META)
    plain, _ = await service.submit(spec(priority=0), META)
    claimed = await claim(service, "w1", [], 5)
    assert [c.job.id for c in claimed] == [due.id, plain.id]
    assert all(c.job.state is JobState.RUNNING and c.job.worker_id == "w1" for c in claimed)
    assert await claim(service, "w1", [], 5) == []


async def test_a_claim_hands_over_the_project_log_limit(service: JobService) -> None:
    await queue.set_project_limit(service.pool, "logs", None, log_limit_bytes=1234)
    limited, _ = await service.submit(spec(project="logs"), META)
    default, _ = await service.submit(spec(project="other"), META)
    claimed = {c.job.id: c.log_limit_bytes for c in await claim(service, "w1", [], 5)}
    assert claimed == {limited.id: 1234, default.id: None}
