"""Floors under issue 18's targets, measured in the run that measures the targets
(bench/peers.py calls `measure`; alone: `.venv/bin/python bench/floors.py`):

- `http`: what aiohttp and asyncpg cost the API server before jobledger does anything, a
  bare aiohttp app (floor_server.py) answering the same POST of the same body from the
  same client as the submit workload: `echo` decodes the body and answers 201 with JSON;
  `insert` also INSERTs one row of it (autocommit, one round trip). Server CPU ms and call
  p50 per request.
- `writes`: what PostgreSQL spends on one submit's rows, one per transaction as a single
  submit writes them, from the backend's own CPU (/proc) and the WAL position: the real
  append (`events` with its hash-chain trigger and indexes, the `jobs` row with its
  indexes), then copies of the two tables with fewer parts: without the trigger, then
  without any index but the primary key. What is left when every index and the trigger are
  gone is the floor of storing the event and the projection row at all. The same for a
  drained job: its two transitions (an event each and its row's update), ten jobs per
  transaction as a worker's claim cycle writes them.
- `batch`: engine.py's database floor of a batch of 500 (its statements alone).
- `submit`: a single submit in process (`JobService.submit`, one at a time: no HTTP, no
  token check): its call p50, the time its statements kept it waiting (a query logger),
  the PostgreSQL CPU and WAL per submit.
- `drain`: the worker's claim cycle (`claims.claim`: record ten jobs' ends and start ten
  more, one transaction) run in process on the real tables, over a queue of no-op jobs,
  each cycle's outcomes those of the jobs the one before started: jobs/s of the cycle
  alone (no executor, no scheduler), and of its statements alone, from the time asyncpg
  waited for each (a query logger): the drain this sequence of statements allows however
  fast the worker's Python, one cycle at a time as a worker's claims run.
- `http` also runs `insert` from 16 concurrent clients: the bare stack's submits/s when
  the two cores are shared by it, PostgreSQL and the load generator, as the 16-client
  submit workload shares them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import asyncpg
import msgspec
from engine import RUNNABLE, SPEC, batch_floor, post
from harness import Cluster, cluster, cpu_seconds, die_with_parent, summary, wal_lsn

from jobledger.domain.events import EventMeta, JobSubmitted, Usage, encode_event
from jobledger.domain.jobs import Command, Finish, Job
from jobledger.domain.specs import JobSpec
from jobledger.projections.jobs import QUERIES as JOBS_QUERIES
from jobledger.runtime.claims import QUERIES as CLAIM_QUERIES
from jobledger.runtime.claims import claim
from jobledger.service import JobService
from jobledger.store.db import connect, create_pool
from jobledger.store.eventstore import EventStore
from jobledger.store.migrate import migrate
from jobledger.store.queries import QUERIES as STORE_QUERIES

HERE = Path(__file__).resolve().parent


async def _posts(http: aiohttp.ClientSession, url: str, body: bytes, n: int) -> None:
    for _ in range(n):
        await post(http, url, body, [])


async def http_floor(c: Cluster, requests: int = 2000, clients: int = 16) -> dict[str, Any]:
    """The bare app's server CPU and call latency per request, for each of its routes; and
    requests/s of `insert` from `clients` at once."""
    dsn = await c.create_database("floor_http")
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE floor (id uuid PRIMARY KEY, spec jsonb NOT NULL)")
    await conn.close()
    port = 19080 + os.getpid() % 1000
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "floor_server.py"), dsn, str(port)],
        stdout=subprocess.PIPE, preexec_fn=die_with_parent,
    )  # fmt: skip
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise SystemExit(f"floor_server.py did not start (exit {proc.wait()})")
    body = msgspec.json.encode(SPEC)
    out: dict[str, Any] = {}
    try:
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector) as http:
            for route in ("echo", "insert"):
                url = f"http://127.0.0.1:{port}/{route}"
                for _ in range(100):
                    await post(http, url, body, [])
                latencies: list[float] = []
                cpu0 = cpu_seconds(proc.pid)
                for _ in range(requests):
                    await post(http, url, body, latencies)
                out[route] = {
                    "requests": requests,
                    "server_cpu_ms_per_request": round(
                        (cpu_seconds(proc.pid) - cpu0) * 1000 / requests, 4
                    ),
                    "latency_ms": summary(latencies),
                }
            url = f"http://127.0.0.1:{port}/insert"
            started = time.perf_counter()
            await asyncio.gather(
                *(_posts(http, url, body, requests // clients) for _ in range(clients))
            )
            out["insert_concurrent"] = {
                "clients": clients,
                "requests": clients * (requests // clients),
                "requests_per_second": round(
                    clients * (requests // clients) / (time.perf_counter() - started)
                ),
            }
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return out


#: The copies of `events` and `jobs` measured beside the real tables: (name, what is kept).
VARIANTS = (
    ("no_trigger", "every index, no hash-chain trigger"),
    ("primary_key_only", "the primary key only, no trigger"),
)


async def backend_cpu(conn: asyncpg.Connection) -> float:
    return cpu_seconds(await conn.fetchval("SELECT pg_backend_pid()"))


async def write_floor(c: Cluster, submits: int = 1000) -> dict[str, Any]:
    """PostgreSQL CPU ms and WAL bytes per submit's rows, real tables and copies."""
    conn = await connect(await _migrated(c, "floor_writes"))
    for name, _ in VARIANTS:
        indexes = "INCLUDING ALL" if name == "no_trigger" else "INCLUDING DEFAULTS"
        await conn.execute(
            f"CREATE TABLE events_{name} (LIKE events {indexes} INCLUDING IDENTITY);"
            f"CREATE TABLE jobs_{name} (LIKE jobs {indexes})"
        )
        if name == "primary_key_only":
            await conn.execute(
                f"ALTER TABLE events_{name} ADD PRIMARY KEY (position);"
                f"ALTER TABLE jobs_{name} ADD PRIMARY KEY (id)"
            )
    spec = msgspec.convert(SPEC | {"project": "default"}, JobSpec)
    data = encode_event(JobSubmitted(spec=spec)).decode()
    meta = msgspec.json.encode(EventMeta(actor="bench")).decode()
    row = {
        "project": "default", "state": "queued", "spec": msgspec.to_builtins(spec),
        "priority": 0, "labels": {}, "tags": [], "concurrency_limit": 1,
        "submitted_by": "bench", "attempt": 1, "scheduled_for": SPEC["scheduled_for"],
        "version": 1, "last_position": 1, "secrets": {}, "inputs": {},
    }  # fmt: skip

    async def one(events: str, jobs: str) -> None:
        job_id = uuid.uuid4()
        await conn.execute("BEGIN")
        await conn.execute(
            f"INSERT INTO {events} (event_id, stream_id, version, type, data, meta)"
            " VALUES ($1, $2, 1, 'JobSubmitted', $3::jsonb, $4::jsonb)",
            uuid.uuid4(), job_id, data, meta,
        )  # fmt: skip
        await conn.execute(
            f"INSERT INTO {jobs} SELECT * FROM jsonb_populate_record(NULL::{jobs}, $1::jsonb)",
            json.dumps(row | {"id": str(job_id), "created_at": "now", "updated_at": "now"}),
        )
        await conn.execute("COMMIT")

    started = msgspec.json.encode({"worker_id": "bench", "ready_at": time.time()}).decode()
    ended = msgspec.json.encode({"exit_code": 0, "usage": {"wall_seconds": 0.0}}).decode()

    async def transitions(events: str, jobs: str, ids: list[uuid.UUID], version: int) -> None:
        """A drain's cycle: ten jobs' next events and their rows' changes, one transaction."""
        n = len(ids)
        running = version == 2
        data, kind = (started, "JobStarted") if running else (ended, "JobSucceeded")
        await conn.execute("BEGIN")
        await conn.execute(
            f"INSERT INTO {events} (event_id, stream_id, version, type, data, meta)"
            " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[],"
            " $5::jsonb[], $6::jsonb[])",
            [uuid.uuid4() for _ in ids], ids, [version] * n, [kind] * n, [data] * n, [meta] * n,
        )  # fmt: skip
        column = "started_at" if running else "finished_at"
        await conn.execute(
            f"UPDATE {jobs} SET state = $2, worker_id = 'bench', {column} = now(),"
            " updated_at = now(), version = $3, last_position = last_position + 1"
            " WHERE id = ANY($1::uuid[])",
            ids, "running" if running else "succeeded", version,
        )  # fmt: skip
        await conn.execute("COMMIT")

    tables = [("real", "events", "jobs")] + [(n, f"events_{n}", f"jobs_{n}") for n, _ in VARIANTS]
    figures = ("submit_cpu", "submit_wal", "drain_cpu", "drain_wal")
    results = {n: {f: [] for f in figures} for n, _, _ in tables}
    for _, events, jobs in tables:  # warm up each statement past its custom plans
        for _ in range(20):
            await one(events, jobs)
    per_round = submits // 4
    for r in range(4):  # rounds in alternating order: the machine's drift hits all alike
        for n, events, jobs in tables if r % 2 == 0 else tables[::-1]:
            cpu0, wal0 = await backend_cpu(conn), await wal_lsn(conn)
            for _ in range(per_round):
                await one(events, jobs)
            results[n]["submit_cpu"].append((await backend_cpu(conn) - cpu0) * 1000 / per_round)
            results[n]["submit_wal"].append((await wal_lsn(conn) - wal0) / per_round)
            sql = f"SELECT id FROM {jobs} WHERE state = 'queued' LIMIT 500"
            queued = [row["id"] for row in await conn.fetch(sql)]
            cpu0, wal0 = await backend_cpu(conn), await wal_lsn(conn)
            for k in range(0, len(queued), 10):
                await transitions(events, jobs, queued[k : k + 10], 2)
                await transitions(events, jobs, queued[k : k + 10], 3)
            results[n]["drain_cpu"].append((await backend_cpu(conn) - cpu0) * 1000 / len(queued))
            results[n]["drain_wal"].append((await wal_lsn(conn) - wal0) / len(queued))
    await conn.close()
    described = {"real": "events with its hash-chain trigger, both tables with every index"}
    described |= dict(VARIANTS)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    return {
        n: {
            "what": described[n],
            "postgres_cpu_ms_per_submit": round(median(v["submit_cpu"]), 4),
            "wal_bytes_per_submit": round(median(v["submit_wal"])),
            "postgres_cpu_ms_per_drained_job": round(median(v["drain_cpu"]), 4),
            "wal_bytes_per_drained_job": round(median(v["drain_wal"])),
        }
        for n, v in results.items()
    }


