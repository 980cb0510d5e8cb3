"""`jobledger worker` processes: many share one database and run each job exactly once; a
worker killed with SIGKILL mid-job adopts its containers when it comes back (I8)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid

import asyncpg

from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import JobState
from jobledger.service import JobService
from tests.docker_rig import containers, left_behind
from tests.e2e.conftest import Worker
from tests.factories import spec
from tests.watching import JobWatcher

META = EventMeta(actor="test")
DONE = {"succeeded", "failed", "cancelled"}


async def until_registered(pool: asyncpg.Pool, *ids: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while await pool.fetchval(
            "SELECT count(*) FROM workers WHERE id = ANY($1) AND stopped_at IS NULL "
            "AND heartbeat_at > clock_timestamp() - interval '2 seconds'",
            list(ids),
        ) < len(ids):
            await asyncio.sleep(0.1)


async def test_two_workers_run_each_job_exactly_once(
    service: JobService, pool: asyncpg.Pool, dsn: str, watcher: JobWatcher, workers: list[Worker]
) -> None:
    workers += [
        Worker(dsn, f"twin-{n}", "--executor", "process", "--capacity", "4") for n in (1, 2)
    ]
    await until_registered(pool, "twin-1", "twin-2")
    ids = [(await service.submit(spec(command=["true"]), META))[0].id for _ in range(300)]
    for job_id in ids:
        await watcher.until(job_id, DONE, timeout=120)
    rows = await pool.fetch(
        "SELECT stream_id, count(*) AS n FROM events WHERE type = 'JobStarted' GROUP BY stream_id"
    )
    assert sorted(r["stream_id"] for r in rows) == sorted(ids)
    assert {r["n"] for r in rows} == {1}  # started exactly once each
    states = await pool.fetch("SELECT state, worker_id, count(*) AS n FROM jobs GROUP BY 1, 2")
    assert {r["state"] for r in states} == {"succeeded"}
    per_worker = {r["worker_id"]: r["n"] for r in states}
    assert set(per_worker) == {"twin-1", "twin-2"} and sum(per_worker.values()) == 300
    for w in workers:
        assert w.stop() == 0


async def container_of(job_id: uuid.UUID, timeout: float = 30) -> str:
    async with asyncio.timeout(timeout):
        while not (found := containers(f"jobledger.job_id={job_id}")):
            await asyncio.sleep(0.1)
    return str(found[0]["ID"])


async def test_a_killed_worker_adopts_its_containers_when_it_restarts(
    service: JobService, dsn: str, watcher: JobWatcher, workers: list[Worker], test_image: str
) -> None:
    args = ("--executor", "docker", "--lease-seconds", "60")
    workers.append(Worker(dsn, "phoenix", *args))

    async def submit(command: str) -> uuid.UUID:
        view, _ = await service.submit(spec(image=test_image, command=["sh", "-c", command]), META)
        return view.id

    still_running = await submit("sleep 3; exit 7")
    ends_meanwhile = await submit("sleep 0.5; exit 5")
    vanishes = await submit("sleep 60")
    refs = {}
    for job_id in (still_running, ends_meanwhile, vanishes):
        await watcher.until(job_id, {"running"}, timeout=60)
        refs[job_id] = await container_of(job_id)

    assert workers[0].stop(signal.SIGKILL) == -signal.SIGKILL
    subprocess.run(["docker", "rm", "-f", refs[vanishes]], check=True, capture_output=True)
    subprocess.run(
        ["docker", "wait", refs[ends_meanwhile]], check=True, capture_output=True, timeout=30
    )

    workers.append(Worker(dsn, "phoenix", *args))
    adopted = await watcher.until(still_running, DONE, timeout=60)
    assert adopted.state is JobState.FAILED and adopted.exit_code == 7  # the real exit code
    assert adopted.failure_reason is FailureReason.EXIT_CODE
    exited = await watcher.until(ends_meanwhile, DONE, timeout=60)
    assert exited.exit_code == 5 and exited.failure_reason is FailureReason.EXIT_CODE
    gone = await watcher.until(vanishes, DONE, timeout=60)
    assert gone.failure_reason is FailureReason.WORKER_LOST and "gone" in (gone.message or "")
    for job_id in (still_running, ends_meanwhile, vanishes):
        events = [type(r.event).__name__ for r in await service.store.read_stream(job_id)]
        assert events.count("JobStarted") == 1  # one attempt, followed across the crash
    assert await left_behind("jobledger.worker=phoenix") == []
    assert workers[1].stop() == 0
