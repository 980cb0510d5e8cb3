"""The scheduler with the Docker executor: a job's whole life in a real container."""

from __future__ import annotations

import contextlib
import uuid

import aiodocker

from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import JobState, RequestCancel
from jobledger.runtime.docker import LABEL_ATTEMPT, LABEL_JOB, LABEL_WORKER, DockerExecutor
from jobledger.service import JobService
from tests.docker_rig import containers, left_behind
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


async def test_a_starting_worker_leaves_another_installs_containers_alone(
    service: JobService, start_scheduler: StartScheduler, test_image: str
) -> None:
    # Two installs (databases) on one engine, their workers of the same id (the default is
    # the host's name). A starting worker recovers what it finds under its id: a container
    # of a job its database does not hold is the other install's, running. Killing it lost
    # the tail of a job's output in the browser tests (the job failed with 137 meanwhile).
    worker_id = f"w-{uuid.uuid4().hex[:8]}"
    queued, _ = await service.submit(
        spec(image=test_image, command=["true"], tags=["nobody-has-this"]), META
    )
    docker = aiodocker.Docker()
    theirs_id = uuid.uuid4()
    made: dict[str, str] = {}
    try:
        for name, job_id in (("theirs", theirs_id), ("ours", queued.id)):
            labels = {LABEL_JOB: str(job_id), LABEL_WORKER: worker_id, LABEL_ATTEMPT: "1"}
            config = {"Image": test_image, "Cmd": ["sleep", "60"], "Labels": labels,
                      "HostConfig": {"NetworkMode": "none"}}  # fmt: skip
            container = await docker.containers.create(config)
            await container.start()
            made[name] = container.id
        await start_scheduler(DockerExecutor(), worker_id=worker_id)  # ready: recovered
        theirs = containers(f"jobledger.job_id={theirs_id}")
        assert [c["State"] for c in theirs] == ["running"], "another install's job was killed"
        # A container of a job this database holds but this worker does not run is a
        # leftover, removed as before.
        assert await left_behind(f"jobledger.job_id={queued.id}") == []
    finally:
        for ref in made.values():
            with contextlib.suppress(aiodocker.DockerError):  # removed already
                await docker.containers.container(ref).delete(force=True)
        await docker.close()
