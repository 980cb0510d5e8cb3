"""Output is never lost: not to a database restart or outage, not to a server stopped with
SIGTERM, not to a worker killed while its container prints (issue 13)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import JobState
from jobledger.projections import jobs as jobs_projection
from jobledger.projections.jobs import JobView
from jobledger.runtime.executor import Executor
from jobledger.runtime.process import ProcessExecutor
from jobledger.runtime.scheduler import Scheduler, WorkerConfig
from jobledger.service import JobService
from jobledger.store.db import DB_ERRORS
from jobledger.store.logs import LogLine, read_logs
from tests.docker_rig import containers
from tests.e2e.conftest import Server, Worker
from tests.factories import spec
from tests.faults.conftest import OwnPostgres

META = EventMeta(actor="test")
DONE = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def service(fault_service: JobService) -> JobService:
    return fault_service


@contextlib.asynccontextmanager
async def scheduler(
    service: JobService, dsn: str, executor: Executor | None = None
) -> AsyncIterator[Scheduler]:
    """A scheduler in this process whose lease outlasts the outages the tests make."""
    config = WorkerConfig(
        worker_id=f"w-{uuid.uuid4().hex[:8]}", poll_interval=1.0, heartbeat_interval=0.5,
        lease_seconds=60.0,
    )  # fmt: skip
    s = Scheduler(service, executor or ProcessExecutor(), config, dsn)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    try:
        async with asyncio.timeout(30):
            await s.ready.wait()
        yield s
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


async def until_state(
    pool: asyncpg.Pool, job_id: uuid.UUID, states: Collection[str], timeout: float = 60
) -> JobView:
    """The job's view once in one of `states`, asking through database outages."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(*DB_ERRORS):
                view = await jobs_projection.get(pool, job_id)
                if view is not None and view.state.value in states:
                    return view
            await asyncio.sleep(0.05)


async def until_stored(pool: asyncpg.Pool, job_id: uuid.UUID, lines: int) -> None:
    """Wait until at least `lines` lines of the job are stored."""
    async with asyncio.timeout(60):
        while (
            await pool.fetchval(
                "SELECT coalesce(max(last_seq), 0) FROM job_logs WHERE job_id = $1", job_id
            )
            < lines
        ):
            await asyncio.sleep(0.05)