class Statements:
    """How long each named statement kept its caller waiting (asyncpg's query logger), on
    the connections of a one-connection pool; counted while `on`."""

    NAMES: ClassVar[dict[str, str]] = {
        q: n for queries in (CLAIM_QUERIES, STORE_QUERIES, JOBS_QUERIES) for n, q in queries.items()
    }

    def __init__(self) -> None:
        self.on = False
        self.waited: dict[str, float] = {}
        self.counted: dict[str, int] = {}

    def logged(self, q: Any) -> None:
        if self.on:
            name = self.NAMES.get(q.query, q.query[:24])
            self.waited[name] = self.waited.get(name, 0.0) + q.elapsed
            self.counted[name] = self.counted.get(name, 0) + 1

    @contextlib.asynccontextmanager
    async def service(self, dsn: str) -> AsyncIterator[tuple[JobService, int]]:
        """A service on a one-connection pool whose statements this counts, and the
        backend pid of that connection (its PostgreSQL CPU)."""

        async def setup(conn: Any) -> None:
            conn.add_query_logger(self.logged)

        pool = await create_pool(dsn, min_size=1, max_size=1, setup=setup)
        try:
            yield JobService(EventStore(pool)), await pool.fetchval("SELECT pg_backend_pid()")
        finally:
            await pool.close()

    def per(self, n: int) -> dict[str, float]:
        """Waited ms per unit, by statement, most first."""
        return {k: round(t * 1000 / n, 4)
                for k, t in sorted(self.waited.items(), key=lambda i: -i[1])}  # fmt: skip


