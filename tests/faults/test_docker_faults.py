"""Docker daemon outages, injected for real on a daemon of the test's own: a worker whose
engine does not answer claims nothing and its jobs wait saying why; jobs survive a
live-restore restart; containers of ended jobs are removed; usage agrees with itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import JobState
from jobledger.projections import jobs as jobs_projection
from jobledger.projections.queue import waiting_reasons
from jobledger.runtime.docker import DockerExecutor
from jobledger.runtime.executor import JobIO, Outcome, RunRequest
from jobledger.service import JobService
from jobledger.store.logs import read_logs
from tests.factories import spec
from tests.faults import docker_rig
from tests.faults.docker_rig import NETWORK_MODE, OwnDocker
from tests.runtime import conftest as runtime_fixtures
from tests.runtime.conftest import StartScheduler
from tests.watching import JobWatcher

# Fixtures of other folders that these tests use.
own_docker = docker_rig.own_docker
start_scheduler = runtime_fixtures.start_scheduler

META = EventMeta(actor="test")
DONE = {"succeeded", "failed", "cancelled"}
#: Short enough that the tests see the outage and the recovery within a second or two.
FAST = {"executor_check_interval": 0.2, "poll_interval": 0.5}


@pytest.fixture
async def executor(own_docker: OwnDocker) -> AsyncIterator[DockerExecutor]:
    """The Docker executor pointed at the test's own daemon."""
    client = own_docker.client()
    try:
        yield DockerExecutor(client, network_mode=NETWORK_MODE)
    finally:
        await client.close()


async def submit(service: JobService, command: str, **kw: object) -> uuid.UUID:
    view, _ = await service.submit(spec(command=["sh", "-c", command], **kw), META)
    return view.id


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Poll a predicate on state no event announces (the workers table, the engine)."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


async def all_removed(own: OwnDocker) -> None:
    """Every job container is removed (soon after its outcome is recorded, not before)."""

    async def none_left() -> bool:
        return await asyncio.to_thread(own.containers) == []

    await until(none_left, "every job's container is removed")


async def test_jobs_wait_while_the_engine_is_down_and_run_once_it_is_back(
    service: JobService,
    pool: asyncpg.Pool,
    own_docker: OwnDocker,
    executor: DockerExecutor,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
) -> None:
    scheduler = await start_scheduler(executor, capacity=2, **FAST)
    worker = scheduler.config.worker_id
    await own_docker.stop()

    async def marked_down() -> bool:
        error = await pool.fetchval("SELECT executor_error FROM workers WHERE id = $1", worker)
        return error is not None

    await until(marked_down, "the worker records that its executor does not answer")
    # With retries, as in the report: a start_error would not have been retried either.
    jobs = [
        await submit(service, f"echo job {i}", retry={"max_retries": 2, "backoff_seconds": 0.1})
        for i in range(6)
    ]
    # Rounds of the scheduler (each submit wakes it, and it polls): it claims nothing.
    await asyncio.sleep(4 * FAST["poll_interval"])
    views = [await jobs_projection.get(pool, j) for j in jobs]
    assert [v.state for v in views if v is not None] == [JobState.QUEUED] * len(jobs)
    reasons = await waiting_reasons(pool, [v for v in views if v is not None])
    for j in jobs:
        assert reasons[j].startswith("executor unavailable"), reasons[j]

    await own_docker.start()
    for j in jobs:
        view = await watcher.until(j, DONE)
        assert view.state is JobState.SUCCEEDED, view
        assert view.attempt == 1 and view.failure_reason is None  # nothing charged
    error = await pool.fetchval("SELECT executor_error FROM workers WHERE id = $1", worker)
    assert error is None
    await all_removed(own_docker)


async def test_jobs_claimed_as_the_engine_goes_away_are_not_charged(
    service: JobService,
    own_docker: OwnDocker,
    executor: DockerExecutor,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
) -> None:
    # The worker finds out only by trying: its watch asks once, at the start, and not again
    # within the test.
    await start_scheduler(executor, capacity=3, executor_check_interval=3600, poll_interval=0.5)
    await own_docker.stop()
    jobs = [await submit(service, f"echo job {i}") for i in range(3)]  # no retries
    # Claimed: its start fails on the engine that is away, and it waits (the first failed
    # start stops the worker claiming the others).
    await watcher.until(jobs[0], {"running"})
    await asyncio.sleep(1.0)
    await own_docker.start()
    for j in jobs:
        view = await watcher.until(j, DONE)
        assert view.state is JobState.SUCCEEDED, view
        assert view.attempt == 1
    await all_removed(own_docker)


async def test_a_missing_image_is_still_the_jobs_start_error(
    service: JobService,
    executor: DockerExecutor,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
) -> None:
    await start_scheduler(executor, **FAST)
    view, _ = await service.submit(spec(image="jobledger-absent:never"), META)
    failed = await watcher.until(view.id, DONE)
    assert failed.failure_reason is not None and failed.failure_reason.value == "start_error"


