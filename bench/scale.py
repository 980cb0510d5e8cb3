"""The server on a large log: load N jobs (about 3 events each) through the real append path
(the service's batch commands: decide, append with the inline projection, NOTIFY), then
time over HTTP the job list (first page and a deep cursor page), job detail and audit
filters; rebuild and verify with the real CLI; report database size per 1,000 jobs.

    .venv/bin/python bench/scale.py [--jobs 340000]

Starts `jobledger serve --no-scheduler` on an embedded PostgreSQL (defaults, fsync on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from harness import ADMIN_TOKEN, IMAGE, ROOT, machine, server, summary

from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import Command, Fail, Finish, RequestCancel, Start, Submit
from jobledger.domain.specs import JobSpec
from jobledger.projections.jobs import Cursor
from jobledger.service import JobService
from jobledger.store.db import create_pool
from jobledger.store.eventstore import EventStore

PROJECTS = [f"p{n}" for n in range(10)]


def lifecycle(n: int) -> list[Command]:
    """What happens to job n after its submit: mostly success, some failures (a few lost
    with their worker), some cancelled while queued."""
    worker = f"w{n % 4}"
    match n % 20:
        case 0 | 1:
            return [Start(worker_id=worker), Finish(exit_code=1)]
        case 2:
            return [Start(worker_id=worker), Fail(reason=FailureReason.WORKER_LOST)]
        case 3:
            return [RequestCancel(reason="not needed")]
        case _:
            return [Start(worker_id=worker), Finish(exit_code=0)]


async def load(dsn: str, jobs: int, batch: int, writers: int) -> dict[str, Any]:
    """Submit `jobs` jobs in batches and take each through its lifecycle, `writers`
    batches at a time; every step is one append transaction per batch."""
    pool = await create_pool(dsn, min_size=writers, max_size=writers)
    if existing := await pool.fetchval("SELECT count(*) FROM jobs"):
        await pool.close()
        return {"jobs": existing, "events": "already loaded"}
    service = JobService(EventStore(pool))
    rng = random.Random(1)

    async def one_batch(first: int) -> None:
        ids = [uuid.uuid4() for _ in range(first, min(first + batch, jobs))]
        project = PROJECTS[(first // batch) % len(PROJECTS)]
        actor = EventMeta(actor=f"{project}/bot{rng.randint(0, 2)}", token_id=str(uuid.uuid4()))
        specs = {
            job_id: Submit(spec=JobSpec(
                image=IMAGE, command=["true"], project=project,
                labels={"batch": str(first // batch), "kind": str(n % 5)},
            ))
            for n, job_id in enumerate(ids, start=first)
        }  # fmt: skip
        steps: list[dict[uuid.UUID, Command]] = [dict(specs), {}, {}]
        for n, job_id in enumerate(ids, start=first):
            for step, command in enumerate(lifecycle(n), start=1):
                steps[step][job_id] = command
        for step, commands in enumerate(steps):
            meta = actor if step == 0 else EventMeta(actor=f"worker:w{first % 4}")
            if commands:
                async with pool.acquire() as conn, conn.transaction():
                    await service.execute_batch(commands, meta, conn)

    started = time.perf_counter()
    firsts = list(range(0, jobs, batch))
    for group in range(0, len(firsts), writers):
        await asyncio.gather(*(one_batch(f) for f in firsts[group : group + writers]))
    seconds = time.perf_counter() - started
    events = await pool.fetchval("SELECT count(*) FROM events")
    await pool.execute("VACUUM ANALYZE")
    await pool.close()
    return {
        "jobs": jobs,
        "events": events,
        "seconds": round(seconds, 1),
        "events_per_second": round(events / seconds),
        "jobs_per_second": round(jobs / seconds),
    }


async def timed(http: aiohttp.ClientSession, url: str, samples: int) -> dict[str, float]:
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        async with http.get(url) as r:
            assert r.status == 200, (url, r.status, await r.text())
            await r.read()
        times.append(time.perf_counter() - t0)
    return summary(times)


async def queries(base: str, dsn: str, samples: int) -> dict[str, Any]:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    total = await pool.fetchval("SELECT count(*) FROM jobs")
    deep = await pool.fetchrow(
        "SELECT created_at, id FROM jobs ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
        total * 4 // 5,
    )
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM jobs ORDER BY random() LIMIT 50")]
    lost = await pool.fetchval(
        "SELECT max(recorded_at) FROM events WHERE data ->> 'reason' = 'worker_lost'"
    )
    actor = await pool.fetchval("SELECT meta ->> 'actor' FROM events WHERE version = 1 LIMIT 1")
    await pool.close()
    cursor = Cursor(deep["created_at"], deep["id"]).encode()
    since = (lost - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    api = f"{base}/api/v1"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers=headers) as http:
        for name, url in [
            ("list_first_page", f"{api}/jobs?limit=50"),
            ("list_first_page_of_a_project", f"{api}/jobs?limit=50&project=p3"),
            ("list_failed_jobs", f"{api}/jobs?limit=50&state=failed"),
            ("list_deep_cursor_page", f"{api}/jobs?limit=50&cursor={cursor}"),
            ("audit_newest", f"{api}/audit?limit=50"),
            ("audit_by_actor", f"{api}/audit?limit=50&actor={actor}"),
            ("audit_one_job", f"{api}/audit?job={ids[0]}"),
            (
                "audit_worker_lost_in_a_time_range",
                f"{api}/audit?type=JobFailed&reason=worker_lost&since={since}",
            ),
            ("audit_waited_over_an_hour", f"{api}/audit?limit=50&min_wait=3600"),
        ]:
            await timed(http, url, 3)  # warm
            out[name] = await timed(http, url, samples)
        details = []
        for job_id in ids * (samples // len(ids) + 1):
            t0 = time.perf_counter()
            async with http.get(f"{api}/jobs/{job_id}") as r:
                assert r.status == 200
                await r.read()
            details.append(time.perf_counter() - t0)
        out["job_detail"] = summary(details[:samples])
    return out


def cli(dsn: str, *args: str) -> dict[str, Any]:
    """Run `jobledger replay ...` and return its last JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "jobledger", "replay", "--database-url", dsn, *args],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"replay {args} failed: {done.stderr}{done.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


