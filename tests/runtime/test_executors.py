"""Choosing an executor: `auto` falls back to processes, loudly, when Docker does not answer."""

from __future__ import annotations

import pytest

from jobledger.runtime.executors import ExecutorUnavailable, make_executor
from jobledger.runtime.noop import NoopExecutor
from jobledger.runtime.process import ProcessExecutor


async def test_auto_without_docker_falls_back_to_processes_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    executor = await make_executor("auto")
    assert isinstance(executor, ProcessExecutor)
    captured = capsys.readouterr()
    assert "NO DOCKER ENGINE" in captured.out + captured.err
    with pytest.raises(ExecutorUnavailable, match="Docker engine does not answer"):
        await make_executor("docker")


async def test_explicit_kinds(docker_engine: None) -> None:
    assert isinstance(await make_executor("process"), ProcessExecutor)
    assert isinstance(await make_executor("noop"), NoopExecutor)
    docker = await make_executor("docker")
    try:
        assert docker.name == "docker"
    finally:
        await docker.close()
