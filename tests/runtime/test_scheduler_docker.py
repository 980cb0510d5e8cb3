"""The scheduler with the Docker executor: a job's whole life in a real container."""

from __future__ import annotations

from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import JobState, RequestCancel
from jobledger.runtime.docker import DockerExecutor
from jobledger.service import JobService
from tests.docker_rig import left_behind
from tests.factories import spec
from tests.runtime.conftest import StartScheduler
from tests.watching import JobWatcher

META = EventMeta(actor="test")
DONE = {"succeeded", "failed", "cancelled"}


async def test_container_jobs_succeed_fail_and_are_cancelled(
    service: JobService, start_scheduler: StartScheduler, watcher: JobWatcher, test_image: str
) -> None:
    await start_scheduler(DockerExecutor(), capacity=4)

    async def submit(command: str, **kw: object) -> object:
        view, _ = await service.submit(
            spec(image=test_image, command=["sh", "-c", command], **kw), META
        )
        return view.id

    ok = await submit("echo hello")
    bad = await submit("exit 9")
    long = await submit("sleep 60", stop_grace_seconds=1)
    missing, _ = await service.submit(spec(image="jobledger-absent:never", command=["true"]), META)

    await watcher.until(long, {"running"})
    await service.execute(long, RequestCancel(), META)  # type: ignore[arg-type]

    assert (await watcher.until(ok, DONE)).state is JobState.SUCCEEDED
    failed = await watcher.until(bad, DONE)
    assert failed.exit_code == 9 and failed.failure_reason is FailureReason.EXIT_CODE
    cancelled = await watcher.until(long, DONE)
    assert cancelled.state is JobState.CANCELLED
    start_error = await watcher.until(missing.id, DONE)
    assert start_error.failure_reason is FailureReason.START_ERROR
    assert "jobledger-absent" in (start_error.message or "")
    for job_id in (ok, bad, long, missing.id):
        assert await left_behind(f"jobledger.job_id={job_id}") == []  # nothing left behind
