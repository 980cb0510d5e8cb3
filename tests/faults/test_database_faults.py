"""Database connection loss and restarts: the scheduler, the lease loop, the jobs' own tasks
and the API carry on when PostgreSQL cuts connections or restarts, and nothing ends stuck,
lost, run twice or answered with a 5xx other than 503 + Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from jobledger.api.app import create_app
from jobledger.domain.events import EventMeta
from jobledger.runtime.executor import Executor
from jobledger.runtime.noop import NoopExecutor
from jobledger.runtime.process import ProcessExecutor
from jobledger.runtime.scheduler import Scheduler, WorkerConfig
from jobledger.service import JobService
from jobledger.store.db import DB_ERRORS
from tests.conftest import ADMIN_TOKEN
from tests.e2e.conftest import AUTH, Server
from tests.factories import spec
from tests.faults.conftest import OwnPostgres

META = EventMeta(actor="test")
TERMINAL = ("succeeded", "failed", "cancelled")


StartScheduler = Callable[..., Awaitable[Scheduler]]


@pytest.fixture
async def start_scheduler(
    fault_service: JobService, own_pg: OwnPostgres
) -> AsyncIterator[StartScheduler]:
    """Schedulers in this process on the test's own cluster, stopped at the end."""
    running: list[tuple[asyncio.Event, asyncio.Task[None], Executor]] = []

    async def start(executor: Executor | None = None, **config: object) -> Scheduler:
        executor = executor or NoopExecutor()
        settings: dict[str, object] = {
            "worker_id": f"w-{uuid.uuid4().hex[:8]}",
            "poll_interval": 1.0,
            "heartbeat_interval": 0.5,
            "lease_seconds": 5.0,
        }
        settings.update(config)
        scheduler = Scheduler(fault_service, executor, WorkerConfig(**settings), own_pg.dsn)  # type: ignore[arg-type]
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop))
        running.append((stop, task, executor))
        async with asyncio.timeout(30):
            while not scheduler.ready.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        return scheduler

    yield start
    for stop, _, _ in running:
        stop.set()
    results = await asyncio.gather(*(t for _, t, _ in running), return_exceptions=True)
    for _, _, executor in running:
        await executor.close()
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _query(own_pg: OwnPostgres, sql: str, *args: object) -> list[asyncpg.Record]:
    """A query on a connection of its own, retried while the database is away."""
    async with asyncio.timeout(30):
        while True:
            try:
                conn = await asyncpg.connect(own_pg.dsn)
                try:
                    return await conn.fetch(sql, *args)
                finally:
                    await conn.close()
            except DB_ERRORS:
                await asyncio.sleep(0.1)


