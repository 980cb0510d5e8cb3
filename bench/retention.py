"""Retention on a loaded log (issue 19): N jobs (about 3 events each, bench/scale.py's
loader) with output lines and usage samples; time one prune pass of every finished job's
output (as if 31 days had passed) and report the sizes of job_logs, job_usage_samples and
events before and after (and after a plain VACUUM, which makes the space reusable but does
not give it back to the system).

    .venv/bin/python bench/retention.py [--jobs 34000] [--batches 5] [--lines 20] [--samples 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import timedelta
from typing import Any

from harness import machine, server
from scale import load

from jobledger.runtime.retention import Retention
from jobledger.store.db import create_pool

SIZES = """
SELECT pg_total_relation_size('events') AS events, pg_total_relation_size('jobs') AS jobs,
       pg_total_relation_size('job_logs') AS job_logs,
       pg_total_relation_size('job_usage_samples') AS job_usage_samples,
       (SELECT count(*) FROM job_logs) AS log_rows,
       (SELECT count(*) FROM job_usage_samples) AS sample_rows
"""

# Every job gets `$1` batches of `$2` lines and `$3` samples (a queued job would print none,
# but the prune must pass it over all the same).
OUTPUT = """
INSERT INTO job_logs (job_id, first_seq, last_seq, attempt, lines, bytes)
SELECT j.id, b * $2 + 1, b * $2 + $2, 1,
       (SELECT json_agg(json_build_array(b * $2 + s, 'stdout', '2030-01-01T00:00:00Z',
                                         'a line of output number ' || (b * $2 + s)))
        FROM generate_series(1, $2) s),
       $2 * 30
FROM jobs j, generate_series(0, $1 - 1) b;
"""
SAMPLES = """
INSERT INTO job_usage_samples (job_id, attempt, sampled_at, cpu_percent, memory_bytes)
SELECT j.id, 1, j.created_at + s * interval '1 second', 12.5, 1 << 20
FROM jobs j, generate_series(1, $1) s;
"""


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=34_000)
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--lines", type=int, default=20)
    p.add_argument("--samples", type=int, default=10)
    args = p.parse_args()
    out: dict[str, Any] = {"machine": machine()}
    async with server("--no-scheduler") as srv:
        out["load"] = await load(srv.dsn, args.jobs, 500, 2)
        pool = await create_pool(srv.dsn, min_size=1, max_size=4)
        try:
            started = time.perf_counter()
            await pool.execute(OUTPUT, args.batches, args.lines)
            await pool.execute(SAMPLES, args.samples)
            await pool.execute("VACUUM ANALYZE job_logs, job_usage_samples")
            out["output_load_seconds"] = round(time.perf_counter() - started, 1)
            out["before"] = dict(await pool.fetchrow(SIZES))
            as_of = await pool.fetchval("SELECT clock_timestamp()") + timedelta(days=31)
            started = time.perf_counter()
            report = await Retention(pool, 30).round(as_of=as_of)
            out["prune"] = {
                "seconds": round(time.perf_counter() - started, 2),
                "jobs": report.jobs, "lines": report.lines, "samples": report.samples,
            }  # fmt: skip
            out["after_prune"] = dict(await pool.fetchrow(SIZES))
            await pool.execute("VACUUM job_logs, job_usage_samples")
            out["after_vacuum"] = dict(await pool.fetchrow(SIZES))
        finally:
            await pool.close()
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
