"""Archiving on a loaded log (issue 19): N jobs (about 3 events each, bench/scale.py's
loader); time one `replay archive` of every job finished so far, into a temporary
directory, and report the sizes of events and jobs before, after, and after a plain VACUUM,
and the archive files' size; then `replay verify` of the archived log with its files.

    .venv/bin/python bench/archive.py [--jobs 34000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import machine, server
from scale import load

from jobledger.replay.archiving import archive_before
from jobledger.replay.verify import Verifier
from jobledger.store.db import create_pool

SIZES = """
SELECT pg_total_relation_size('events') AS events, pg_total_relation_size('jobs') AS jobs,
       (SELECT count(*) FROM events) AS event_rows, pg_database_size(current_database()) AS db
"""


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=34_000)
    p.add_argument("--batch", type=int, default=1000)
    args = p.parse_args()
    out: dict[str, Any] = {"machine": machine()}
    async with server("--no-scheduler") as srv:
        out["load"] = await load(srv.dsn, args.jobs, 500, 2)
        pool = await create_pool(srv.dsn, min_size=1, max_size=4)
        try:
            await pool.execute("VACUUM ANALYZE events, jobs")
            out["before"] = dict(await pool.fetchrow(SIZES))
            cutoff = await pool.fetchval("SELECT clock_timestamp()")
            with tempfile.TemporaryDirectory() as tmp:
                to = Path(tmp)
                started = time.perf_counter()
                report = await archive_before(pool, cutoff, to, batch=args.batch)
                out["archive"] = {
                    "seconds": round(time.perf_counter() - started, 2),
                    "streams": report.streams, "events": report.events,
                    "files": len(report.files),
                    "file_bytes": sum(f.stat().st_size for f in to.iterdir()),
                }  # fmt: skip
                out["after_archive"] = dict(await pool.fetchrow(SIZES))
                await pool.execute("VACUUM events, jobs")
                out["after_vacuum"] = dict(await pool.fetchrow(SIZES))
                verifier = Verifier(pool, archive=to)
                problems = [p async for p in verifier.problems()]
                out["verify"] = {"problems": len(problems), "seconds": verifier.report.seconds}
        finally:
            await pool.close()
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