async def _states(own_pg: OwnPostgres) -> dict[str, int]:
    rows = await _query(own_pg, "SELECT state, count(*) AS n FROM jobs GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def _until_all_ended(own_pg: OwnPostgres, total: int, seconds: float) -> dict[str, int]:
    """The jobs' states once all `total` have ended; fails after `seconds` without it."""
    states: dict[str, int] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while sum(states.get(s, 0) for s in TERMINAL) < total:
                await asyncio.sleep(0.2)
                states = await _states(own_pg)
    return states


async def _event_counts(own_pg: OwnPostgres) -> dict[tuple[str, ...], int]:
    """How many streams have each sequence of event types."""
    rows = await _query(
        own_pg,
        "SELECT array_agg(type ORDER BY version) AS types FROM events GROUP BY stream_id",
    )
    counts: dict[tuple[str, ...], int] = {}
    for r in rows:
        key = tuple(r["types"])
        counts[key] = counts.get(key, 0) + 1
    return counts


async def test_a_worker_drains_its_queue_while_its_connections_are_cut(
    own_pg: OwnPostgres, fault_service: JobService, start_scheduler: StartScheduler
) -> None:
    total = 300
    for _ in range(total // 100):
        await fault_service.submit_batch([spec() for _ in range(100)], META)
    await start_scheduler(capacity=10)
    for _ in range(6):
        # Cut every connection (the pool's and the listener's) while jobs start and end.
        await asyncio.sleep(0.15)
        await own_pg.terminate()
    states = await _until_all_ended(own_pg, total, 30)
    assert states == {"succeeded": total}
    assert await _event_counts(own_pg) == {("JobSubmitted", "JobStarted", "JobSucceeded"): total}


async def test_jobs_run_on_across_a_restart_longer_than_the_lease(
    own_pg: OwnPostgres, fault_service: JobService, start_scheduler: StartScheduler
) -> None:
    # Worker `b` runs the jobs; worker `a` reaps often. The database is down for longer than
    # b's lease, so b's heartbeat is stale when it returns: that outage is not b's fault,
    # and its jobs, whose commands go on, must end as they end, not as worker_lost.
    b = await start_scheduler(
        ProcessExecutor(), tags=["b"], heartbeat_interval=1.0, lease_seconds=3.0
    )
    await start_scheduler(heartbeat_interval=0.2, lease_seconds=3.0)
    jobs = [
        (await fault_service.submit(spec(command=["sleep", "6"], tags=["b"]), META))[0].id
        for _ in range(2)
    ]
    async with asyncio.timeout(10):
        while (await _states(own_pg)).get("running", 0) < len(jobs):
            await asyncio.sleep(0.1)
    await own_pg.restart(down_seconds=4.0)
    states = await _until_all_ended(own_pg, len(jobs), 20)
    assert states == {"succeeded": len(jobs)}
    rows = await _query(
        own_pg, "SELECT worker_id, attempt FROM jobs WHERE id = ANY($1::uuid[])", jobs
    )
    assert {(r["worker_id"], r["attempt"]) for r in rows} == {(b.config.worker_id, 1)}


async def test_submits_through_restarts_get_a_truthful_2xx_or_a_503(
    own_pg: OwnPostgres, fault_service: JobService
) -> None:
    app = create_app(fault_service, own_pg.dsn, admin_token=ADMIN_TOKEN)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answers: dict[str, tuple[int, str | None, dict[str, object]]] = {}
    done = asyncio.Event()

    async def client_loop(client: TestClient, who: int) -> None:  # type: ignore[type-arg]
        n = 0
        while not done.is_set():
            n += 1
            tag = f"c{who}-{n}"
            body = {"image": "busybox", "command": ["true"], "labels": {"n": tag}}
            r = await client.post("/api/v1/jobs", json=body)
            answers[tag] = (r.status, r.headers.get("Retry-After"), await r.json())
            if r.status == 503:
                await asyncio.sleep(0.05)

    async with TestClient(TestServer(app), headers=headers) as client:
        clients = [asyncio.create_task(client_loop(client, i)) for i in range(8)]
        await asyncio.sleep(0.5)
        await own_pg.terminate()
        await asyncio.sleep(0.3)
        await own_pg.restart(down_seconds=0.5)
        await asyncio.sleep(0.5)
        await own_pg.terminate()
        await asyncio.sleep(0.3)
        done.set()
        await asyncio.gather(*clients)

        # While the database is away: /healthz and the API say 503 with Retry-After.
        await own_pg.stop()
        health = await client.get("/healthz")
        assert health.status == 503 and health.headers["Retry-After"]
        r = await client.post("/api/v1/jobs", json={"image": "busybox"})
        assert r.status == 503 and r.headers["Retry-After"]
        assert (await r.json())["error"]["code"] == "unavailable"
        await own_pg.start()
        async with asyncio.timeout(10):
            while (await client.get("/healthz")).status != 200:
                await asyncio.sleep(0.1)
        assert (await client.post("/api/v1/jobs", json={"image": "busybox"})).status == 201

    statuses = {status for status, _, _ in answers.values()}
    assert statuses <= {201, 503}, statuses
    assert 201 in statuses and 503 in statuses  # the faults did hit requests
    assert all(retry for status, retry, _ in answers.values() if status == 503)
    rows = await _query(own_pg, "SELECT id, labels->>'n' AS n FROM jobs WHERE labels ? 'n'")
    existing = {r["n"]: str(r["id"]) for r in rows}
    created = {tag: body["id"] for tag, (status, _, body) in answers.items() if status == 201}
    # Every 201 names a job that exists, and every job that exists got its 201.
    assert created == existing


async def test_serve_stays_up_through_restarts_and_its_running_job_succeeds(
    own_pg: OwnPostgres,
) -> None:
    server = await asyncio.to_thread(
        Server, "--database-url", own_pg.dsn, "--executor", "process",
        "--heartbeat-interval", "0.5", "--lease-seconds", "3", "--poll-interval", "1",
    )  # fmt: skip
    try:
        async with ClientSession(server.url, headers=AUTH) as http:
            r = await http.post("/api/v1/jobs", json={"image": "x", "command": ["sleep", "3"]})
            assert r.status == 201, await r.text()
            job = (await r.json())["id"]
            async with asyncio.timeout(10):
                while (await (await http.get(f"/api/v1/jobs/{job}")).json())["state"] != "running":
                    await asyncio.sleep(0.1)
            statuses: list[int] = []
            done = asyncio.Event()

            async def submit_loop() -> None:
                while not done.is_set():
                    r = await http.post("/api/v1/jobs", json={"image": "x", "command": ["true"]})
                    statuses.append(r.status)
                    if r.status == 503:
                        assert r.headers["Retry-After"]
                        await asyncio.sleep(0.05)

            load = [asyncio.create_task(submit_loop()) for _ in range(4)]
            for _ in range(3):
                await asyncio.sleep(0.3)
                await own_pg.terminate()
            await own_pg.restart(down_seconds=1.0)
            await asyncio.sleep(0.3)
            await own_pg.terminate()
            await own_pg.restart()
            await asyncio.sleep(0.3)
            done.set()
            await asyncio.gather(*load)
            assert set(statuses) <= {201, 503} and 201 in statuses, statuses
            assert server.proc.poll() is None, server.output()
            async with asyncio.timeout(20):
                while True:
                    r = await http.get(f"/api/v1/jobs/{job}")
                    assert r.status in (200, 503), await r.text()
                    if r.status == 200 and (view := await r.json())["state"] in TERMINAL:
                        break
                    await asyncio.sleep(0.2)
            assert view["state"] == "succeeded", view
            assert view["attempt"] == 1
            states = await _until_all_ended(own_pg, statuses.count(201) + 1, 20)
            assert states == {"succeeded": statuses.count(201) + 1}
            assert (await http.get("/healthz")).status == 200
        assert server.proc.poll() is None, server.output()
        assert await asyncio.to_thread(server.stop) == 0, server.output()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            await asyncio.to_thread(server.proc.wait, 30)
