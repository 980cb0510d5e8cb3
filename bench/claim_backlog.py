"""What one claim's read of its candidates costs as due jobs back up (issue 18): the
`claim_candidates` query of a worker with 10 free slots, against 10 up to 3,000 queued jobs
whose `scheduled_for` has passed. A scheduler under load claims many times a second, so a
read that grows faster than the backlog turns a short backlog into a long one (the
scale-out bench's 8 workers fell from 280 to 44 jobs/s that way).

    .venv/bin/python bench/claim_backlog.py [--backlogs 10,100,1000,3000] [--calls 100]

Starts `jobledger serve --no-scheduler` on an embedded PostgreSQL, submits the due jobs
over the API in batches, ANALYZEs, and times `--calls` reads at each backlog (after 20
unmeasured ones) on one connection. Prints JSON and a line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import asyncpg
import msgspec
from engine import RUNNABLE
from harness import ADMIN_TOKEN, machine, server

from jobledger.runtime.claims import QUERIES


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlogs", default="10,100,1000,3000")
    parser.add_argument("--calls", type=int, default=100)
    a = parser.parse_args()
    backlogs = sorted(int(b) for b in a.backlogs.split(","))
    report: dict[str, Any] = {"benchmark": "claim_backlog", "free_slots": 10, "runs": []}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with server("--no-scheduler", build_image=False) as served:
        conn = await asyncpg.connect(served.dsn)
        async with aiohttp.ClientSession(headers=headers) as http:
            queued = 0
            for backlog in backlogs:
                past = await conn.fetchval("SELECT now() - interval '1 minute'")
                spec = RUNNABLE | {"scheduled_for": past.isoformat()}
                while queued < backlog:
                    k = min(500, backlog - queued)
                    body = msgspec.json.encode({"jobs": [spec] * k})
                    async with http.post(f"{served.url}/api/v1/jobs:batch", data=body) as r:
                        assert r.status == 201, await r.text()
                    queued += k
                await conn.execute("ANALYZE jobs")
                args = ([], 10, 48, [], False)  # what a claim of 10 slots asks
                for _ in range(20):
                    await conn.fetch(QUERIES["claim_candidates"], *args)
                t0 = time.perf_counter()
                for _ in range(a.calls):
                    await conn.fetch(QUERIES["claim_candidates"], *args)
                ms = (time.perf_counter() - t0) * 1000 / a.calls
                report["runs"].append({"due_jobs": backlog, "candidates_read_ms": round(ms, 3)})
        await conn.close()
    report["machine"] = machine()
    print(json.dumps(report, indent=2))
    print(
        "claim candidates read: "
        + ", ".join(f"{r['due_jobs']} due {r['candidates_read_ms']} ms" for r in report["runs"]),
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main())
