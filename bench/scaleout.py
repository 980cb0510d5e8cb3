"""Scale-out of the drain (issue 18): 1, 2, 4 and 8 `jobledger worker --executor noop
--noop-seconds 0.02 --capacity 10` processes sharing one database, fed a paced demand kept
below half of the one-worker drain rate, so that the two cores measure what the claims cost
each other (claims of the same project or concurrency key wait for each other's commit:
runtime/claims.py) rather than CPU saturation.

    .venv/bin/python bench/scaleout.py [--workers 1,2,4,8] [--jobs 3000] [--rate R]
                                       [--calibrate 2000] [--projects 1]

The demand: `--jobs` jobs submitted in batches before it starts, each `scheduled_for` its
turn (`--rate` jobs/s from a start a moment after the submits; without `--rate`, 0.4 times
the rate of a first drain of `--calibrate` queued no-op jobs by one worker), spread in turn
over `--projects` projects. Their limits are raised so only the locks and the workers'
slots hold jobs back. Each worker count
runs on a fresh database of one cluster (defaults, fsync on). Reported per worker count:
jobs/s (first JobStarted to last JobSucceeded, database clock), start lag (JobStarted after
the job's `scheduled_for`, p50/p99), claim cycles (count and mean, from each worker's
`jobledger_claim_cycle_seconds` histogram on its `--metrics-port`), and the time backends
spent waiting on locks, from sampling `pg_stat_activity` every `--sample-ms` (a backend
with `wait_event_type = 'Lock'`: advisory = the claims' quota locks; the sum of waiting backends
times the sampling interval estimates backend-seconds of waiting, and its share of the
claim cycles' time). CPU per job of the workers and PostgreSQL as in peers.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
from engine import RUNNABLE, post, start_worker, submit_batches
from harness import ADMIN_TOKEN, Cluster, Meter, cluster, machine, server, summary
from peers import drain, idle

CLAIM_METRIC = re.compile(r"^jobledger_claim_cycle_seconds_(sum|count)(?:\{[^}]*\})? (\S+)$")


async def claim_cycles(http: aiohttp.ClientSession, ports: list[int]) -> tuple[float, float]:
    """Claim transactions so far over the workers on `ports`: (count, seconds)."""
    count = seconds = 0.0
    for port in ports:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            for line in (await r.text()).splitlines():
                if m := CLAIM_METRIC.match(line):
                    if m[1] == "count":
                        count += float(m[2])
                    else:
                        seconds += float(m[2])
    return count, seconds


async def sample_lock_waits(dsn: str, every: float, stop: asyncio.Event) -> dict[str, Any]:
    """Backends of the database waiting on a lock, sampled every `every` seconds until
    `stop`: waiting backend-seconds (each sample's count times the time since the last)."""
    conn = await asyncpg.connect(dsn)
    samples = 0
    waited = {"advisory": 0.0, "any_lock": 0.0}
    last = time.perf_counter()
    try:
        while not stop.is_set():
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE wait_event = 'advisory') AS advisory,"
                "       count(*) AS any_lock FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            now = time.perf_counter()
            for k in waited:
                waited[k] += row[k] * (now - last)
            last, samples = now, samples + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await conn.close()
    return {"samples": samples} | {f"{k}_wait_seconds": round(v, 3) for k, v in waited.items()}


async def limit(
    http: aiohttp.ClientSession, url: str, running: int, project: str = "default"
) -> None:
    async with http.put(
        f"{url}/api/v1/projects/{project}/limits", json={"max_running_jobs": running}
    ) as r:
        assert r.status == 200, await r.text()


