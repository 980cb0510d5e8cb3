"""`GET /metrics` on the API's address (issue 19): a server admin's token, Prometheus's text
format, and the counts and gauges the API moves (submits, cancels, the queue, rate limits,
WebSockets)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.service import JobService
from tests.api.test_access_api import auth, project_with_accounts
from tests.scraping import TEXT_FORMAT, Scrape

Client = TestClient[web.Request, web.Application]  # type: ignore[type-arg]


async def scrape(client: Client) -> Scrape:
    resp = await client.get("/metrics")  # the test client sends the server admin's token
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == TEXT_FORMAT
    return Scrape(await resp.text())


async def submit(client: Client, project: str, **extra: Any) -> dict[str, Any]:
    body = {"image": "x", "command": ["true"], "project": project, **extra}
    resp = await client.post("/api/v1/jobs", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_metrics_need_a_server_admins_token(client: Client) -> None:
    tokens = await project_with_accounts(client, "observed")
    resp = await client.get("/metrics", headers={"Authorization": ""})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/metrics", headers=auth("jl_not_a_token"))
    assert resp.status == 401
    # Even a project's admin: the metrics cover every project.
    for role in ("viewer", "admin"):
        resp = await client.get("/metrics", headers=auth(tokens[role]))
        assert resp.status == 403, role
        assert (await resp.json())["error"]["code"] == "forbidden"
    got = await scrape(client)
    assert got.type_of("jobledger_jobs_submitted") == "counter"
    assert got.type_of("jobledger_job_pickup_seconds") == "histogram"
    # The process's database pool (the test pool: at most 20 connections).
    assert got.value("jobledger_db_pool_max_connections") == 20
    assert 1 <= got.value("jobledger_db_pool_connections") <= 20
    assert got.value("jobledger_db_pool_idle_connections") <= got.value(
        "jobledger_db_pool_connections"
    )
    # Not an API operation: not in the OpenAPI document.
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert "/metrics" not in doc["paths"]


async def test_submits_cancels_and_the_queue(client: Client, pool: asyncpg.Pool) -> None:
    for name in ("queued-here", "idle"):
        assert (await client.post("/api/v1/projects", json={"name": name})).status == 201
    before = await scrape(client)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    jobs = [await submit(client, "queued-here") for _ in range(3)]
    await submit(client, "queued-here", scheduled_for=later)
    batch = await client.post(
        "/api/v1/jobs:batch",
        json={"jobs": [{"image": "x", "command": ["true"], "project": "queued-here"}] * 2},
    )
    assert batch.status == 201
    # The oldest due job waited since its submit: make that an hour ago.
    await pool.execute(
        "UPDATE jobs SET updated_at = updated_at - interval '1 hour' WHERE id = $1",
        jobs[0]["id"],
    )
    cancel = await client.post(f"/api/v1/jobs/{jobs[1]['id']}/cancel", json={})
    assert cancel.status == 200, await cancel.text()

    got = await scrape(client)
    submitted = "jobledger_jobs_submitted_total"
    assert (
        got.value(submitted, project="queued-here") - before.value(submitted, project="queued-here")
        == 6
    )
    finished = {"project": "queued-here", "state": "cancelled", "reason": ""}
    assert got.value("jobledger_jobs_finished_total", **finished) == 1
    # A queued job's cancel ended no run: nothing observed.
    run = {"project": "queued-here", "state": "cancelled"}
    assert got.value("jobledger_job_run_seconds_count", **run) == 0
    assert got.value("jobledger_jobs_started_total", project="queued-here") == 0
    # Six submitted, one cancelled, one waits for its time.
    assert got.value("jobledger_queue_depth", project="queued-here") == 4
    assert got.value("jobledger_queue_scheduled", project="queued-here") == 1
    assert 3600 <= got.value("jobledger_queue_oldest_wait_seconds", project="queued-here") < 3700
    # Every project is listed, 0 when nothing waits; no oldest wait then.
    assert got.has("jobledger_queue_depth", project="idle")
    assert got.value("jobledger_queue_depth", project="idle") == 0
    assert not got.has("jobledger_queue_oldest_wait_seconds", project="idle")
    assert 0 < got.value("jobledger_metrics_queue_query_seconds") < 5


async def test_a_project_that_empties_reports_zero_not_its_old_depth(client: Client) -> None:
    assert (await client.post("/api/v1/projects", json={"name": "emptied"})).status == 201
    job = await submit(client, "emptied")
    assert (await scrape(client)).value("jobledger_queue_depth", project="emptied") == 1
    assert (await client.post(f"/api/v1/jobs/{job['id']}/cancel", json={})).status == 200
    got = await scrape(client)
    assert got.value("jobledger_queue_depth", project="emptied") == 0
    assert not got.has("jobledger_queue_oldest_wait_seconds", project="emptied")


async def test_rate_limit_refusals_are_counted(client: Client) -> None:
    assert (await client.post("/api/v1/projects", json={"name": "hasty"})).status == 201
    limits = {"submit_rate": 0.001, "submit_burst": 1}
    assert (await client.put("/api/v1/projects/hasty/limits", json=limits)).status == 200
    await submit(client, "hasty")
    for _ in range(2):
        resp = await client.post(
            "/api/v1/jobs", json={"image": "x", "command": ["true"], "project": "hasty"}
        )
        assert resp.status == 429
    got = await scrape(client)
    assert got.value("jobledger_submits_rate_limited_total", project="hasty") == 2
    assert got.value("jobledger_jobs_submitted_total", project="hasty") == 1


async def sockets(client: Client, kind: str, want: float) -> None:
    """Until the scrape counts `want` open WebSockets of `kind` (a close is seen by the
    server a moment after the client's)."""
    async with asyncio.timeout(10):
        while (await scrape(client)).value("jobledger_websocket_clients", socket=kind) != want:
            await asyncio.sleep(0.05)


async def test_websocket_clients_are_a_gauge(client: Client, service: JobService) -> None:
    job = await submit(client, "default")
    async with (
        client.ws_connect("/api/v1/jobs/watch") as watch,
        client.ws_connect(f"/api/v1/jobs/{job['id']}/logs/ws") as logs,
    ):
        assert (await watch.receive_json())["type"] == "hello"
        await sockets(client, "jobs_watch", 1)
        await sockets(client, "logs", 1)
        async with client.ws_connect("/api/v1/jobs/watch") as again:
            await again.receive_json()
            await sockets(client, "jobs_watch", 2)
        await sockets(client, "jobs_watch", 1)
        await logs.close()
        await sockets(client, "logs", 0)
        await watch.close()
    await sockets(client, "jobs_watch", 0)


async def test_the_queue_query_stays_cheap_with_a_long_queue(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    """The scrape's one query over the queue, with 20,000 queued jobs in 20 projects: what
    it costs is reported (README "Metrics"); here only that it is right."""
    names = [f"p{n:02}" for n in range(20)]
    await pool.executemany(
        "INSERT INTO projects (name, max_running_jobs) VALUES ($1, 10)", [(n,) for n in names]
    )
    # Straight into the projection: the query reads only `jobs`.
    await pool.execute(
        """INSERT INTO jobs (id, project, state, spec, priority, labels, tags, submitted_by,
                             attempt, created_at, updated_at, version, last_position)
           SELECT gen_random_uuid(), 'p' || lpad((n % 20)::text, 2, '0'), 'queued', '{}', 0,
                  '{}', '{}', 'test', 1, clock_timestamp(), clock_timestamp(), 1, n
           FROM generate_series(1, 20000) AS n"""
    )
    await pool.execute("ANALYZE jobs")
    started = time.perf_counter()
    got = await scrape(client)
    took = time.perf_counter() - started
    assert {got.value("jobledger_queue_depth", project=n) for n in names} == {1000}
    print(
        f"\nscrape with 20,000 queued jobs: {took * 1000:.1f} ms, of which the queue query "
        f"{got.value('jobledger_metrics_queue_query_seconds') * 1000:.1f} ms"
    )
