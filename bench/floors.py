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
  gone is the floor of storing the event and the projection row at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
from engine import SPEC, post
from harness import Cluster, cluster, cpu_seconds, die_with_parent, summary, wal_lsn

from jobledger.domain.events import EventMeta, JobSubmitted, encode_event
from jobledger.domain.specs import JobSpec
from jobledger.store.db import connect
from jobledger.store.migrate import migrate

HERE = Path(__file__).resolve().parent


async def http_floor(c: Cluster, requests: int = 2000) -> dict[str, Any]:
    """The bare app's server CPU and call latency per request, for each of its routes."""
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
        async with aiohttp.ClientSession() as http:
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
    dsn = await c.create_database("floor_writes")
    conn = await connect(dsn)
    await migrate(conn)
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

    tables = [("real", "events", "jobs")] + [(n, f"events_{n}", f"jobs_{n}") for n, _ in VARIANTS]
    results: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "wal": []} for n, _, _ in tables}
    for _, events, jobs in tables:  # warm up each statement past its custom plans
        for _ in range(20):
            await one(events, jobs)
    for r in range(4):  # rounds in alternating order: the machine's drift hits all alike
        for n, events, jobs in tables if r % 2 == 0 else tables[::-1]:
            cpu0, wal0 = await backend_cpu(conn), await wal_lsn(conn)
            for _ in range(submits // 4):
                await one(events, jobs)
            results[n]["cpu"].append((await backend_cpu(conn) - cpu0) * 1000 / (submits // 4))
            results[n]["wal"].append((await wal_lsn(conn) - wal0) / (submits // 4))
    await conn.close()
    described = {"real": "events with its hash-chain trigger, both tables with every index"}
    described |= dict(VARIANTS)
    return {
        n: {
            "what": described[n],
            "postgres_cpu_ms_per_submit": round(sorted(v["cpu"])[len(v["cpu"]) // 2], 4),
            "wal_bytes_per_submit": round(sorted(v["wal"])[len(v["wal"]) // 2]),
        }
        for n, v in results.items()
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
    for r in floor["writes"].values():
        lines.append(
            f"| one submit's rows, {r['what']} | — | — | {r['postgres_cpu_ms_per_submit']} |"
            f" {r['wal_bytes_per_submit']:,} |"
        )
    lines.append(
        f"| PgQueuer's whole enqueue, same run | — | {pq('submit_serial', 'latency_ms', 'median')}"
        f" | {pq('submit_serial', 'cpu_ms_per_job', 'postgres')}"
        f" | {pq('submit_serial', 'wal_bytes_per_job')} |"
    )
    return "\n".join(lines)


async def measure(c: Cluster) -> dict[str, Any]:
    return {"http": await http_floor(c), "writes": await write_floor(c)}


async def main() -> None:
    started = time.perf_counter()
    async with cluster() as c:
        report = await measure(c)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"benchmark": "floors"} | report, indent=2))
    print(table(report), file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
