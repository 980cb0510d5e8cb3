"""Choosing an executor: `auto` falls back to processes, loudly, when Docker does not answer."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import structlog

from jobledger.domain.specs import JobSpec
from jobledger.runtime.executor import Outcome, RunRequest
from jobledger.runtime.executors import ExecutorUnavailable, make_executor
from jobledger.runtime.noop import NoopExecutor
from jobledger.runtime.process import ProcessExecutor


async def test_auto_without_docker_falls_back_to_processes_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with structlog.testing.capture_logs() as logs:
        executor = await make_executor("auto")
    assert isinstance(executor, ProcessExecutor)
    assert any("NO DOCKER ENGINE" in e["event"] for e in logs)
    chosen = [e for e in logs if e["event"] == "executor chosen"]
    assert chosen == [{"event": "executor chosen", "log_level": "info", "asked": "auto",
                       "executor": "process"}]  # fmt: skip
    with pytest.raises(ExecutorUnavailable, match="Docker engine does not answer"):
        await make_executor("docker")


async def test_explicit_kinds(docker_engine: None) -> None:
    assert isinstance(await make_executor("process"), ProcessExecutor)
    assert isinstance(await make_executor("noop"), NoopExecutor)
    with structlog.testing.capture_logs() as logs:
        docker = await make_executor("auto")
    try:
        assert docker.name == "docker"
    finally:
        await docker.close()
    # Which executor `auto` picked, and which engine it talks to.
    (chosen,) = [e for e in logs if e["event"] == "executor chosen"]
    assert chosen["asked"] == "auto" and chosen["executor"] == "docker"
    assert chosen["engine"].startswith("Docker Engine ") and "(API 1." in chosen["engine"]
    assert chosen["docker_host"].startswith(("unix://", "tcp://", "http"))


async def test_noop_seconds_make_each_attempt_last_until_done_or_cancelled() -> None:
    """`--noop-seconds` (benchmarks of fixed-length jobs): the attempt lasts that long and
    then succeeds; a cancel meanwhile ends it as cancelled."""
    req = RunRequest(
        job_id=uuid.uuid4(), attempt=1, worker_id="w", spec=JobSpec(image="x", command=["x"])
    )
    short = await make_executor("noop", noop_seconds=0.01)
    assert await short.run(req, asyncio.Event()) == Outcome(exit_code=0)
    long = await make_executor("noop", noop_seconds=60)
    cancel = asyncio.Event()
    running = asyncio.create_task(long.run(req, cancel))
    await asyncio.sleep(0.05)
    assert not running.done()  # a 60 s attempt is still on
    cancel.set()
    assert await running == Outcome(cancelled=True)
