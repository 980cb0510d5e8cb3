"""`jobledger worker --executor process` killed with SIGKILL mid-job: no command runs twice,
each job ends as its command did, and a retry starts only once nothing of the previous
attempt runs. Each command proves the last point itself: it holds a lock on a file of its
job for as long as any of its processes lives, and says so if it finds the lock taken."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import JobState
from jobledger.domain.specs import RetryPolicy
from jobledger.runtime.process import default_state_dir
from jobledger.service import JobService
from tests.e2e.conftest import Worker
from tests.factories import spec
from tests.watching import JobWatcher

META = EventMeta(actor="test")
DONE = {"succeeded", "failed", "cancelled"}
DEADLINE = 30.0

#: Appends `start PID` then `done PID` to $MARK; sleeps $FIRST on a first attempt, briefly
#: on a retry. The sleep is a child of the shell, so the death signal of the shell alone
#: would not end it, and it holds the lock as the shell does.
COMMAND = """
exec 9>>"$LOCK"
flock -n 9 || echo overlap >> "$MARK"
if [ -s "$MARK" ]; then d=0.1; else d="$FIRST"; fi
echo "start $$" >> "$MARK"
sleep "$d"
echo "done $$" >> "$MARK"
"""


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop(signal.SIGKILL)


def processes_of(trial: str) -> list[int]:
    """Live processes (not zombies) whose environment carries TRIAL=trial."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"TRIAL={trial}".encode() not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            stat = (proc / "stat").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X"):
            pids.append(int(proc.name))
    return pids


def wardens_of(worker_id: str) -> list[int]:
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"procwatch.py") for a in argv) and worker_id.encode() in argv:
            pids.append(int(proc.name))
    return pids


async def until(check: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not {what} after {DEADLINE}s"
        await asyncio.sleep(0.05)


async def until_registered(pool: asyncpg.Pool, worker_id: str) -> None:
    async with asyncio.timeout(DEADLINE):
        while not await pool.fetchval(
            "SELECT count(*) FROM workers WHERE id = $1 AND stopped_at IS NULL "
            "AND heartbeat_at > clock_timestamp() - interval '2 seconds'",
            worker_id,
        ):
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("killed", ["worker", "worker-and-warden"])
async def test_a_killed_worker_runs_no_command_twice(
    service: JobService,
    pool: asyncpg.Pool,
    dsn: str,
    watcher: JobWatcher,
    workers: list[Worker],
    tmp_path: Path,
    killed: str,
) -> None:
    trial = uuid.uuid4().hex
    worker_id = f"pyre-{trial[:8]}"
    args = ("--executor", "process", "--capacity", "8", "--lease-seconds", "60")
    workers.append(Worker(dsn, worker_id, *args))
    await until_registered(pool, worker_id)

    jobs: dict[uuid.UUID, Path] = {}
    short: list[uuid.UUID] = []
    for n in range(8):
        first = "0.1" if n % 2 else "300"  # ends before the kill, or is cut by it
        mark = tmp_path / f"{n}.mark"
        env = {"MARK": str(mark), "LOCK": str(tmp_path / f"{n}.lock"), "FIRST": first}
        view, _ = await service.submit(
            spec(
                command=["sh", "-c", COMMAND],
                env={**env, "TRIAL": trial},
                retry=RetryPolicy(max_retries=2, backoff_seconds=0),
            ),
            META,
        )
        jobs[view.id] = mark
        if first == "0.1":
            short.append(view.id)
    for job_id in short:
        await watcher.until(job_id, DONE)
    await until(lambda: all(m.exists() for m in jobs.values()), "all started")

    if killed == "worker-and-warden":  # as a kill of the worker's process group would
        [warden] = wardens_of(worker_id)
        os.kill(warden, signal.SIGKILL)
    assert workers[0].stop(signal.SIGKILL) == -signal.SIGKILL
    if killed == "worker-and-warden":
        # Only the shells die with the worker (their death signal arrives a moment after it
        # is reaped): their sleeps live on, holding their locks.
        await until(lambda: len(processes_of(trial)) == 4, "the shells gone")
        await asyncio.sleep(0.5)
        assert len(processes_of(trial)) == 4
    else:
        await until(lambda: processes_of(trial) == [], "all of the killed worker's gone")

    workers.append(Worker(dsn, worker_id, *args))
    for job_id in jobs:
        await watcher.until(job_id, DONE)

    for job_id, mark in jobs.items():
        lines = mark.read_text().split()
        view = await watcher.until(job_id, DONE)
        started = [type(r.event).__name__ for r in await service.store.read_stream(job_id)]
        assert "overlap" not in lines, f"{job_id}: a retry ran beside its previous attempt"
        assert lines.count("done") == 1, f"{job_id}: completed {lines.count('done')} times"
        assert view.state is JobState.SUCCEEDED and view.exit_code == 0
        assert lines.count("start") == started.count("JobStarted")  # one run per attempt
        # Cut by the kill: started twice, failed as lost once, then done by the retry.
        assert started.count("JobStarted") == (1 if job_id in short else 2)
        if job_id not in short:
            assert "JobRetryScheduled" in started
    assert processes_of(trial) == []
    assert wardens_of(worker_id) != []  # the new life's
    assert workers[1].stop() == 0
    assert wardens_of(worker_id) == []
    assert list((default_state_dir() / "processes" / worker_id).glob("*")) == []


async def test_the_processes_of_a_killed_worker_die_with_it(
    service: JobService, pool: asyncpg.Pool, dsn: str, workers: list[Worker]
) -> None:
    trial = uuid.uuid4().hex
    worker_id = f"mayfly-{trial[:8]}"
    workers.append(Worker(dsn, worker_id, "--executor", "process"))
    await until_registered(pool, worker_id)
    for _ in range(2):
        command = ["sh", "-c", "sleep 300 & sleep 300 & wait"]
        await service.submit(spec(command=command, env={"TRIAL": trial}), META)
    await until(lambda: len(processes_of(trial)) == 6, "running")  # 2 shells, 4 sleeps
    assert len(wardens_of(worker_id)) == 1

    assert workers[0].stop(signal.SIGKILL) == -signal.SIGKILL
    await until(lambda: processes_of(trial) == [], "all gone with their worker")
    await until(lambda: wardens_of(worker_id) == [], "its warden gone")
