"""jobledger beside PgQueuer and procrastinate (issue 18), in one run on one embedded
PostgreSQL 15 cluster (defaults, fsync on), each system in a fresh database of its own:
submit one at a time (1 client), 16 concurrent clients (jobledger only: PgQueuer's one
client is the reference), batches of 500, and a queue of no-op jobs drained by one worker
with 10 slots. For each: jobs/s, call p50/p99, CPU ms per job of each process (API server,
worker, PostgreSQL, this load generator) and WAL bytes per job; then jobledger's figures as
ratios to PgQueuer's and the issue's targets, met or not; and the floors under them on the
same cluster (floors.py: a bare aiohttp app with and without one INSERT, and one submit's
rows with fewer and fewer of the tables' parts).

    .venv/bin/python bench/peers.py [--serial 1000] [--concurrent 4000] [--batch-jobs 20000]
                                    [--drain 10000] [--rounds 2] [--systems jobledger,pgqueuer]

jobledger runs as `jobledger serve --no-scheduler` plus `jobledger worker --executor noop
--capacity 10`, driven over HTTP; PgQueuer 1.6 through `Queries.enqueue` and a `PgQueuer`
consumer (max_concurrent_tasks 10, batch_size 5); procrastinate 3.10 through
`defer_async` / `batch_defer_async` and `run_worker_async(concurrency=10)` (psycopg). The
peers' consumers are processes of their own (peer_workers.py). Rounds alternate the order
(jobledger, pgqueuer, procrastinate, then reversed); the summary takes each figure's median.
A worker's CPU counts from when it is up and idle to the end of its drain (a jobledger
project is paused meanwhile; a peer's consumer waits for a line on stdin); PostgreSQL's is
the postmaster's with its children's, so the counts hold nothing else: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import floors
from engine import RUNNABLE, start_worker, submit_batches, submit_clients
from harness import (
    ADMIN_TOKEN,
    Cluster,
    Meter,
    cluster,
    cpu_seconds,
    die_with_parent,
    machine,
    server,
    summary,
)
from peer_workers import DRAIN, HELD, procrastinate_app

HERE = Path(__file__).resolve().parent
SYSTEMS = ("jobledger", "pgqueuer", "procrastinate")
PEERS = {"pgqueuer": "1.6.0", "procrastinate": "3.10.0"}


def installed(system: str) -> bool:
    """Whether a peer is importable here (the `bench` extra of pyproject.toml)."""
    try:
        return system not in PEERS or bool(version(system))
    except PackageNotFoundError:
        return False


async def timed_calls(call: Callable[[], Awaitable[Any]], n: int) -> dict[str, Any]:
    """`n` calls one after another: jobs/s and call latency."""
    latencies = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    return {"jobs": n, "jobs_per_second": round(n / seconds), "latency_ms": summary(latencies)}


async def timed_batches(call: Callable[[], Awaitable[Any]], n: int, size: int) -> dict[str, Any]:
    r = await timed_calls(call, n // size)
    return {
        "jobs": r["jobs"] * size,
        "batch_size": size,
        "jobs_per_second": r["jobs_per_second"] * size,
        "batch_latency_ms": r.pop("latency_ms"),
    }


async def measured(meter: Meter, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A workload's figures with what it cost per job (`meter` between its start and end)."""
    await meter.start()
    result = await work
    return result | await meter.stop(result["jobs"])


async def idle(pid: int, settle: float = 0.3, limit: float = 20.0) -> None:
    """Until a process has spent (almost) no CPU for `settle` seconds: started up."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(settle)
        now = cpu_seconds(pid)
        if now - last < 0.01:
            return
        last = now


async def drain(
    conn: asyncpg.Connection,
    meter: Meter,
    worker: subprocess.Popen[bytes],
    go: Callable[[], Awaitable[None]],
    left: str,
    span: str,
    n: int,
) -> dict[str, Any]:
    """`n` queued jobs run by one worker already up: `go` lets it start; done when the query
    `left` says 0; the rate is `n` over `span`, the database's first start to last end."""
    try:
        await idle(worker.pid)
        await meter.start()
        await go()
        while await conn.fetchval(left) > 0:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}")
            await asyncio.sleep(0.1)
        costs = await meter.stop(n)
    finally:
        worker.kill()
        worker.wait(timeout=60)
    seconds = float(await conn.fetchval(span))
    return {"jobs": n, "slots": 10, "seconds": round(seconds, 2),
            "jobs_per_second": round(n / seconds)} | costs  # fmt: skip