async def calibrate(c: Cluster, http: aiohttp.ClientSession, n: int) -> float:
    """One worker's drain rate of `n` queued no-op jobs (0 s each), as peers.py measures it."""
    dsn = await c.create_database("scaleout_calibrate")
    async with server("--no-scheduler", database_url=dsn, build_image=False) as served:
        conn = await asyncpg.connect(dsn)
        await limit(http, served.url, 0)
        await submit_batches(http, served.url, n, 500, RUNNABLE)
        n = 500 * (n // 500)
        worker = start_worker(dsn)
        while not await conn.fetchval("SELECT count(*) FROM workers"):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        result = await drain(
            conn, Meter(conn, c.postmaster, {}), worker, lambda: limit(http, served.url, 10),
            f"SELECT {n} - count(*) FROM jobs WHERE state = 'succeeded'",
            "SELECT extract(epoch FROM max(recorded_at) FILTER (WHERE type = 'JobSucceeded')"
            " - min(recorded_at) FILTER (WHERE type = 'JobStarted')) FROM events",
            n,
        )  # fmt: skip
        await conn.close()
    return float(result["jobs_per_second"])


async def scale(
    c: Cluster, http: aiohttp.ClientSession, workers: int, a: argparse.Namespace
) -> dict[str, Any]:
    dsn = await c.create_database(f"scaleout_{workers}")
    async with server("--no-scheduler", database_url=dsn, build_image=False) as served:
        conn = await asyncpg.connect(dsn)
        projects = ["default"] + [f"tenant-{i}" for i in range(1, a.projects)]
        for project in projects:  # only the locks and the slots hold jobs back
            if project != "default":
                async with http.post(f"{served.url}/api/v1/projects", json={"name": project}) as r:
                    assert r.status == 201, await r.text()
            await limit(http, served.url, 1000, project)
        base = 19100 + os.getpid() % 500 * 10
        ports = [base + i for i in range(workers)]
        procs = [
            start_worker(dsn, "--worker-id", f"scale-{i}", "--noop-seconds", str(a.job_seconds),
                         "--metrics-port", str(port))
            for i, port in enumerate(ports)
        ]  # fmt: skip
        stop = asyncio.Event()
        try:
            while await conn.fetchval("SELECT count(*) FROM workers") < workers:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            for p in procs:
                await idle(p.pid)
            # The demand: job i due at t0 + i / rate, t0 after the submits are surely in.
            t0 = await conn.fetchval("SELECT now()") + timedelta(seconds=1 + a.jobs / 1000)
            due = [t0 + timedelta(seconds=i / a.rate) for i in range(a.jobs)]
            for i in range(0, a.jobs, 500):
                jobs = [
                    RUNNABLE
                    | {"scheduled_for": d.isoformat(), "project": projects[k % len(projects)]}
                    for k, d in enumerate(due[i : i + 500], i)
                ]
                await post(http, f"{served.url}/api/v1/jobs:batch",
                           json.dumps({"jobs": jobs}).encode(), [])  # fmt: skip
            if (late := (await conn.fetchval("SELECT now()") - t0).total_seconds()) > 0:
                print(f"warning: submits ended {late:.2f} s after the demand began",
                      file=sys.stderr)  # fmt: skip
            meter = Meter(conn, c.postmaster, {f"worker_{i}": p.pid for i, p in enumerate(procs)})
            await meter.start()
            cycles0 = await claim_cycles(http, ports)
            sampler = asyncio.create_task(sample_lock_waits(dsn, a.sample_ms / 1000, stop))
            done = "SELECT count(*) FROM jobs WHERE state = 'succeeded'"
            while await conn.fetchval(done) < a.jobs:
                if any(p.poll() is not None for p in procs):
                    raise SystemExit("a worker exited")
                await asyncio.sleep(0.2)
            stop.set()
            waits = await sampler
            cycles1 = await claim_cycles(http, ports)
            costs = await meter.stop(a.jobs)
        finally:
            stop.set()
            for p in procs:
                p.kill()
                p.wait(timeout=60)
        first, last = await conn.fetchrow(
            "SELECT min(recorded_at) FILTER (WHERE type = 'JobStarted'),"
            "       max(recorded_at) FILTER (WHERE type = 'JobSucceeded') FROM events"
        )
        lags = await conn.fetch(
            "SELECT extract(epoch FROM e.recorded_at - j.scheduled_for)::float8 AS lag"
            " FROM events e JOIN jobs j ON j.id = e.stream_id WHERE e.type = 'JobStarted'"
        )
        await conn.close()
    claims = cycles1[0] - cycles0[0]
    claim_seconds = cycles1[1] - cycles0[1]
    cpu = costs["cpu_ms_per_job"]
    worker_cpu = sum(v for k, v in cpu.items() if k.startswith("worker_"))
    return {
        "workers": workers,
        "projects": a.projects,
        "jobs": a.jobs,
        "demand_jobs_per_second": a.rate,
        "jobs_per_second": round(a.jobs / (last - first).total_seconds()),
        "start_lag_ms": summary([r["lag"] for r in lags]),
        "claims": int(claims),
        "claim_cycle_mean_ms": round(1000 * claim_seconds / claims, 3) if claims else None,
        "lock_waits": waits,
        "advisory_wait_ms_per_claim": round(1000 * waits["advisory_wait_seconds"] / claims, 3)
        if claims else None,
        "advisory_wait_share_of_claim_time": round(waits["advisory_wait_seconds"]
                                                   / claim_seconds, 3) if claim_seconds else None,
        "cpu_ms_per_job": {"workers": round(worker_cpu, 4), "postgres": cpu["postgres"],
                           "load_generator": cpu["load_generator"]},
        "wal_bytes_per_job": costs["wal_bytes_per_job"],
    }  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rate", type=float, help="jobs/s of demand (default: calibrated)")
    parser.add_argument("--calibrate", type=int, default=2000)
    parser.add_argument("--job-seconds", type=float, default=0.02)
    parser.add_argument("--sample-ms", type=float, default=20)
    parser.add_argument("--projects", type=int, default=1, help="jobs spread over this many")
    a = parser.parse_args()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    report: dict[str, Any] = {"benchmark": "scaleout", "job_seconds": a.job_seconds}
    async with cluster() as c, aiohttp.ClientSession(headers=headers) as http:
        if a.rate is None:
            report["one_worker_drain_jobs_per_second"] = await calibrate(c, http, a.calibrate)
            a.rate = round(0.4 * report["one_worker_drain_jobs_per_second"])
        report["runs"] = [await scale(c, http, int(k), a) for k in a.workers.split(",")]
    report["machine"] = machine()
    print(json.dumps(report, indent=2))
    lines = [
        "| workers | jobs/s | start lag p50 / p99 ms | claims | claim ms (mean) | "
        "advisory wait ms per claim | share of claim time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['workers']} | {r['jobs_per_second']} | {r['start_lag_ms']['median']} / "
            f"{r['start_lag_ms']['p99']} | {r['claims']} | {r['claim_cycle_mean_ms']} | "
            f"{r['advisory_wait_ms_per_claim']} | {r['advisory_wait_share_of_claim_time']} |"
        )
    print("\n".join(lines), file=sys.stderr)
    print(
        f"scale-out at {a.rate} jobs/s of {a.job_seconds * 1000:g} ms jobs: "
        + "; ".join(
            f"{r['workers']} workers {r['jobs_per_second']}/s, lock wait "
            f"{r['advisory_wait_ms_per_claim']} ms/claim"
            for r in report["runs"]
        ),
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main())
