"""What only the DockerExecutor does, against the real engine and the busybox test image;
what every executor does is in test_executor_contract.py."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import asyncpg
import pytest
import structlog.testing

from jobledger.domain.events import FailureReason
from jobledger.domain.specs import JobSpec, Resources
from jobledger.runtime.docker import DockerExecutor, container_config, docker_available
from jobledger.runtime.executor import JobIO, Outcome, RunRequest
from jobledger.runtime.output import LogSink
from jobledger.store.logs import read_logs

DEADLINE = 15.0  # seconds any wait-for-state helper may take before the test fails

MakeRequest = Callable[..., RunRequest]


@pytest.fixture(scope="module")
async def docker(docker_engine: None) -> AsyncIterator[aiodocker.Docker]:
    """A client of our own, to look at what the executor did."""
    client = aiodocker.Docker()
    yield client
    await client.close()


@pytest.fixture
async def worker_id(docker: aiodocker.Docker) -> AsyncIterator[str]:
    """A worker id per test; whatever a failed test left under it is removed afterwards."""
    wid = f"test-{uuid.uuid4().hex[:12]}"
    yield wid
    for c in await _containers(docker, f"jobledger.worker={wid}"):
        await c.delete(force=True)


@pytest.fixture
async def executor(docker_engine: None) -> AsyncIterator[DockerExecutor]:
    ex = DockerExecutor(pull_policy="never")
    yield ex
    await ex.close()


@pytest.fixture
def make_request(test_image: str, worker_id: str) -> MakeRequest:
    def make(
        command: list[str], *, image: str | None = None, attempt: int = 1, **spec: Any
    ) -> RunRequest:
        spec.setdefault("stop_grace_seconds", 1)
        return RunRequest(
            job_id=uuid.uuid4(),
            attempt=attempt,
            worker_id=worker_id,
            spec=JobSpec(image=image or test_image, command=command, **spec),
        )

    return make


async def _containers(docker: aiodocker.Docker, label: str) -> list[Any]:
    filters = json.dumps({"label": [label]})
    return list(await docker.containers.list(all=True, filters=filters))


async def _job_containers(docker: aiodocker.Docker, req: RunRequest) -> list[Any]:
    return await _containers(docker, f"jobledger.job_id={req.job_id}")


async def _running(
    docker: aiodocker.Docker, req: RunRequest, task: asyncio.Task[Outcome]
) -> dict[str, Any]:
    """Inspect data of the job's container once it runs (the run task still pending)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert not task.done(), f"run ended before its container was seen: {task.result()}"
        for c in await _job_containers(docker, req):
            try:
                info: dict[str, Any] = await c.show()
            except aiodocker.DockerError as e:
                # Listed while create() is still in flight: not inspectable yet.
                if e.status != 404:
                    raise
                continue
            if info["State"]["Running"]:
                return info
        await asyncio.sleep(0.02)
    raise AssertionError(f"no running container for job {req.job_id}")


async def _release(docker: aiodocker.Docker, ref: str) -> None:
    """Create /tmp/go in the container, ending a command that waits for it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("go"), io.BytesIO(b""))
    container = docker.containers.container(ref)
    await container.put_archive("/tmp", buf.getvalue())  # type: ignore[no-untyped-call]


async def _crash(task: asyncio.Task[Outcome]) -> None:
    """What a dying worker does to its run tasks."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _orphaned(
    executor: DockerExecutor, docker: aiodocker.Docker, req: RunRequest
) -> dict[str, Any]:
    """Run `req` until its container runs, then die like a worker: the container stays."""
    task = asyncio.create_task(executor.run(req, asyncio.Event()))
    info = await _running(docker, req, task)
    await _crash(task)
    return info


async def test_oom_killed(executor: DockerExecutor, make_request: MakeRequest) -> None:
    # dd allocates its whole 64 MiB block buffer and fills it: over a 32 MiB limit.
    req = make_request(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        resources=Resources(memory_mb=32),
    )
    outcome = await executor.run(req, asyncio.Event())
    assert outcome.oom_killed
    assert outcome.exit_code == 137


async def test_missing_image_is_not_pulled_with_policy_never(
    executor: DockerExecutor, docker: aiodocker.Docker, make_request: MakeRequest
) -> None:
    req = make_request(["true"], image="jobledger-test-missing:nope")
    outcome = await executor.run(req, asyncio.Event())
    assert outcome.failure == FailureReason.START_ERROR
    assert outcome.message is not None
    assert "No such image: jobledger-test-missing:nope" in outcome.message
    assert await _job_containers(docker, req) == []