async def sizes(dsn: str, jobs: int) -> dict[str, Any]:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    row = await pool.fetchrow(
        "SELECT pg_database_size(current_database()) AS db, "
        "pg_total_relation_size('events') AS events, pg_total_relation_size('jobs') AS jobs"
    )
    await pool.close()
    return {
        "database_bytes": row["db"],
        "bytes_per_1000_jobs": {
            "database": round(row["db"] / jobs * 1000),
            "events_table": round(row["events"] / jobs * 1000),
            "jobs_table": round(row["jobs"] / jobs * 1000),
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=340_000, help="jobs to load (~3 events each)")
    parser.add_argument("--batch", type=int, default=500, help="jobs per append")
    parser.add_argument("--writers", type=int, default=2, help="concurrent loading batches")
    parser.add_argument("--samples", type=int, default=200, help="timed calls per query")
    parser.add_argument(
        "--data-dir", type=Path,
        help="keep the database here; a later run with the same directory skips the load",
    )  # fmt: skip
    args = parser.parse_args()
    async with server("--no-scheduler", data_dir=args.data_dir) as served:
        loaded = await load(served.dsn, args.jobs, args.batch, args.writers)
        print(f"loaded {loaded}", file=sys.stderr)
        timings = await queries(served.url, served.dsn, args.samples)
        rebuild = cli(served.dsn, "rebuild")
        verify = cli(served.dsn, "verify", "--json")
        size = await sizes(served.dsn, loaded["jobs"])
    report = {
        "benchmark": "scale",
        "load": loaded,
        "query_ms": timings,
        "rebuild": {k: rebuild[k] for k in ("events", "seconds", "events_per_second")},
        "verify": {k: verify[k] for k in ("events", "problems", "seconds", "events_per_second")},
        **size,
        "machine": machine(),
    }
    print(json.dumps(report, indent=2))
    print(
        f"{rebuild['events']:,} events; list p99 {timings['list_first_page']['p99']} ms, "
        f"deep page p99 {timings['list_deep_cursor_page']['p99']} ms, detail p99 "
        f"{timings['job_detail']['p99']} ms; rebuild {rebuild['events_per_second']:,} events/s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main())
