"""`serve --metrics-port` and `worker --metrics-port` (issue 19): each process serves its own
metrics on a listener of its own, without a token, as a user runs them."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid

import asyncpg

from tests.e2e.conftest import AUTH, Server, Worker, free_port
from tests.scraping import TEXT_FORMAT, Scrape
from tests.watching import JobWatcher

DONE = {"succeeded", "failed", "cancelled"}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Status, content type and body of a GET (an error status too)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def scrape(url: str) -> Scrape:
    """A scrape of `url`, waiting (60 s at most) for its listener to answer."""
    async with asyncio.timeout(60):
        while True:
            try:
                status, content_type, body = await asyncio.to_thread(get, url)
            except OSError:  # not listening yet
                await asyncio.sleep(0.1)
                continue
            assert status == 200 and content_type == TEXT_FORMAT, (status, body)
            return Scrape(body)


def submit(server: Server, n: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(n):
        body = json.dumps({"image": "x", "command": ["true"], "project": "default"}).encode()
        request = urllib.request.Request(
            f"{server.url}/api/v1/jobs", data=body, method="POST", headers=AUTH
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            ids.append(uuid.UUID(json.loads(resp.read())["id"]))
    return ids


async def test_server_and_worker_serve_their_own_metrics_on_their_own_port(
    dsn: str, pool: asyncpg.Pool, watcher: JobWatcher, workers: list[Worker]
) -> None:
    server_port, worker_port = free_port(), free_port()
    server = Server(
        "--database-url", dsn, "--no-scheduler", "--metrics-port", str(server_port)
    )  # fmt: skip
    workers.append(
        Worker(dsn, "measured", "--executor", "noop", "--metrics-port", str(worker_port))
    )
    ids = await asyncio.to_thread(submit, server, 5)
    for job_id in ids:
        await watcher.until(job_id, DONE)

    # The server's listener needs no token; its main address does (a server admin's).
    at_server = await scrape(f"http://127.0.0.1:{server_port}/metrics")
    status, _, _ = await asyncio.to_thread(get, f"{server.url}/metrics")
    assert status == 401
    status, _, body = await asyncio.to_thread(get, f"{server.url}/metrics", AUTH)
    assert status == 200
    assert Scrape(body).value("jobledger_jobs_submitted_total", project="default") == 5

    # Each process counts what it did: the server the submits, the worker the runs.
    assert at_server.value("jobledger_jobs_submitted_total", project="default") == 5
    assert at_server.value("jobledger_jobs_started_total", project="default") == 0
    assert at_server.value("jobledger_queue_depth", project="default") == 0
    at_worker = await scrape(f"http://127.0.0.1:{worker_port}/metrics")
    assert at_worker.value("jobledger_jobs_submitted_total", project="default") == 0
    assert at_worker.value("jobledger_jobs_started_total", project="default") == 5
    done = {"project": "default", "state": "succeeded", "reason": ""}
    assert at_worker.value("jobledger_jobs_finished_total", **done) == 5
    assert at_worker.value("jobledger_job_pickup_seconds_count", project="default") == 5
    assert at_worker.value("jobledger_executor_up", executor="noop") == 1
    assert at_worker.value("jobledger_db_pool_connections") >= 1
    # The queue is the server's to report: a worker's scrape does not read it.
    assert not at_worker.labelled("jobledger_queue_depth")
    status, _, body = await asyncio.to_thread(get, f"http://127.0.0.1:{worker_port}/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    # Only /metrics and /healthz there.
    status, _, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{worker_port}/api/v1/jobs")
    assert status == 404
    assert workers[0].stop() == 0 and server.stop() == 0