async def all_lines(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[LogLine]:
    lines = await read_logs(pool, job_id, limit=1_000_000)
    assert [ln.seq for ln in lines] == list(range(1, len(lines) + 1))  # no gap, no repeat
    return lines


async def test_a_database_restart_mid_output_loses_no_line_and_fails_no_job(
    service: JobService, own_pg: OwnPostgres
) -> None:
    # 5,000 numbered lines over a few seconds; the database restarts in the middle of them.
    paced = "for j in $(seq 0 49); do seq $((j*100+1)) $((j*100+100)); sleep 0.05; done"
    async with scheduler(service, own_pg.dsn):
        view, _ = await service.submit(spec(command=["sh", "-c", paced]), META)
        await until_stored(service.pool, view.id, 300)
        await own_pg.restart(down_seconds=1.5)
        ended = await until_state(service.pool, view.id, DONE)
    assert ended.state is JobState.SUCCEEDED, ended
    lines = await all_lines(service.pool, view.id)
    assert [(ln.stream, ln.text) for ln in lines] == [("stdout", str(n)) for n in range(1, 5001)]


async def test_output_beyond_the_pipe_buffer_waits_for_the_database_and_then_flows(
    service: JobService, own_pg: OwnPostgres, tmp_path: Path
) -> None:
    # 7 MB of output, more than the sink holds (4 MiB) and the pipe (64 KiB) together,
    # printed while the database is down.
    line = "x" * 99
    script = f"while [ ! -e GO ]; do sleep 0.05; done; yes {line} | head -n 70000; touch DONE"
    async with scheduler(service, own_pg.dsn):
        view, _ = await service.submit(
            spec(command=["sh", "-c", script], workdir=str(tmp_path)), META
        )
        await until_state(service.pool, view.id, {"running"})
        await own_pg.stop()
        (tmp_path / "GO").touch()
        # Held back, not buffered without bound: the command cannot finish while nothing
        # can be stored.
        for _ in range(30):
            await asyncio.sleep(0.1)
            assert not (tmp_path / "DONE").exists()
        await own_pg.start()
        ended = await until_state(service.pool, view.id, DONE)
    assert ended.state is JobState.SUCCEEDED, ended
    assert (tmp_path / "DONE").exists()
    lines = await all_lines(service.pool, view.id)
    assert len(lines) == 70000 and {(ln.stream, ln.text) for ln in lines} == {("stdout", line)}


def numbered(first: int, last: int, burst: int = 50) -> str:
    """A script printing numbered lines on stdout (o1, o2, ...) and stderr (e1, e2, ...),
    pausing 20 ms every `burst` lines."""
    return (
        f"i={first - 1}; while [ $i -lt {last} ]; do i=$((i+1)); echo o$i; echo e$i >&2; "
        f"if [ $((i % {burst})) = 0 ]; then sleep 0.02; fi; done"
    )


def printed(container: str, before: datetime | None = None) -> list[tuple[str, str]]:
    """What a container printed (per Docker), as (stream, text), before a time if given."""
    out = subprocess.run(
        ["docker", "logs", "--timestamps", container], capture_output=True, text=True, check=True
    )
    lines = []
    for stream, text in (("stdout", out.stdout), ("stderr", out.stderr)):
        for row in text.splitlines():
            stamp, _, line = row.partition(" ")
            ts = datetime.fromisoformat(stamp[:26] + "+00:00")
            if before is None or ts < before:
                lines.append((stream, line))
    return lines


def prefixes(lines: list[LogLine]) -> tuple[int, int]:
    """How many numbered lines of each stream are stored, checking they are o1..oN and
    e1..eM exactly (in order, none twice, none missing)."""
    out = [ln.text for ln in lines if ln.stream == "stdout"]
    err = [ln.text for ln in lines if ln.stream == "stderr"]
    assert out == [f"o{n}" for n in range(1, len(out) + 1)]
    assert err == [f"e{n}" for n in range(1, len(err) + 1)]
    assert len(out) + len(err) == len(lines)  # nothing else, no system line
    return len(out), len(err)


async def container_of(job_id: uuid.UUID) -> str:
    async with asyncio.timeout(30):
        while not (found := containers(f"jobledger.job_id={job_id}")):
            await asyncio.sleep(0.1)
    return str(found[0]["ID"])


def remove_containers(worker_id: str) -> None:
    for c in containers(f"jobledger.worker={worker_id}"):
        subprocess.run(["docker", "rm", "-f", str(c["ID"])], capture_output=True, check=False)


async def test_sigterm_to_serve_stores_every_line_printed_before_it(
    service: JobService, own_pg: OwnPostgres, test_image: str
) -> None:
    worker_id = f"sigterm-{uuid.uuid4().hex[:8]}"
    server = Server("--database-url", own_pg.dsn, "--executor", "docker", "--worker-id", worker_id)
    try:
        view, _ = await service.submit(
            spec(image=test_image, command=["sh", "-c", numbered(1, 10**7, burst=1000)]), META
        )
        await until_stored(service.pool, view.id, 500)
        container = await container_of(view.id)
        stopped_at = datetime.now(UTC)
        assert await asyncio.to_thread(server.stop, signal.SIGTERM) == 0
        output = server.output()
        lines = await all_lines(service.pool, view.id)
        prefixes(lines)
        stored = {(ln.stream, ln.text) for ln in lines}
        before = printed(container, stopped_at)
        assert len(before) >= 500
        assert [ln for ln in before if ln not in stored] == []
        assert "pool is closed" not in output and "storing logs failed" not in output
        # Left running for the next life of the worker to adopt.
        assert containers(f"jobledger.job_id={view.id}")[0]["State"] == "running"
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        remove_containers(worker_id)


async def test_a_worker_adopting_its_container_stores_what_it_printed_meanwhile(
    service: JobService, own_pg: OwnPostgres, test_image: str
) -> None:
    worker_id = f"adopter-{uuid.uuid4().hex[:8]}"
    args = ("--executor", "docker", "--lease-seconds", "60")
    # 2,000 numbered lines on each stream, a pause until the test says go, 1,000 more.
    script = (
        f"{numbered(1, 2000)}; while [ ! -e /tmp/go ]; do sleep 0.05; done; {numbered(2001, 3000)}"
    )
    started: list[Worker] = []
    try:
        started.append(Worker(own_pg.dsn, worker_id, *args))
        view, _ = await service.submit(spec(image=test_image, command=["sh", "-c", script]), META)
        await until_stored(service.pool, view.id, 300)
        container = await container_of(view.id)
        assert started[0].stop(signal.SIGKILL) == -signal.SIGKILL
        # The container prints on with no worker reading it.
        async with asyncio.timeout(60):
            while ("stderr", "e2000") not in printed(container):
                await asyncio.sleep(0.1)
        started.append(Worker(own_pg.dsn, worker_id, *args))
        await until_stored(service.pool, view.id, 4000)  # the missed lines, fetched
        lines = await all_lines(service.pool, view.id)
        assert prefixes(lines) == (2000, 2000)
        assert sorted((ln.stream, ln.text) for ln in lines) == sorted(printed(container))
        # Then live again, to the end.
        subprocess.run(["docker", "exec", container, "touch", "/tmp/go"], check=True)
        ended = await until_state(service.pool, view.id, DONE)
        assert ended.state is JobState.SUCCEEDED, ended
        assert prefixes(await all_lines(service.pool, view.id)) == (3000, 3000)
        assert started[1].stop() == 0
    finally:
        for w in started:
            w.stop(signal.SIGKILL)
        remove_containers(worker_id)
