"""Container jobs one at a time through the real server, against the same container run
directly with aiodocker: how long from submit to JobStarted (the claim) and to the terminal
state as a polling client sees it. Prints one JSON document (and a short table on stderr).

    .venv/bin/python bench/container_overhead.py [--jobs 30]

Starts `jobledger serve --executor docker` on an embedded PostgreSQL in a temporary
directory (defaults: fsync on), and the local test image (scripts/build-test-image).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime

import aiodocker
import aiohttp
from harness import ADMIN_TOKEN, IMAGE, machine, server, summary


async def direct(docker: aiodocker.Docker, n: int) -> list[float]:
    """create + start + wait + delete of `true`, the floor any executor stands on."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c = await docker.containers.create(
            {"Image": IMAGE, "Cmd": ["true"], "HostConfig": {"Init": True}}
        )
        await c.start()
        await c.wait()
        await c.delete(force=True)
        times.append(time.perf_counter() - t0)
    return times


async def through_server(url: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"submit_to_started": [], "submit_to_done": []}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        for _ in range(n):
            t0 = time.perf_counter()
            async with http.post(
                f"{url}/api/v1/jobs", json={"image": IMAGE, "command": ["true"]}
            ) as r:
                job = await r.json()
            while True:  # the client's view: poll as a user's script would
                async with http.get(f"{url}/api/v1/jobs/{job['id']}") as r:
                    view = await r.json()
                if view["state"] in ("succeeded", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.005)
            done = time.perf_counter() - t0
            created = datetime.fromisoformat(view["created_at"])
            started = datetime.fromisoformat(view["started_at"])
            assert view["state"] == "succeeded", view
            # Both times are the database's: JobSubmitted and JobStarted recorded_at.
            out["submit_to_started"].append((started - created).total_seconds())
            out["submit_to_done"].append(done)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()
    async with server("--executor", "docker", "--worker-id", "bench") as served:
        url = served.url
        await through_server(url, 3)  # warm up
        served = await through_server(url, args.jobs)
    async with aiodocker.Docker() as docker:
        version = (await docker.version())["Version"]
        baseline = await direct(docker, args.jobs)
    ratio = statistics.median(served["submit_to_done"]) / statistics.median(baseline)
    report = {
        "benchmark": "container_overhead",
        "jobs": args.jobs,
        "unit": "ms",
        "direct_aiodocker_lifecycle": summary(baseline),
        **{k: summary(v) for k, v in served.items()},
        "ratio_submit_to_done_vs_direct": round(ratio, 2),
        "machine": {**machine(), "docker": version},
    }
    print(json.dumps(report, indent=2))
    for k in ("direct_aiodocker_lifecycle", "submit_to_started", "submit_to_done"):
        print(
            f"{k:28} median {report[k]['median']:8.1f} ms   p95 {report[k]['p95']:8.1f} ms",
            file=sys.stderr,
        )


if __name__ == "__main__":
    asyncio.run(main())
