"""The scheduler with real processes: dispatch, order, quotas, tags, time, retries, cancel,
lost notifications and connections, leases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import pytest

from jobledger.administration import AccessService
from jobledger.domain.errors import ConcurrencyError
from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import JobState, RequestCancel, Start
from jobledger.domain.specs import RetryPolicy
from jobledger.projections import queue
from jobledger.projections.jobs import JobView
from jobledger.runtime import claims
from jobledger.runtime import scheduler as scheduler_module
from jobledger.runtime.executor import JobIO, Outcome, RunRequest
from jobledger.runtime.noop import NoopExecutor
from jobledger.service import JobService
from jobledger.store.eventstore import Notification
from jobledger.store.notifications import WorkerIdInUse
from tests.factories import spec
from tests.runtime.conftest import StartScheduler
from tests.watching import JobWatcher

META = EventMeta(actor="test")
DONE = {"succeeded", "failed", "cancelled"}


async def submit(service: JobService, *command: str, **kw: object) -> uuid.UUID:
    view, _ = await service.submit(spec(command=list(command) or ["true"], **kw), META)
    return view.id


async def event_types(service: JobService, job_id: uuid.UUID) -> list[str]:
    return [type(r.event).__name__ for r in await service.store.read_stream(job_id)]


def max_overlap(views: list[JobView]) -> int:
    """Most jobs that were running at one instant."""
    edges = sorted(
        [(v.started_at, 1) for v in views] + [(v.finished_at, -1) for v in views],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


async def test_jobs_run_and_their_outcome_is_recorded(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    scheduler = await start_scheduler()
    ok = await submit(service, "sh", "-c", "exit 0")
    bad = await submit(service, "sh", "-c", "exit 3")
    missing = await submit(service, "/no/such/program")
    assert (await watcher.until(ok, DONE)).state is JobState.SUCCEEDED
    failed = await watcher.until(bad, DONE)
    assert failed.state is JobState.FAILED and failed.exit_code == 3
    assert failed.failure_reason is FailureReason.EXIT_CODE
    assert failed.worker_id == scheduler.config.worker_id and failed.usage is not None
    start_error = await watcher.until(missing, DONE)
    assert start_error.failure_reason is FailureReason.START_ERROR and start_error.message
    assert await event_types(service, ok) == [
        "JobSubmitted",
        "JobStarted",
        "JobSucceeded",
    ]


async def test_a_lost_notification_only_delays_until_the_next_poll(
    service: JobService,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Deaf before it starts: its listener hands every notification to a handler that drops it.
    monkeypatch.setattr(scheduler_module.Scheduler, "_on_notification", lambda self, note: None)
    await start_scheduler(poll_interval=0.5)
    job = await submit(service)
    assert (await watcher.until(job, DONE, timeout=10)).state is JobState.SUCCEEDED


async def test_a_lost_cancel_notification_only_delays_the_cancel(
    service: JobService,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # I7 for cancels: the scheduler hears new work but never a cancel request; its periodic
    # sweep of the jobs it holds finds the request and stops the job.
    hear = scheduler_module.Scheduler._on_notification

    def deaf_to_cancels(self: scheduler_module.Scheduler, note: Notification) -> None:
        changes = [c for c in note.changes if c.state != JobState.CANCELLING]
        hear(self, msgspec.structs.replace(note, changes=changes))

    monkeypatch.setattr(scheduler_module.Scheduler, "_on_notification", deaf_to_cancels)
    await start_scheduler(poll_interval=0.5)
    job = await submit(service, "sleep", "60", stop_grace_seconds=1)
    await watcher.until(job, {"running"})
    await service.execute(job, RequestCancel(reason="enough"), EventMeta(actor="alice"))
    assert (await watcher.until(job, DONE, timeout=15)).state is JobState.CANCELLED


async def test_a_dropped_listen_connection_comes_back(
    service: JobService, pool: asyncpg.Pool, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    scheduler = await start_scheduler(poll_interval=30)  # only notifications can wake it in time
    name = f"jobledger-listener:{scheduler.config.worker_id}"
    [old_pid] = [r["pid"] for r in await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", name
    )]  # fmt: skip
    await pool.execute("SELECT pg_terminate_backend($1)", old_pid)
    job = await submit(service)  # while the listener may be reconnecting
    assert (await watcher.until(job, DONE, timeout=20)).state is JobState.SUCCEEDED
    new = await pool.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", name)
    assert [r["pid"] for r in new] != [old_pid] and len(new) == 1
    later = await submit(service)
    assert (await watcher.until(later, DONE, timeout=20)).state is JobState.SUCCEEDED


async def test_priority_then_time_then_submission_order(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    now = await service.pool.fetchval("SELECT clock_timestamp()")
    ids = {
        "low-first": await submit(service, priority=0),
        "high": await submit(service, priority=10),
        "low-second": await submit(service, priority=0),
        "mid": await submit(service, priority=5),
        "low-due-earlier": await submit(
            service, priority=0, scheduled_for=now - timedelta(hours=1)
        ),
    }
    await start_scheduler(capacity=1)
    views = {name: await watcher.until(job_id, DONE) for name, job_id in ids.items()}
    order = sorted(views, key=lambda n: views[n].started_at)  # type: ignore[arg-type,return-value]
    assert order == ["high", "mid", "low-due-earlier", "low-first", "low-second"]


async def test_scheduled_for_waits_until_then(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await start_scheduler(poll_interval=30)  # it must wake for the time, not by polling
    now = await service.pool.fetchval("SELECT clock_timestamp()")
    job = await submit(service, scheduled_for=now + timedelta(seconds=1.5))
    queued = await watcher.until(job, {"queued"})
    reason = (await queue.waiting_reasons(service.pool, [queued]))[job]
    assert reason.startswith("scheduled for ")
    done = await watcher.until(job, DONE, timeout=10)
    assert done.started_at is not None and done.scheduled_for is not None
    assert done.started_at >= done.scheduled_for


async def test_project_limit_holds_jobs_back_and_releases_them_in_order(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await AccessService(service.pool).set_limits("etl", 2, meta=META)
    ids = [await submit(service, "sleep", "0.4", project="etl") for _ in range(5)]
    other = await submit(service, "sleep", "0.4", project="web")
    await start_scheduler(capacity=10)
    await watcher.until(ids[2], {"queued"})
    # While two run, the third waits with a reason the user can read.
    await watcher.until(ids[0], {"running"})
    await watcher.until(ids[1], {"running"})
    view = await watcher.until(ids[2], {"queued"})
    reasons = await queue.waiting_reasons(service.pool, [view])
    assert reasons[view.id] == "project etl has 2 running jobs, its limit is 2"
    views = [await watcher.until(i, DONE) for i in ids]
    assert max_overlap(views) == 2
    starts = [v.started_at for v in views]
    assert starts == sorted(starts)  # type: ignore[type-var]  # FIFO as slots free
    assert (await watcher.until(other, DONE)).state is JobState.SUCCEEDED  # not held by etl


async def test_a_paused_project_waits_until_its_limit_is_raised(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await AccessService(service.pool).set_limits("paused", 0, meta=META)
    await start_scheduler(poll_interval=30)
    job = await submit(service, project="paused")
    view = await watcher.until(job, {"queued"})
    assert "limit is 0" in (await queue.waiting_reasons(service.pool, [view]))[job]
    await AccessService(service.pool).set_limits("paused", 1, meta=META)  # notifies: no poll needed
    assert (await watcher.until(job, DONE, timeout=10)).state is JobState.SUCCEEDED


async def test_concurrency_key_runs_one_at_a_time(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    same = [await submit(service, "sleep", "0.3", concurrency_key="nightly") for _ in range(3)]
    pair = [
        await submit(service, "sleep", "0.3", concurrency_key="pair", concurrency_limit=2)
        for _ in range(2)
    ]
    await start_scheduler(capacity=10)
    assert max_overlap([await watcher.until(i, DONE) for i in same]) == 1
    assert max_overlap([await watcher.until(i, DONE) for i in pair]) == 2


async def test_worker_capacity_is_respected(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    ids = [await submit(service, "sleep", "0.3") for _ in range(5)]
    await start_scheduler(capacity=2)
    assert max_overlap([await watcher.until(i, DONE) for i in ids]) == 2


class Counting(NoopExecutor):
    """Short no-op attempts, counting how many run at once."""

    def __init__(self) -> None:
        super().__init__(seconds=0.002)
        self.running = self.most = 0

    async def run(self, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().run(req, cancel, io)
        finally:
            self.running -= 1


async def test_claims_of_new_jobs_and_of_ended_jobs_slots_share_the_capacity(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    """Jobs end (and their cycle claims for the slots they free) while submits wake the
    scheduler to claim too: together they never run more attempts than the capacity."""
    executor = Counting()
    await start_scheduler(executor=executor, capacity=3)
    ids: list[uuid.UUID] = []
    for _ in range(20):
        ids += await asyncio.gather(*(submit(service) for _ in range(8)))
        await asyncio.sleep(0.005)
    for i in ids:
        assert (await watcher.until(i, DONE, timeout=30)).state is JobState.SUCCEEDED
    assert executor.most == 3


async def test_tags_route_jobs_to_workers_that_have_them(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    plain = await start_scheduler()
    gpu_job = await submit(service, tags=["gpu"])
    any_job = await submit(service)
    assert (await watcher.until(any_job, DONE)).worker_id == plain.config.worker_id
    view = await watcher.until(gpu_job, {"queued"})
    assert (await queue.waiting_reasons(service.pool, [view]))[
        gpu_job
    ] == "no live worker with tags gpu"
    gpu = await start_scheduler(tags=["gpu", "big"])
    assert (await watcher.until(gpu_job, DONE)).worker_id == gpu.config.worker_id


async def test_failed_jobs_are_retried_with_backoff(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await start_scheduler(poll_interval=30)
    job = await submit(
        service, "sh", "-c", "exit 4", retry=RetryPolicy(max_retries=2, backoff_seconds=0.2)
    )
    done = await watcher.until(job, DONE, timeout=20)
    assert done.state is JobState.FAILED and done.attempt == 3 and done.exit_code == 4
    records = await service.store.read_stream(job)
    types = [type(r.event).__name__ for r in records]
    assert types.count("JobStarted") == 3 and types.count("JobRetryScheduled") == 2
    retries = [r for r in records if type(r.event).__name__ == "JobRetryScheduled"]
    starts = [r for r in records if type(r.event).__name__ == "JobStarted"][1:]
    for retry, start in zip(retries, starts, strict=True):
        waited = (start.recorded_at - retry.recorded_at).total_seconds()
        assert waited >= retry.event.delay_seconds  # type: ignore[union-attr]


async def test_cancel_stops_a_running_job(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await start_scheduler()
    job = await submit(service, "sleep", "60", stop_grace_seconds=1)
    await watcher.until(job, {"running"})
    await service.execute(job, RequestCancel(reason="enough"), EventMeta(actor="alice"))
    done = await watcher.until(job, DONE, timeout=15)
    assert done.state is JobState.CANCELLED and done.cancel_requested_by == "alice"
    assert (await event_types(service, job))[-2:] == ["JobCancelRequested", "JobCancelled"]


async def test_jobs_of_a_worker_whose_lease_expired_are_failed_or_retried(
    service: JobService, pool: asyncpg.Pool, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    lost = await submit(service)
    retried = await submit(service, retry=RetryPolicy(max_retries=1, backoff_seconds=0))
    # A worker that claimed both and then went silent long ago.
    await pool.execute(
        "INSERT INTO workers (id, tags, capacity, lease_seconds, executor, hostname, pid,"
        " heartbeat_at) VALUES ('ghost', '{}', 2, 1, 'docker', 'gone', 1, now() - '1 min'::interval)"  # noqa: E501
    )
    for job in (lost, retried):
        await service.execute(job, Start(worker_id="ghost"), META)
    live = await start_scheduler()
    failed = await watcher.until(lost, DONE)
    assert failed.failure_reason is FailureReason.WORKER_LOST and "ghost" in (failed.message or "")
    rerun = await watcher.until(retried, DONE)
    assert rerun.state is JobState.SUCCEEDED and rerun.attempt == 2
    assert rerun.worker_id == live.config.worker_id


async def test_a_worker_id_cannot_be_used_twice_at_once(start_scheduler: StartScheduler) -> None:
    first = await start_scheduler()
    with pytest.raises(WorkerIdInUse):
        await start_scheduler(worker_id=first.config.worker_id)


async def test_outcomes_are_recorded_when_their_cycle_meets_a_conflict(
    service: JobService,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cycle that records outcomes and claims the freed slots conflicts (as with a cancel
    # request appended meanwhile): the outcomes go in one at a time, the queue still drains.
    conflicts = 0

    async def conflicting_once(*args: object, **kw: object) -> claims.Cycle:
        nonlocal conflicts
        if len(args) > 4 and args[4] and not conflicts:
            conflicts += 1
            raise ConcurrencyError("simulated conflict")
        return await real_claim(*args, **kw)  # type: ignore[arg-type]

    real_claim = claims.claim
    monkeypatch.setattr(scheduler_module, "claim", conflicting_once)
    jobs = [await submit(service) for _ in range(6)]
    await start_scheduler(NoopExecutor(), capacity=2)
    for job in jobs:
        assert (await watcher.until(job, DONE, timeout=20)).state is JobState.SUCCEEDED
    assert conflicts == 1
    for job in jobs:
        assert await event_types(service, job) == ["JobSubmitted", "JobStarted", "JobSucceeded"]
