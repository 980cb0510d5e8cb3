"""What only the ProcessExecutor does, with real local processes; what every executor
does is in test_executor_contract.py."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobledger.domain.events import FailureReason
from jobledger.domain.specs import JobSpec
from jobledger.runtime.executor import Found, RunRequest
from jobledger.runtime.process import ProcessExecutor

MakeRequest = Callable[..., RunRequest]


@pytest.fixture
def executor() -> ProcessExecutor:
    return ProcessExecutor()


@pytest.fixture
def make_request() -> MakeRequest:
    def make(command: list[str], **spec: Any) -> RunRequest:
        spec.setdefault("stop_grace_seconds", 1)
        return RunRequest(
            job_id=uuid.uuid4(),
            attempt=1,
            worker_id="test-process",
            spec=JobSpec(image="ignored", command=command, **spec),
        )

    return make


async def test_env_and_workdir_are_applied_and_nothing_else_leaks(
    executor: ProcessExecutor,
    make_request: MakeRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBLEDGER_WORKER_SECRET", "do-not-pass")
    req = make_request(
        ["sh", "-c", 'printf "%s\\n" "$GREETING" > out; pwd >> out; env > env'],
        env={"GREETING": "hello world"},
        workdir=str(tmp_path),
    )
    outcome = await executor.run(req, asyncio.Event())
    assert outcome.exit_code == 0
    assert (tmp_path / "out").read_text() == f"hello world\n{tmp_path}\n"
    env = (tmp_path / "env").read_text()
    assert f"PATH={os.environ['PATH']}\n" in env
    assert "JOBLEDGER_WORKER_SECRET" not in env


# A missing executable is a case of the contract (test_executor_contract.py).
@pytest.mark.parametrize(
    ("command", "workdir", "expected"),
    [
        ([], None, "needs a command"),
        (["true"], "/nonexistent/jobledger", "/nonexistent/jobledger"),
    ],
    ids=["empty-command", "missing-workdir"],
)
async def test_start_errors(
    executor: ProcessExecutor,
    make_request: MakeRequest,
    command: list[str],
    workdir: str | None,
    expected: str,
) -> None:
    outcome = await executor.run(make_request(command, workdir=workdir), asyncio.Event())
    assert outcome.failure == FailureReason.START_ERROR
    assert outcome.exit_code is None
    assert outcome.message is not None and expected in outcome.message


async def test_nothing_to_find_adopt_or_discard(
    executor: ProcessExecutor, make_request: MakeRequest
) -> None:
    assert await executor.find("test-process") == []
    found = Found(job_id=uuid.uuid4(), attempt=1, ref="1", running=True)
    await executor.discard(found)
    with pytest.raises(NotImplementedError):
        await executor.adopt(found, make_request(["true"]), asyncio.Event())
    await executor.close()