async def submit_floor(c: Cluster, submits: int = 600) -> dict[str, Any]:
    """A single submit in process (`JobService.submit`, no HTTP, no token check): its call
    p50 and its statements' wait, PostgreSQL CPU and WAL per submit."""
    log = Statements()
    async with log.service(await _migrated(c, "floor_submit")) as (service, backend):
        spec = msgspec.convert(SPEC, JobSpec)
        meta = EventMeta(actor="bench")
        for _ in range(30):  # warm up: past the statements' custom plans
            await service.submit(spec, meta)
        async with service.pool.acquire() as conn:
            wal0 = await wal_lsn(conn)
        calls: list[float] = []
        log.on = True
        cpu0 = cpu_seconds(backend)
        for _ in range(submits):
            began = time.perf_counter()
            await service.submit(spec, meta)
            calls.append(time.perf_counter() - began)
        cpu = cpu_seconds(backend) - cpu0
        log.on = False
        async with service.pool.acquire() as conn:
            wal = await wal_lsn(conn) - wal0
    return {
        "submits": submits,
        "call_ms": summary(calls),
        "statements_ms_per_submit": round(sum(log.waited.values()) * 1000 / submits, 4),
        "postgres_cpu_ms_per_submit": round(cpu * 1000 / submits, 4),
        "wal_bytes_per_submit": round(wal / submits),
        "waited_ms_per_submit": log.per(submits),
        "statements_per_submit": round(sum(log.counted.values()) / submits, 2),
    }