async def run_jobledger(c: Cluster, dsn: str, a: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    out: dict[str, Any] = {}
    async with (
        server("--no-scheduler", database_url=dsn, build_image=False) as served,
        aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=a.clients)
        ) as http,
    ):
        conn = await asyncpg.connect(dsn)
        meter = Meter(conn, c.postmaster, {"api_server": served.pid})
        url = served.url
        await submit_clients(http, url, a.warmup, 1)
        out["submit_serial"] = await measured(meter, submit_clients(http, url, a.serial, 1))
        out["submit_concurrent"] = await measured(
            meter, submit_clients(http, url, a.concurrent, a.clients)
        )
        out["submit_batch"] = await measured(
            meter, submit_batches(http, url, a.batch_jobs, a.batch_size)
        )

        async def limit(running: int) -> None:
            async with http.put(
                f"{url}/api/v1/projects/default/limits", json={"max_running_jobs": running}
            ) as r:
                assert r.status == 200, await r.text()

        await limit(0)  # paused: the worker starts up before the drain does
        await submit_batches(http, url, a.drain, a.batch_size, RUNNABLE)
        a.drain = a.batch_size * (a.drain // a.batch_size)
        worker = start_worker(dsn)
        while not await conn.fetchval("SELECT count(*) FROM workers WHERE id = 'bench'"):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        out["drain"] = await drain(
            conn, Meter(conn, c.postmaster, {"api_server": served.pid, "worker": worker.pid}),
            worker, lambda: limit(10),
            f"SELECT {a.drain} - count(*) FROM jobs WHERE state = 'succeeded'",
            "SELECT extract(epoch FROM max(recorded_at) FILTER (WHERE type = 'JobSucceeded')"
            " - min(recorded_at) FILTER (WHERE type = 'JobStarted')) FROM events",
            a.drain,
        )  # fmt: skip
        await conn.close()
    return out


def start_consumer(system: str, dsn: str) -> subprocess.Popen[bytes]:
    """A peer's consumer (peer_workers.py), once it says `ready`."""
    proc = subprocess.Popen(
        # Imported, not run as __main__: procrastinate wants its App in a named module.
        [sys.executable, "-c", "import sys, peer_workers; peer_workers.main(sys.argv[1:])",
         system, dsn],
        cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        proc.kill()
        raise SystemExit(f"the {system} consumer did not start (exit {proc.wait()})")
    return proc


def release(proc: subprocess.Popen[bytes]) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()

    return go


async def run_pgqueuer(c: Cluster, dsn: str, a: argparse.Namespace) -> dict[str, Any]:
    from pgqueuer import AsyncpgDriver, Queries

    out: dict[str, Any] = {}
    conn = await asyncpg.connect(dsn)  # the meter's
    q = Queries(AsyncpgDriver(await asyncpg.connect(dsn)))
    await q.install()
    meter = Meter(conn, c.postmaster, {})
    size = a.batch_size

    async def one() -> None:
        await q.enqueue(HELD, None)

    async def batch(entrypoint: str = HELD) -> None:
        await q.enqueue([entrypoint] * size, [None] * size, [0] * size)

    await timed_calls(one, a.warmup)
    out["submit_serial"] = await measured(meter, timed_calls(one, a.serial))
    out["submit_batch"] = await measured(meter, timed_batches(batch, a.batch_jobs, size))
    for _ in range(a.drain // size):
        await batch(DRAIN)
    worker = start_consumer("pgqueuer", dsn)
    out["drain"] = await drain(
        conn, Meter(conn, c.postmaster, {"worker": worker.pid}), worker, release(worker),
        f"SELECT count(*) FROM pgqueuer WHERE entrypoint = '{DRAIN}'",
        "SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
        " - min(created) FILTER (WHERE status = 'picked')) FROM pgqueuer_log"
        f" WHERE entrypoint = '{DRAIN}'",
        size * (a.drain // size),
    )  # fmt: skip
    await conn.close()
    return out


async def run_procrastinate(c: Cluster, dsn: str, a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = await asyncpg.connect(dsn)  # the meter's
    meter = Meter(conn, c.postmaster, {})
    size = a.batch_size
    app, held, noop = procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await timed_calls(held.defer_async, a.warmup)
        out["submit_serial"] = await measured(meter, timed_calls(held.defer_async, a.serial))
        kwargs = [{}] * size

        async def batch() -> None:
            await held.batch_defer_async(*kwargs)

        out["submit_batch"] = await measured(meter, timed_batches(batch, a.batch_jobs, size))
        for _ in range(a.drain // size):
            await noop.batch_defer_async(*kwargs)
    worker = start_consumer("procrastinate", dsn)
    out["drain"] = await drain(
        conn, Meter(conn, c.postmaster, {"worker": worker.pid}), worker, release(worker),
        f"SELECT count(*) FROM procrastinate_jobs WHERE queue_name = '{DRAIN}'"
        " AND status IN ('todo', 'doing')",
        "SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
        " - min(at) FILTER (WHERE type = 'started')) FROM procrastinate_events",
        size * (a.drain // size),
    )  # fmt: skip
    await conn.close()
    return out


RUNNERS = {"jobledger": run_jobledger, "pgqueuer": run_pgqueuer,
           "procrastinate": run_procrastinate}  # fmt: skip


def median_of(rounds: list[Any]) -> Any:
    """The per-figure median of the rounds' results (nested dicts of numbers)."""
    first = rounds[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in rounds if k in r]) for k in first}
    if isinstance(first, int | float):
        return round(statistics.median(rounds), 4)
    return first


#: The side-by-side figures: (label, workload, path in the workload's figures).
FIGURES = [
    ("submit one at a time, jobs/s", "submit_serial", ("jobs_per_second",)),
    ("submit call p50, ms", "submit_serial", ("latency_ms", "median")),
    ("submit call p99, ms", "submit_serial", ("latency_ms", "p99")),
    ("submit, 16 clients, jobs/s", "submit_concurrent", ("jobs_per_second",)),
    ("submit in batches of 500, jobs/s", "submit_batch", ("jobs_per_second",)),
    ("drain, 1 worker 10 slots, jobs/s", "drain", ("jobs_per_second",)),
]
for _w, _what in (("submit_serial", "single submit"), ("submit_concurrent", "submit, 16 clients"),
                  ("submit_batch", "batched submit"), ("drain", "drained job")):  # fmt: skip
    FIGURES += [
        (f"{p} CPU ms per {_what}", _w, ("cpu_ms_per_job", key))
        for p, key in (("API server", "api_server"), ("worker", "worker"),
                       ("PostgreSQL", "postgres"), ("load generator", "load_generator"))
    ]  # fmt: skip
    FIGURES.append((f"WAL bytes per {_what}", _w, ("wal_bytes_per_job",)))


def figure(result: dict[str, Any], workload: str, path: tuple[str, ...]) -> float | None:
    value: Any = result.get(workload)
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def targets(jl: dict[str, Any], pq: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18's targets, evaluated on the summary figures (ratios to PgQueuer's)."""

    def f(system: dict[str, Any], workload: str, *path: str) -> float | None:
        return figure(system, workload, path)

    rows = [
        ("API server CPU ms per single submit", f(jl, "submit_serial", "cpu_ms_per_job",
         "api_server"), "<=", 0.4),
        ("submit call p50 / PgQueuer enqueue call p50",
         ratio(f(jl, "submit_serial", "latency_ms", "median"),
               f(pq, "submit_serial", "latency_ms", "median")), "<=", 1.5),
        ("submits/s with 16 clients / PgQueuer one-client enqueues/s",
         ratio(f(jl, "submit_concurrent", "jobs_per_second"),
               f(pq, "submit_serial", "jobs_per_second")), ">=", 1.5),
        ("PostgreSQL CPU per single submit / PgQueuer's",
         ratio(f(jl, "submit_serial", "cpu_ms_per_job", "postgres"),
               f(pq, "submit_serial", "cpu_ms_per_job", "postgres")), "<=", 1.5),
        ("WAL per single submit / PgQueuer's",
         ratio(f(jl, "submit_serial", "wal_bytes_per_job"),
               f(pq, "submit_serial", "wal_bytes_per_job")), "<=", 1.5),
        ("PostgreSQL CPU per drained job / PgQueuer's",
         ratio(f(jl, "drain", "cpu_ms_per_job", "postgres"),
               f(pq, "drain", "cpu_ms_per_job", "postgres")), "<=", 2.0),
        ("WAL per drained job / PgQueuer's",
         ratio(f(jl, "drain", "wal_bytes_per_job"), f(pq, "drain", "wal_bytes_per_job")),
         "<=", 2.0),
        ("batch submit jobs/s / PgQueuer's batch enqueue",
         ratio(f(jl, "submit_batch", "jobs_per_second"),
               f(pq, "submit_batch", "jobs_per_second")), ">=", 0.5),
        ("drain jobs/s / PgQueuer's", ratio(f(jl, "drain", "jobs_per_second"),
                                             f(pq, "drain", "jobs_per_second")), ">=", 1.0),
    ]  # fmt: skip
    return [
        {"target": name, "value": value, "wanted": f"{op} {bound}",
         "met": None if value is None else (value <= bound if op == "<=" else value >= bound)}
        for name, value, op, bound in rows
    ]  # fmt: skip


def table(summaries: dict[str, dict[str, Any]]) -> str:
    systems = list(summaries)
    show = "jobledger" in summaries and "pgqueuer" in summaries
    head = ["per job", *systems] + (["jobledger / PgQueuer"] if show else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, workload, path in FIGURES:
        values = [figure(summaries[s], workload, path) for s in systems]
        if all(v is None for v in values):
            continue
        cells = [label, *("—" if v is None else f"{v:,}" for v in values)]
        if show:
            r = ratio(figure(summaries["jobledger"], workload, path),
                      figure(summaries["pgqueuer"], workload, path))  # fmt: skip
            cells.append("—" if r is None else f"{r:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch-jobs", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--drain", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="order reversed every other one")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    a = parser.parse_args()
    for name in ("batch_jobs", "drain"):  # each is submitted in whole batches
        if getattr(a, name) < a.batch_size:
            parser.error(f"--{name.replace('_', '-')} must be at least --batch-size")
    asked = a.systems.split(",")
    systems = [s for s in asked if s in RUNNERS and installed(s)]
    missing = sorted(set(asked) - set(systems))
    rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    orders = []
    async with cluster() as c:
        for n in range(a.rounds):
            order = systems if n % 2 == 0 else systems[::-1]
            orders.append(order)
            for system in order:
                dsn = await c.create_database(f"{system}_{n + 1}")
                rounds[system].append(await RUNNERS[system](c, dsn, a))
        # The floors under the targets, on the same cluster in the same run (floors.py).
        floor = await floors.measure(c) if "jobledger" in systems else None
        conn = await asyncpg.connect(c.dsn("postgres"))
        postgres = await conn.fetchval("SELECT version()")
        await conn.close()
    summaries = {s: median_of(r) for s, r in rounds.items()}
    report: dict[str, Any] = {
        "benchmark": "peers",
        "orders": orders,
        "not_installed": missing,
        "versions": {"postgres": postgres} | {p: version(p) for p in PEERS if p in systems},
        "summary": summaries,
        "rounds": rounds,
    }
    if "jobledger" in summaries and "pgqueuer" in summaries:
        jl, pq = summaries["jobledger"], summaries["pgqueuer"]
        report["ratios_to_pgqueuer"] = {
            label: ratio(figure(jl, w, p), figure(pq, w, p)) for label, w, p in FIGURES
        }
        report["targets"] = targets(jl, pq)
    if floor is not None:
        report["floors"] = floor
    report["machine"] = machine()
    print(json.dumps(report, indent=2))
    print(table(summaries), file=sys.stderr)
    if floor is not None:
        print(floors.table(floor, summaries.get("pgqueuer")), file=sys.stderr)
    if "targets" in report:
        met = sum(1 for t in report["targets"] if t["met"])
        r = report["ratios_to_pgqueuer"]
        print(
            f"jobledger / PgQueuer ({a.rounds} round(s), medians): submit "
            f"{r['submit one at a time, jobs/s']}x, p50 {r['submit call p50, ms']}x, batches "
            f"{r['submit in batches of 500, jobs/s']}x, drain "
            f"{r['drain, 1 worker 10 slots, jobs/s']}x; PostgreSQL CPU per submit "
            f"{r['PostgreSQL CPU ms per single submit']}x, per drained job "
            f"{r['PostgreSQL CPU ms per drained job']}x; targets met {met}/"
            f"{len(report['targets'])}",
            file=sys.stderr,
        )
    else:
        print(f"peers: {', '.join(systems)} only ({', '.join(missing)} not installed: "
              "pip install -e '.[bench]')", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
