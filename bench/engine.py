"""The engine without containers: how fast jobs go in (one at a time, 16 clients, batches
of 500), how fast one worker drains a queue with the no-op executor, how soon an idle
worker picks a job up, what the server weighs in memory, and the WAL each job costs.

    .venv/bin/python bench/engine.py [--serial 1000] [--concurrent 4000] [--batch-jobs 20000]
                                     [--drain 10000] [--pickup 200]

Starts `jobledger serve --no-scheduler` (the API) on an embedded PostgreSQL (defaults,
fsync on) and, for the drain and pickup, a separate `jobledger worker --executor noop
--capacity 10`. The clients run in this process, over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import msgspec
from harness import (
    ADMIN_TOKEN,
    IMAGE,
    ROOT,
    die_with_parent,
    machine,
    rss_bytes,
    server,
    summary,
    wal_lsn,
)

from jobledger.domain.events import EventMeta, JobSubmitted, encode_event
from jobledger.domain.specs import JobSpec
from jobledger.projections.jobs import QUERIES as JOBS_QUERIES
from jobledger.service import JobService
from jobledger.store.db import create_pool
from jobledger.store.eventstore import EventStore
from jobledger.store.queries import QUERIES as STORE_QUERIES

#: The submit workloads' jobs wait for a far-off time, so the drain and pickup workloads
#: find only their own jobs runnable.
SPEC = {"image": IMAGE, "command": ["true"], "scheduled_for": "2099-01-01T00:00:00Z"}
RUNNABLE = {"image": IMAGE, "command": ["true"]}


async def post(http: aiohttp.ClientSession, url: str, body: bytes, latencies: list[float]) -> None:
    """One POST of a JSON body that must create (201); its latency is appended."""
    t0 = time.perf_counter()
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 201, await r.text()
        await r.read()
    latencies.append(time.perf_counter() - t0)


async def submit_clients(
    http: aiohttp.ClientSession, url: str, n: int, clients: int
) -> dict[str, Any]:
    """`n` single submits by `clients` clients at once, each one call after another."""
    latencies: list[float] = []
    body = json.dumps(SPEC).encode()

    async def client(count: int) -> None:
        for _ in range(count):
            await post(http, f"{url}/api/v1/jobs", body, latencies)

    started = time.perf_counter()
    await asyncio.gather(*(client(n // clients) for _ in range(clients)))
    seconds = time.perf_counter() - started
    done = clients * (n // clients)
    return {
        "jobs": done,
        "clients": clients,
        "jobs_per_second": round(done / seconds),
        "latency_ms": summary(latencies),
    }


async def submit_batches(
    http: aiohttp.ClientSession, url: str, n: int, size: int, spec: dict[str, Any] = SPEC
) -> dict[str, Any]:
    body = json.dumps({"jobs": [spec] * size}).encode()
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(n // size):
        await post(http, f"{url}/api/v1/jobs:batch", body, latencies)
    seconds = time.perf_counter() - started
    done = size * (n // size)
    return {
        "jobs": done,
        "batch_size": size,
        "jobs_per_second": round(done / seconds),
        "batch_latency_ms": summary(latencies),
    }


#: The definition the submit-by-reference workload runs: an environment under it, two
#: parameters, placeholders in its command and env.
DEFINITION = {
    "environment": "bench",
    "command": ["echo", "{{params.day}}", "{{params.rows}}"],
    "env": {"DAY": "{{params.day}}"},
    "params": [
        {"name": "day", "required": True},
        {"name": "rows", "type": "integer", "default": 10},
    ],
}


async def submit_by_definition(http: aiohttp.ClientSession, url: str, n: int) -> dict[str, Any]:
    """Submit latency by reference to a definition (resolved on the server: definition and
    environment read from their streams, params checked, placeholders filled) against a
    plain spec, one client, the two kinds of call alternating so both see the same database."""
    base = f"{url}/api/v1/projects/default"
    for path, body in ((f"{base}/environments/bench", {"image": IMAGE, "env": {"A": "1"}}),
                       (f"{base}/definitions/bench", DEFINITION)):  # fmt: skip
        async with http.put(path, json=body) as r:
            assert r.status in (200, 201), await r.text()
    by_ref = json.dumps({
        "definition": "bench", "params": {"day": "2030-01-02", "rows": 5},
        "scheduled_for": "2099-01-01T00:00:00Z",
    }).encode()  # fmt: skip
    plain = json.dumps(SPEC).encode()
    ref_latencies: list[float] = []
    plain_latencies: list[float] = []
    for _ in range(n):
        await post(http, f"{url}/api/v1/jobs", by_ref, ref_latencies)
        await post(http, f"{url}/api/v1/jobs", plain, plain_latencies)
    return {
        "jobs": 2 * n,
        "clients": 1,
        "by_definition_latency_ms": summary(ref_latencies),
        "plain_latency_ms": summary(plain_latencies),
    }


async def batch_floor(dsn: str, size: int = 500, rounds: int = 8) -> dict[str, Any]:
    """The database's own floor for a batch submit: the two statements of the append (events
    with their hash chain; the `jobs` rows and the NOTIFY) and the commit, with every
    argument built beforehand, so no HTTP, decoding or folding is in the figure."""
    pool = await create_pool(dsn)
    try:
        service = JobService(EventStore(pool))
        spec = JobSpec(
            image=IMAGE, command=["true"], scheduled_for=datetime(2099, 1, 1, tzinfo=UTC)
        )
        [(view, _)] = await service.submit_batch([spec], EventMeta(actor="bench"))
        data = encode_event(JobSubmitted(spec=spec)).decode()
        meta = msgspec.json.encode(EventMeta(actor="bench")).decode()
        times: dict[str, list[float]] = {"events": [], "rows": [], "commit": []}
        for _ in range(rounds):
            ids = [uuid.uuid4() for _ in range(size)]
            rows = msgspec.json.encode([msgspec.structs.replace(view, id=i) for i in ids]).decode()
            events = (ids, [uuid.uuid4() for _ in ids], [1] * size, ["JobSubmitted"] * size,
                      [1] * size, [data] * size, [meta] * size, ["job"] * size)  # fmt: skip
            async with pool.acquire() as conn:
                await conn.execute("BEGIN")
                t0 = time.perf_counter()
                await conn.fetch(STORE_QUERIES["append_events"], *events)
                t1 = time.perf_counter()
                # New rows, a channel no one hears, no transitions, no queue facts.
                await conn.fetchrow(JOBS_QUERIES["write_jobs"], rows, "bench", "{}", "[]", None, [])
                t2 = time.perf_counter()
                await conn.execute("COMMIT")
                t3 = time.perf_counter()
            times["events"].append(t1 - t0)
            times["rows"].append(t2 - t1)
            times["commit"].append(t3 - t2)
    finally:
        await pool.close()
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "jobs_per_batch": size,
        "statement_ms": {k: round(v * 1000, 2) for k, v in medians.items()},
        "jobs_per_second": round(size / sum(medians.values())),
    }


def start_worker(dsn: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobledger", "--log-level", "warning", "worker",
         "--database-url", dsn, "--executor", "noop", "--capacity", "10",
         "--worker-id", "bench", *args],
        cwd=ROOT, env={**os.environ, "JOBLEDGER_LOG_FORMAT": "json"},
        preexec_fn=die_with_parent,
    )  # fmt: skip


async def drain(conn: asyncpg.Connection, dsn: str, n: int) -> dict[str, Any]:
    """`n` queued jobs (already submitted) run to success by one worker; the rate counts
    from the first JobStarted to the last JobSucceeded (database clock)."""
    wal_before = await wal_lsn(conn)
    worker = start_worker(dsn)
    peak_rss = 0
    done = "SELECT count(*) FROM jobs WHERE state = 'succeeded'"
    try:
        while await conn.fetchval(done) < n:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}")
            peak_rss = max(peak_rss, rss_bytes(worker.pid))
            await asyncio.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    wal = await wal_lsn(conn) - wal_before
    first, last = await conn.fetchrow(
        "SELECT min(recorded_at) FILTER (WHERE type = 'JobStarted'),"
        "       max(recorded_at) FILTER (WHERE type = 'JobSucceeded') FROM events"
    )
    seconds = (last - first).total_seconds()
    return {
        "jobs": n,
        "worker_capacity": 10,
        "seconds": round(seconds, 2),
        "jobs_per_second": round(n / seconds),
        "worker_peak_rss_bytes": peak_rss,
        "wal_bytes_per_job_run": round(wal / n),
    }


async def pickup(
    http: aiohttp.ClientSession, url: str, conn: asyncpg.Connection, dsn: str, n: int
) -> dict[str, Any]:
    """One job at a time to an idle worker: from the job's JobSubmitted (the submit's
    transaction) to its JobStarted (the claim, right before the executor gets it), both
    stamped by the database's clock."""
    worker = start_worker(dsn)
    try:
        await asyncio.sleep(3)  # the worker is up and listening
        ids = []
        for _ in range(n):
            async with http.post(f"{url}/api/v1/jobs", json=RUNNABLE) as r:
                ids.append((await r.json())["id"])
            state = "SELECT state FROM jobs WHERE id = $1::uuid"
            while await conn.fetchval(state, ids[-1]) == "queued":  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.02)  # idle again
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    rows = await conn.fetch(
        "SELECT extract(epoch FROM s.recorded_at - q.recorded_at)::float8 AS lag "
        "FROM events q JOIN events s ON s.stream_id = q.stream_id AND s.type = 'JobStarted' "
        "WHERE q.type = 'JobSubmitted' AND q.stream_id = ANY($1::uuid[])",
        ids,
    )
    return {"samples": len(rows), "queued_to_started_ms": summary([r["lag"] for r in rows])}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch-jobs", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--drain", type=int, default=10000)
    parser.add_argument("--pickup", type=int, default=200)
    parser.add_argument("--by-definition", type=int, default=500)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    connector = aiohttp.TCPConnector(limit=args.clients)
    report: dict[str, Any] = {"benchmark": "engine"}
    async with (
        server("--no-scheduler") as served,
        aiohttp.ClientSession(headers=headers, connector=connector) as http,
    ):
        conn = await asyncpg.connect(served.dsn)
        report["server_rss_idle_bytes"] = rss_bytes(served.pid)
        await submit_clients(http, served.url, 50, 1)  # warm up
        wal0 = await wal_lsn(conn)
        report["submit_serial"] = await submit_clients(http, served.url, args.serial, 1)
        report["wal_bytes_per_job_submitted"] = round((await wal_lsn(conn) - wal0) / args.serial)
        report["submit_by_definition"] = await submit_by_definition(
            http, served.url, args.by_definition
        )
        report["submit_concurrent"] = await submit_clients(
            http, served.url, args.concurrent, args.clients
        )
        wal0 = await wal_lsn(conn)
        report["submit_batch"] = await submit_batches(
            http, served.url, args.batch_jobs, args.batch_size
        )
        batched = report["submit_batch"]["jobs"]
        report["wal_bytes_per_job_submitted_in_batches"] = round(
            (await wal_lsn(conn) - wal0) / batched
        )
        report["server_rss_after_submits_bytes"] = rss_bytes(served.pid)
        report["database_floor_of_a_batch"] = await batch_floor(served.dsn)
        await submit_batches(http, served.url, args.drain, args.batch_size, RUNNABLE)
        report["drain"] = await drain(conn, served.dsn, args.drain)
        report["pickup"] = await pickup(http, served.url, conn, served.dsn, args.pickup)
        await conn.close()
    report["machine"] = machine()
    print(json.dumps(report, indent=2))
    print(
        f"submit: serial {report['submit_serial']['jobs_per_second']}/s, "
        f"{args.clients} clients {report['submit_concurrent']['jobs_per_second']}/s, "
        f"batches {report['submit_batch']['jobs_per_second']}/s (database floor "
        f"{report['database_floor_of_a_batch']['jobs_per_second']}/s); drain "
        f"{report['drain']['jobs_per_second']}/s; pickup p50 "
        f"{report['pickup']['queued_to_started_ms']['median']} ms",
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main())