async def drain_floor(c: Cluster, jobs: int = 3000, capacity: int = 10) -> dict[str, Any]:
    """The claim cycle's jobs/s in process, and its statements' alone (see the module's
    docstring); the PostgreSQL CPU per job, and where the statements' time goes."""
    log = Statements()
    async with log.service(await _migrated(c, "floor_drain")) as (service, backend):
        spec = msgspec.convert(RUNNABLE, JobSpec)
        queued = jobs + 10 * capacity  # the warm-up's cycles take some
        for k in range(0, queued, 500):
            await service.submit_batch([spec] * min(500, queued - k), EventMeta(actor="bench"))
        usage = Usage(wall_seconds=0.0)
        outcomes: dict[uuid.UUID, Command] = {}
        priors: dict[uuid.UUID, Job] = {}
        lead: str | None = None

        async def cycle() -> int:  # as a worker's outcome cycle claims (scheduler.py)
            nonlocal outcomes, priors, lead
            done = await claim(
                service, "bench", [], capacity, outcomes, priors=priors, lead=lead, wait=False
            )
            lead = done.lead
            started = [c.job for c in done.claimed]
            outcomes = {j.id: Finish(attempt=j.attempt, exit_code=0, usage=usage) for j in started}
            priors = {j.id: j for j in started}
            return sum(1 for j in done.recorded.values() if j is not None)

        for _ in range(10):  # warm up: past the statements' custom plans
            await cycle()
        log.on = True
        finished = 0
        cpu0, began = cpu_seconds(backend), time.perf_counter()
        while finished < jobs:
            finished += await cycle()
        seconds = time.perf_counter() - began
        cpu = cpu_seconds(backend) - cpu0
    return {
        "jobs": finished,
        "capacity": capacity,
        "cycle_jobs_per_second": round(finished / seconds),
        "statements_alone_jobs_per_second": round(finished / sum(log.waited.values())),
        "postgres_cpu_ms_per_job": round(cpu * 1000 / finished, 4),
        "waited_ms_per_job": log.per(finished),
        "statements_per_cycle": round(sum(log.counted.values()) * capacity / finished, 2),
    }