async def test_missing_image_pull_failure_is_a_start_error(
    docker_engine: None, make_request: MakeRequest
) -> None:
    # No registry is reachable here (and on one that is, this repository does not exist).
    executor = DockerExecutor(pull_policy="missing")
    image = f"jobledger-test-missing-{uuid.uuid4().hex}:nope"
    try:
        outcome = await executor.run(make_request(["true"], image=image), asyncio.Event())
    finally:
        await executor.close()
    assert outcome.failure == FailureReason.START_ERROR
    assert outcome.message is not None
    assert outcome.message.startswith(f"image {image} is not here and pulling it failed: ")


async def test_start_failure_is_a_start_error_and_leaves_nothing(
    executor: DockerExecutor, docker: aiodocker.Docker, make_request: MakeRequest
) -> None:
    # create() accepts this workdir; the runtime cannot make it under the mounted /proc.
    req = make_request(["true"], workdir="/proc/jobledger")
    outcome = await executor.run(req, asyncio.Event())
    assert outcome.failure == FailureReason.START_ERROR
    assert outcome.message is not None and "mkdir /proc/jobledger" in outcome.message
    assert await _job_containers(docker, req) == []


async def test_command_exiting_127_by_itself_is_a_plain_exit(
    executor: DockerExecutor, make_request: MakeRequest
) -> None:
    # The shell runs, then fails to find a program: the job's problem, not a start error.
    outcome = await executor.run(make_request(["sh", "-c", "no-such-command"]), asyncio.Event())
    assert outcome.failure is None
    assert outcome.exit_code == 127


