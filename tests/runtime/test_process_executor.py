"""What only the ProcessExecutor does, with real local processes; what every executor
does is in test_executor_contract.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobledger.domain.events import FailureReason
from jobledger.domain.jobs import Finish
from jobledger.domain.specs import JobSpec
from jobledger.runtime import procwatch
from jobledger.runtime.executor import RunRequest
from jobledger.runtime.process import ProcessExecutor

MakeRequest = Callable[..., RunRequest]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def executor(state_dir: Path) -> AsyncIterator[ProcessExecutor]:
    executor = ProcessExecutor(state_dir)
    yield executor
    await executor.close()


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


#: A worker's life in a child process: start one attempt through the executor, then die
#: as told: `ended` (its command exited, the outcome never reached the log), `killed`
#: (kill -9 mid-run), `killed-with-warden` (its warden killed too, as by kill -9 of its group).
_LIFE = """
import asyncio, json, os, signal, sys, uuid
from pathlib import Path
from jobledger.domain.specs import JobSpec
from jobledger.runtime.executor import RunRequest
from jobledger.runtime.process import ProcessExecutor

state, worker, job, command, how = sys.argv[1:]
async def main():
    executor = ProcessExecutor(Path(state))
    spec = JobSpec(image="ignored", command=json.loads(command), env={"MARK": worker})
    req = RunRequest(job_id=uuid.UUID(job), attempt=1, worker_id=worker, spec=spec)
    if how == "ended":
        await executor.run(req, asyncio.Event())
    else:
        attempt = await executor.start(req, None)
        print(attempt.proc.pid, file=sys.stderr, flush=True)
        sys.stdin.readline()  # until the test has seen what it needs
        if how == "killed-with-warden":
            executor._wardens[worker].proc.kill()
            executor._wardens[worker].proc.wait()
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""


class PastLife:
    """A worker process that starts one attempt and dies (see `_LIFE`)."""

    def __init__(self, state_dir: Path, worker_id: str, command: list[str], how: str) -> None:
        self.job_id = uuid.uuid4()
        args = [str(state_dir), worker_id, str(self.job_id), json.dumps(command), how]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LIFE, *args],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def started(self) -> int:
        assert self.proc.stderr is not None
        return int(self.proc.stderr.readline())

    def die(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=30) == -signal.SIGKILL


def marked(worker_id: str) -> list[int]:
    """Live processes whose environment says MARK=worker_id."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"MARK={worker_id}".encode() in environ.read_bytes().split(b"\0"):
                pid = int(environ.parent.name)
                if procwatch.alive(pid, procwatch.start_ticks(pid) or -1):  # not a zombie
                    pids.append(pid)
        except OSError:
            continue
    return pids


async def until_none_marked(worker_id: str) -> None:
    deadline = time.monotonic() + 10
    while left := marked(worker_id):
        assert time.monotonic() < deadline, f"left running: {left}"
        await asyncio.sleep(0.02)


@pytest.fixture
def wid() -> Iterator[str]:
    """A worker id of the test's own; whatever carries its mark at the end is killed."""
    worker_id = f"w-{uuid.uuid4().hex[:12]}"
    yield worker_id
    for pid in marked(worker_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def request(found_job: uuid.UUID, worker_id: str, command: list[str]) -> RunRequest:
    spec = JobSpec(image="ignored", command=command)
    return RunRequest(job_id=found_job, attempt=1, worker_id=worker_id, spec=spec)


async def test_a_live_worker_finds_nothing_of_its_own_and_settling_forgets(
    executor: ProcessExecutor, make_request: MakeRequest, state_dir: Path
) -> None:
    req = make_request(["true"])
    assert (await executor.run(req, asyncio.Event())).exit_code == 0
    [record] = state_dir.glob("processes/*/*.json")
    assert json.loads(record.read_bytes())["exit_code"] == 0  # known before it is recorded
    assert await executor.find(req.worker_id) == []  # ours, not a past life's
    await executor.settled(req)
    assert list(state_dir.glob("processes/*/*.json")) == []


async def test_the_exit_code_of_a_command_whose_worker_died_before_recording_it_is_kept(
    state_dir: Path, wid: str
) -> None:
    command = ["sh", "-c", "exit 5"]
    past = PastLife(state_dir, wid, command, "ended")
    assert await asyncio.to_thread(past.proc.wait, 30) == -signal.SIGKILL
    restarted = ProcessExecutor(state_dir)
    [found] = await restarted.find(wid)
    assert (found.job_id, found.attempt, found.running) == (past.job_id, 1, False)
    req = request(past.job_id, wid, command)
    outcome = await restarted.adopt(found, req, asyncio.Event())
    assert outcome.command(1) == Finish(attempt=1, exit_code=5, usage=outcome.usage)
    await restarted.settled(req)
    assert await restarted.find(wid) == []


async def test_an_attempt_dies_with_its_worker(state_dir: Path, wid: str) -> None:
    # The shell's children are not its leader: the warden kills them.
    command = ["sh", "-c", "sleep 300 & sleep 300 & wait"]
    past = PastLife(state_dir, wid, command, "killed")
    await asyncio.to_thread(past.started)
    deadline = time.monotonic() + 10
    while len(marked(wid)) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.to_thread(past.die)
    await until_none_marked(wid)
    restarted = ProcessExecutor(state_dir)
    [found] = await restarted.find(wid)
    assert not found.running
    outcome = await restarted.adopt(found, request(past.job_id, wid, command), asyncio.Event())
    assert outcome.failure == FailureReason.WORKER_LOST
    assert outcome.message is not None and "found it gone" in outcome.message


async def test_a_next_life_kills_survivors_before_it_reports_the_attempt_lost(
    state_dir: Path, wid: str
) -> None:
    # With its warden killed too, only the leader dies with the worker (death signal):
    # its child survives until the next life finds and kills it.
    command = ["sh", "-c", "sleep 300 & wait"]
    past = PastLife(state_dir, wid, command, "killed-with-warden")
    leader = await asyncio.to_thread(past.started)
    deadline = time.monotonic() + 10
    while len(marked(wid)) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.to_thread(past.die)
    deadline = time.monotonic() + 10
    while leader in marked(wid):
        assert time.monotonic() < deadline, "the leader outlived its worker"
        await asyncio.sleep(0.02)
    [survivor] = marked(wid)
    restarted = ProcessExecutor(state_dir)
    [found] = await restarted.find(wid)
    assert found.running
    outcome = await restarted.adopt(found, request(past.job_id, wid, command), asyncio.Event())
    assert marked(wid) == []  # gone before the outcome (and any retry) is known
    assert outcome.failure == FailureReason.WORKER_LOST
    assert outcome.message is not None and "killed it" in outcome.message
    await restarted.discard(found)  # settled some other way: not an error
    assert not procwatch.alive(survivor, procwatch.start_ticks(survivor) or -1)