def table(floor: dict[str, Any], pgqueuer: dict[str, Any] | None = None) -> str:
    """The floors as a readable table, each beside PgQueuer's figure of the same run."""

    def pq(*path: str) -> str:
        value: Any = pgqueuer
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return "—" if value is None else f"{value:,}"

    lines = [
        "| floor | server CPU ms | call p50 ms | PostgreSQL CPU ms | WAL bytes |",
        "|---|---|---|---|---|",
    ]
    for route, what in (("echo", "bare aiohttp: decode, answer"),
                        ("insert", "bare aiohttp + one INSERT (asyncpg)")):  # fmt: skip
        r = floor["http"][route]
        lines.append(
            f"| {what} | {r['server_cpu_ms_per_request']} | {r['latency_ms']['median']} | — | — |"
        )
    c = floor["http"]["insert_concurrent"]
    rate = f"{c['requests_per_second']:,} requests/s"
    lines.append(f"| bare aiohttp + one INSERT, {c['clients']} clients: {rate} | — | — | — | — |")
    for what in ("submit", "drained_job"):
        for r in floor["writes"].values():
            lines.append(
                f"| one {what.replace('_', ' ')}'s rows, {r['what']} | — | — |"
                f" {r[f'postgres_cpu_ms_per_{what}']} | {r[f'wal_bytes_per_{what}']:,} |"
            )
    lines.append(
        f"| a batch of {floor['batch']['jobs_per_batch']}'s statements alone:"
        f" {floor['batch']['jobs_per_second']:,} jobs/s | — | — | — | — |"
    )
    u = floor["submit"]
    lines.append(
        f"| a single submit in process (the service, no HTTP): its statements"
        f" {u['statements_ms_per_submit']} ms | — | {u['call_ms']['median']}"
        f" | {u['postgres_cpu_ms_per_submit']} | {u['wal_bytes_per_submit']:,} |"
    )
    d = floor["drain"]
    lines.append(
        f"| the claim cycle in process, {d['capacity']} slots: {d['cycle_jobs_per_second']:,}"
        f" jobs/s; its statements alone: {d['statements_alone_jobs_per_second']:,} jobs/s"
        f" | — | — | {d['postgres_cpu_ms_per_job']} | — |"
    )
    lines.append(
        f"| PgQueuer's whole enqueue, same run | — | {pq('submit_serial', 'latency_ms', 'median')}"
        f" | {pq('submit_serial', 'cpu_ms_per_job', 'postgres')}"
        f" | {pq('submit_serial', 'wal_bytes_per_job')} |"
    )
    lines.append(
        f"| PgQueuer's drained job, same run | — | — | {pq('drain', 'cpu_ms_per_job', 'postgres')}"
        f" | {pq('drain', 'wal_bytes_per_job')} |"
    )
    return "\n".join(lines)


async def measure(c: Cluster) -> dict[str, Any]:
    return {
        "http": await http_floor(c),
        "writes": await write_floor(c),
        "batch": await batch_floor(await _migrated(c, "floor_batch")),
        "submit": await submit_floor(c),
        "drain": await drain_floor(c),
    }


async def _migrated(c: Cluster, name: str) -> str:
    dsn = await c.create_database(name)
    conn = await connect(dsn)
    await migrate(conn)
    await conn.close()
    return dsn


async def main() -> None:
    started = time.perf_counter()
    async with cluster() as c:
        report = await measure(c)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"benchmark": "floors"} | report, indent=2))
    print(table(report), file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