async def test_a_job_runs_on_across_a_live_restore_restart(
    service: JobService,
    pool: asyncpg.Pool,
    own_docker: OwnDocker,
    executor: DockerExecutor,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
) -> None:
    own_docker.live_restore = True
    await own_docker.restart()
    await start_scheduler(executor, capacity=3, **FAST)
    ticks = "for i in $(seq 40); do echo tick $i; sleep 0.2; done"
    ok = await submit(service, ticks)
    bad = await submit(service, f"{ticks}; exit 5")
    for j in (ok, bad):

        async def printing(job_id: uuid.UUID = j) -> bool:
            return bool(await read_logs(pool, job_id))

        # Its container runs (running only says it was claimed): the restart is the fault.
        await until(printing, f"job {j} prints")
    await own_docker.restart(down_seconds=1.0)
    # Queued during the restart: it waits, then runs.
    later = await submit(service, "echo after")

    succeeded = await watcher.until(ok, DONE)
    assert succeeded.state is JobState.SUCCEEDED and succeeded.exit_code == 0, succeeded
    failed = await watcher.until(bad, DONE)
    assert failed.state is JobState.FAILED and failed.exit_code == 5, failed
    assert failed.failure_reason is not None and failed.failure_reason.value == "exit_code"
    assert (await watcher.until(later, DONE)).state is JobState.SUCCEEDED
    # Its output read on after the restart, what it printed meanwhile too: all of it, once.
    texts = [ln.text for ln in await read_logs(pool, ok)]
    assert texts == [f"tick {i}" for i in range(1, 41)], texts
    await all_removed(own_docker)


async def test_the_reconcile_loop_removes_containers_of_ended_jobs(
    service: JobService,
    own_docker: OwnDocker,
    executor: DockerExecutor,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    test_image: str,
) -> None:
    done = await submit(service, "true")
    # A job no worker takes: queued, so its container (if any) is not an ended job's.
    waiting = await submit(service, "true", tags=["nobody-has-this"])
    unknown = uuid.uuid4()  # another install's job on the same engine: not ours to judge
    scheduler = await start_scheduler(executor, reconcile_interval=0.3, **FAST)
    await watcher.until(done, DONE)

    async def own_removed() -> bool:
        label = f"jobledger.job_id={done}"
        return await asyncio.to_thread(own_docker.containers, label) == []

    await until(own_removed, "the job's own container is removed after its outcome")

    def leftover(job_id: uuid.UUID, *command: str, run: bool = False) -> None:
        # What a worker that died between recording and removing leaves behind.
        labels = [f"jobledger.job_id={job_id}", "jobledger.worker=gone", "jobledger.attempt=1"]
        args = ["run", "-d"] if run else ["create"]
        for label in labels:
            args += ["--label", label]
        own_docker.docker(*args, "--network", "none", test_image, *command)

    leftover(done, "true")
    leftover(done, "sleep", "60", run=True)
    leftover(waiting, "true")
    leftover(unknown, "true")

    async def removed() -> bool:
        return await asyncio.to_thread(own_docker.containers, f"jobledger.job_id={done}") == []

    await until(removed, "the ended job's containers are removed")
    assert len(own_docker.containers(f"jobledger.job_id={waiting}")) == 1
    assert len(own_docker.containers(f"jobledger.job_id={unknown}")) == 1
    assert scheduler.active == {}


async def test_a_short_jobs_wall_time_is_not_below_its_cpu_time(
    service: JobService,
    executor: DockerExecutor,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
) -> None:
    await start_scheduler(executor, capacity=3, **FAST)
    jobs = [await submit(service, "echo hi") for _ in range(3)]
    for j in jobs:
        view = await watcher.until(j, DONE)
        assert view.state is JobState.SUCCEEDED and view.usage is not None
        assert view.usage.wall_seconds > 0
        assert view.usage.wall_seconds >= view.usage.cpu_seconds, view.usage


async def test_the_outcome_is_recorded_before_the_container_is_removed(
    own_docker: OwnDocker, executor: DockerExecutor
) -> None:
    job_id = uuid.uuid4()
    label = f"jobledger.job_id={job_id}"
    at_record: list[tuple[Outcome, int]] = []

    async def record(outcome: Outcome) -> None:
        at_record.append((outcome, len(await asyncio.to_thread(own_docker.containers, label))))

    req = RunRequest(
        job_id=job_id, attempt=1, worker_id="w", spec=spec(command=["sh", "-c", "exit 4"])
    )
    outcome = await executor.run(req, asyncio.Event(), JobIO(record=record))
    assert outcome.exit_code == 4
    # Recorded while the container was still there (a worker dying now loses nothing).
    assert at_record == [(outcome, 1)]
    assert own_docker.containers(label) == []