async def test_container_gets_spec_limits_and_labels(
    executor: DockerExecutor, docker: aiodocker.Docker, make_request: MakeRequest, worker_id: str
) -> None:
    # The command checks what it sees (exit 1 if wrong), then waits to be inspected and
    # released: exit 7 says the env and workdir reached it.
    check = (
        '[ "$GREETING" = "hello world" ] && [ "$(pwd)" = /work/sub ] || exit 1; '
        "until [ -e /tmp/go ]; do sleep 0.05; done; exit 7"
    )
    req = make_request(
        ["sh", "-c", check],
        env={"GREETING": "hello world"},
        workdir="/work/sub",
        resources=Resources(cpu=0.5, memory_mb=64),
        attempt=3,
    )
    task = asyncio.create_task(executor.run(req, asyncio.Event()))
    info = await _running(docker, req, task)
    await _release(docker, info["Id"])
    outcome = await task

    assert outcome.exit_code == 7
    assert info["Name"] == f"/jobledger-{req.job_id}-3"
    assert info["Config"]["Image"] == req.spec.image
    assert info["Config"]["Cmd"] == ["sh", "-c", check]
    assert "GREETING=hello world" in info["Config"]["Env"]
    assert info["Config"]["WorkingDir"] == "/work/sub"
    labels = info["Config"]["Labels"]  # the image's own labels come along too
    assert labels["jobledger.job_id"] == str(req.job_id)
    assert labels["jobledger.worker"] == worker_id
    assert labels["jobledger.attempt"] == "3"
    host = info["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["MemorySwap"] == 64 * 1024 * 1024
    assert host["Init"] is True


def test_image_default_command_is_kept_when_spec_has_none(make_request: MakeRequest) -> None:
    assert "Cmd" not in container_config(make_request([]))
    assert "WorkingDir" not in container_config(make_request(["true"]))


async def test_adopt_starts_a_container_that_was_only_created(
    executor: DockerExecutor, docker: aiodocker.Docker, make_request: MakeRequest, worker_id: str
) -> None:
    # A worker that died between create and start leaves a created container behind.
    req = make_request(["sh", "-c", "exit 4"])
    await docker.containers.create(container_config(req), name=f"jobledger-{req.job_id}-1")
    [found] = await executor.find(worker_id)
    assert not found.running
    outcome = await executor.adopt(found, req, asyncio.Event())
    assert outcome.exit_code == 4
    assert await _job_containers(docker, req) == []


async def test_adopting_a_container_that_exited_unwatched_stores_its_output_at_once(
    executor: DockerExecutor,
    docker: aiodocker.Docker,
    make_request: MakeRequest,
    worker_id: str,
    pool: asyncpg.Pool,
) -> None:
    # What it printed while no worker watched is read from Docker's log, and the reading
    # ends at once: adopt must not wait for an output stream that never ends (an attach to
    # an exited container did, 30 s per container, whenever the worker passed a sink).
    req = make_request(["sh", "-c", "echo gone; exit 6"])
    container = await docker.containers.create(
        container_config(req), name=f"jobledger-{req.job_id}-1"
    )
    await container.start()
    await container.wait()
    [found] = await executor.find(worker_id)
    sink = LogSink(pool, req.job_id, req.attempt)
    await sink.start()
    with structlog.testing.capture_logs() as logs:
        outcome = await executor.adopt(found, req, asyncio.Event(), JobIO(sink))
    await sink.close()
    assert outcome.exit_code == 6
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == []
    assert [(ln.stream, ln.text) for ln in await read_logs(pool, req.job_id)] == [
        ("stdout", "gone")
    ]
    assert await _job_containers(docker, req) == []


async def test_adopt_honours_cancel(
    executor: DockerExecutor, docker: aiodocker.Docker, make_request: MakeRequest, worker_id: str
) -> None:
    req = make_request(["sleep", "30"])
    await _orphaned(executor, docker, req)
    [found] = await executor.find(worker_id)
    cancel = asyncio.Event()
    cancel.set()
    outcome = await executor.adopt(found, req, cancel)
    assert outcome.cancelled and outcome.exit_code == 143
    assert await _job_containers(docker, req) == []


async def _client_with_one_connection() -> tuple[aiodocker.Docker, aiohttp.BaseConnector]:
    """A client of the daemon the executor's own client finds (DOCKER_HOST, the Docker
    context, else the default socket) whose pool holds a single connection."""
    default = aiodocker.Docker()
    try:
        if isinstance(default.connector, aiohttp.UnixConnector):
            connector: aiohttp.BaseConnector = aiohttp.UnixConnector(
                default.connector.path, limit=1
            )
        elif not default.docker_host.startswith("https://"):
            connector = aiohttp.TCPConnector(limit=1)
        else:  # its TLS settings are not ours to copy
            pytest.fail(f"no single-connection client for {default.docker_host} (TLS)")
        return aiodocker.Docker(url=default.docker_host, connector=connector), connector
    finally:
        await default.close()


async def test_crashed_runs_do_not_leak_connections(
    docker: aiodocker.Docker, make_request: MakeRequest
) -> None:
    # With a single pooled connection, one leaked response from an abandoned wait() would
    # hang every later call.
    client, connector = await _client_with_one_connection()
    executor = DockerExecutor(client, pull_policy="never")
    try:
        async with asyncio.timeout(DEADLINE):
            for _ in range(2):
                req = make_request(["sleep", "30"])
                await _orphaned(executor, docker, req)
            assert len(await executor.find(req.worker_id)) == 2
    finally:
        await executor.close()
        await client.close()
        await connector.close()


async def test_find_ignores_other_workers(
    executor: DockerExecutor, docker: aiodocker.Docker, make_request: MakeRequest, worker_id: str
) -> None:
    assert await executor.find(worker_id) == []
    req = make_request(["true"])
    await docker.containers.create(container_config(req), name=f"jobledger-{req.job_id}-1")
    assert await executor.find(f"other-{worker_id}") == []
    assert [f.job_id for f in await executor.find(worker_id)] == [req.job_id]


async def test_docker_available(
    docker_engine: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert await docker_available()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    assert not await docker_available()


async def test_output_printed_right_before_the_exit_is_stored_whole(
    executor: DockerExecutor, make_request: MakeRequest, pool: asyncpg.Pool
) -> None:
    # The engine ends a following read of the log when the container stops, often with
    # entries of its file not sent (measured: up to 1,600 of 5,000 lines printed in the last
    # milliseconds, 12 of 30 runs under load); the read of the log after it brings them
    # (the engine closes the log file only once the container's output is all in it). Jobs
    # run side by side, as on a busy worker; the last line has no newline.
    script = "seq 1 5000; echo done >&2; printf tail"

    async def run_one() -> RunRequest:
        req = make_request(["sh", "-c", script])
        sink = LogSink(pool, req.job_id, req.attempt)
        await sink.start()
        outcome = await executor.run(req, asyncio.Event(), JobIO(sink))
        await sink.close()
        assert outcome.exit_code == 0
        return req

    for req in await asyncio.gather(*(run_one() for _ in range(6))):
        lines = await read_logs(pool, req.job_id, limit=10_000)
        out = [ln.text for ln in lines if ln.stream == "stdout"]
        assert out == [str(i) for i in range(1, 5001)] + ["tail"], (len(out), out[-3:])
        assert [ln.text for ln in lines if ln.stream == "stderr"] == ["done"]
