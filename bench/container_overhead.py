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
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiodocker
import aiohttp

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "jobledger-test:latest"


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(pick(0.95) * 1000, 1),
        "min_ms": round(values[0] * 1000, 1),
        "max_ms": round(values[-1] * 1000, 1),
    }


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
    async with aiohttp.ClientSession() as http:
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
    subprocess.run([str(ROOT / "scripts" / "build-test-image")], check=True, capture_output=True)
    data = Path(tempfile.mkdtemp(prefix="jobledger-bench-"))
    data.chmod(0o755)
    port = 18080 + os.getpid() % 1000
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "--log-level", "warning", "serve", "--data-dir", str(data),
         "--port", str(port), "--executor", "docker", "--worker-id", "bench"],
        cwd=ROOT, env={**os.environ, "JOBLEDGER_LOG_FORMAT": "json"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if server.poll() is not None:
                    raise SystemExit(f"the server exited with {server.returncode}")
                try:
                    async with http.get(f"{url}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        await through_server(url, 3)  # warm up
        served = await through_server(url, args.jobs)
        async with aiodocker.Docker() as docker:
            version = (await docker.version())["Version"]
            baseline = await direct(docker, args.jobs)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        subprocess.run(["rm", "-rf", str(data)], check=False)
    ratio = statistics.median(served["submit_to_done"]) / statistics.median(baseline)
    report = {
        "benchmark": "container_overhead",
        "jobs": args.jobs,
        "direct_aiodocker_lifecycle": summary(baseline),
        **{k: summary(v) for k, v in served.items()},
        "ratio_submit_to_done_vs_direct": round(ratio, 2),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "docker": version},
    }
    print(json.dumps(report, indent=2))
    for k in ("direct_aiodocker_lifecycle", "submit_to_started", "submit_to_done"):
        print(
            f"{k:32} median {report[k]['median_ms']:8.1f} ms   p95 {report[k]['p95_ms']:8.1f} ms",
            file=sys.stderr,
        )


if __name__ == "__main__":
    asyncio.run(main())
