"""How late schedules fire: one `jobledger serve` (scheduler, firing and the no-op executor
in one process) with a schedule firing every second (six-field cron), for `--seconds`. For
each occurrence, from the log and by the database's clock: the lag from the occurrence to
its ScheduleFired's recorded_at (the decision) and to its job's JobSubmitted (the job's
creation). Prints one JSON document (and a short line on stderr).

    .venv/bin/python bench/fire_lag.py [--seconds 20] [--run spec|definition]

`--run definition` runs a definition with a parameter instead of a spec: each occurrence
then resolves the definition (its latest version) before its job is created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp
import asyncpg
from harness import ADMIN_TOKEN, IMAGE, machine, server, summary

FIRED = """
SELECT (f.data->>'occurrence')::timestamptz AS occurrence, f.recorded_at AS fired_at,
       j.recorded_at AS submitted_at
FROM events f
LEFT JOIN events j ON j.stream_id = (f.data->>'job_id')::uuid AND j.version = 1
WHERE f.stream_id = (SELECT stream_id FROM schedules WHERE project = 'default' AND name = $1)
  AND f.type = 'ScheduleFired'
ORDER BY f.version
"""
SKIPPED = """
SELECT count(*) FROM events
WHERE stream_id = (SELECT stream_id FROM schedules WHERE project = 'default' AND name = $1)
  AND type = 'ScheduleSkipped'
"""


async def measure(url: str, dsn: str, seconds: float, kind: str) -> dict[str, Any]:
    base = f"{url}/api/v1/projects/default"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        if kind == "definition":
            definition = {"image": IMAGE, "command": ["echo", "{{params.day}}"],
                          "params": [{"name": "day", "required": True}]}  # fmt: skip
            async with http.put(f"{base}/definitions/tick", json=definition) as r:
                assert r.status == 201, await r.text()
            run: dict[str, Any] = {"definition": "tick", "params": {"day": "today"}}
        else:
            run = {"spec": {"image": IMAGE, "command": ["true"]}}
        # overlap allow: every occurrence fires (a no-op job may still be finishing).
        schedule = {"name": "every-second", "cron": "* * * * * *", "overlap": "allow",
                    "run": run}  # fmt: skip
        async with http.post(f"{base}/schedules", json=schedule) as r:
            assert r.status == 201, await r.text()
        await asyncio.sleep(seconds)
        async with http.post(f"{base}/schedules/every-second/pause") as r:
            assert r.status == 200, await r.text()
    conn = await asyncpg.connect(dsn)
    try:
        rows = []
        for _ in range(50):  # the jobs of the last occurrences may still be being created
            rows = await conn.fetch(FIRED, "every-second")
            if all(r["submitted_at"] is not None for r in rows):
                break
            await asyncio.sleep(0.1)
        skipped = await conn.fetchval(SKIPPED, "every-second")
    finally:
        await conn.close()
    fire = [(r["fired_at"] - r["occurrence"]).total_seconds() for r in rows]
    job = [(r["submitted_at"] - r["occurrence"]).total_seconds() for r in rows
           if r["submitted_at"] is not None]  # fmt: skip
    assert fire and job, "no occurrence fired"
    return {
        "run": kind,
        "seconds": seconds,
        "occurrences_fired": len(rows),
        "occurrences_skipped": skipped,
        "jobs_created": len(job),
        "unit": "ms",
        "occurrence_to_fired": summary(fire),
        "occurrence_to_job_submitted": summary(job),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--run", choices=("spec", "definition"), default="spec")
    args = parser.parse_args()
    async with server("--executor", "noop", "--worker-id", "bench") as served:
        result = await measure(served.url, served.dsn, args.seconds, args.run)
    report = {"benchmark": "fire_lag", **result, "machine": machine()}
    print(json.dumps(report, indent=2))
    f, j = report["occurrence_to_fired"], report["occurrence_to_job_submitted"]
    print(
        f"fire lag ({args.run}, {report['occurrences_fired']} occurrences): fired p50 "
        f"{f['median']:.1f} p99 {f['p99']:.1f} max {f['max']:.1f} ms; job p50 "
        f"{j['median']:.1f} p99 {j['p99']:.1f} max {j['max']:.1f} ms",
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main())
