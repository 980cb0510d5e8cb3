"""ProcessExecutor with real local processes."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobledger.domain.events import FailureReason
from jobledger.domain.jobs import ConfirmCancelled, Finish
from jobledger.domain.specs import JobSpec
from jobledger.runtime.executor import Found, Outcome, RunRequest
from jobledger.runtime.process import ProcessExecutor

DEADLINE = 10.0

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


def _line(path: Path) -> str | None:
    """The first line of `path` once it is completely written, else None."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return text if text.endswith("\n") else None


async def _appears(path: Path, task: asyncio.Task[Outcome]) -> str:
    """The line the command writes to `path`, once it is there."""
    deadline = time.monotonic() + DEADLINE
    while (line := _line(path)) is None:
        assert not task.done(), f"run ended before {path.name} appeared: {task.result()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        await asyncio.sleep(0.01)
    return line


async def _dies(pid: int) -> None:
    """Return once `pid` is dead; SIGKILL is delivered asynchronously, so poll a little."""
    deadline = time.monotonic() + DEADLINE
    while not _gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        await asyncio.sleep(0.01)


def _gone(pid: int) -> bool:
    """Whether `pid` is dead (a zombie waiting for a reaper counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped before or while we read
        return True


async def test_exit_zero(executor: ProcessExecutor, make_request: MakeRequest) -> None:
    outcome = await executor.run(make_request(["true"]), asyncio.Event())
    assert outcome.exit_code == 0
    assert outcome.failure is None and not outcome.cancelled
    assert outcome.usage.wall_seconds > 0
    assert outcome.command(1) == Finish(attempt=1, exit_code=0, usage=outcome.usage)


async def test_nonzero_exit_code(executor: ProcessExecutor, make_request: MakeRequest) -> None:
    outcome = await executor.run(make_request(["sh", "-c", "exit 3"]), asyncio.Event())
    assert outcome.exit_code == 3
    assert outcome.failure is None


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


async def test_timeout_kills_the_group_after_grace_when_sigterm_is_ignored(
    executor: ProcessExecutor, make_request: MakeRequest, tmp_path: Path
) -> None:
    # The child inherits the ignored SIGTERM; only the group-wide SIGKILL ends both.
    script = "trap '' TERM; sleep 30 & echo $! > child; wait"
    req = make_request(["sh", "-c", script], workdir=str(tmp_path), timeout_seconds=1)
    outcome = await executor.run(req, asyncio.Event())
    assert outcome.failure == FailureReason.TIMEOUT
    assert outcome.exit_code == 137
    assert outcome.message == "timed out after 1s"
    await _dies(int((tmp_path / "child").read_text()))


async def test_cancel_stops_with_sigterm(
    executor: ProcessExecutor, make_request: MakeRequest, tmp_path: Path
) -> None:
    req = make_request(["sh", "-c", "echo $$ > pid; exec sleep 30"], workdir=str(tmp_path))
    cancel = asyncio.Event()
    task = asyncio.create_task(executor.run(req, cancel))
    pid = int(await _appears(tmp_path / "pid", task))
    cancel.set()
    outcome = await task
    assert outcome.cancelled
    assert outcome.exit_code == 143
    assert isinstance(outcome.command(1), ConfirmCancelled)
    await _dies(pid)


async def test_cancelled_run_task_kills_the_process(
    executor: ProcessExecutor, make_request: MakeRequest, tmp_path: Path
) -> None:
    # Nothing could adopt it later, so a dying worker must not leave it running.
    req = make_request(["sh", "-c", "echo $$ > pid; exec sleep 30"], workdir=str(tmp_path))
    task = asyncio.create_task(executor.run(req, asyncio.Event()))
    pid = int(await _appears(tmp_path / "pid", task))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _dies(pid)


@pytest.mark.parametrize(
    ("command", "workdir", "expected"),
    [
        ([], None, "needs a command"),
        (["jobledger-no-such-program"], None, "'jobledger-no-such-program'"),
        (["true"], "/nonexistent/jobledger", "/nonexistent/jobledger"),
    ],
    ids=["empty-command", "missing-executable", "missing-workdir"],
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


async def test_cancel_before_start_starts_nothing(
    executor: ProcessExecutor, make_request: MakeRequest, tmp_path: Path
) -> None:
    cancel = asyncio.Event()
    cancel.set()
    req = make_request(["touch", "ran"], workdir=str(tmp_path))
    assert await executor.run(req, cancel) == Outcome(cancelled=True)
    assert not (tmp_path / "ran").exists()


async def test_nothing_to_find_adopt_or_discard(
    executor: ProcessExecutor, make_request: MakeRequest
) -> None:
    assert await executor.find("test-process") == []
    found = Found(job_id=uuid.uuid4(), attempt=1, ref="1", running=True)
    await executor.discard(found)
    with pytest.raises(NotImplementedError):
        await executor.adopt(found, make_request(["true"]), asyncio.Event())
    await executor.close()
