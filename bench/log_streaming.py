"""Logs through the real server: lines per second through one WebSocket for a container
that prints as fast as it can, and the latency of a line from the worker reading it off
the container to a WebSocket client receiving it. Prints one JSON document.

    .venv/bin/python bench/log_streaming.py [--lines 200000] [--paced 250]

Latency uses each line's `ts` (taken by the worker when it reads the line; same host and
clock as this client), so it covers batching, the database write, NOTIFY, the API
process's read and the socket; the container → worker hop (~1 ms idle) is not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime

import aiohttp
from harness import ADMIN_TOKEN, IMAGE, machine, server, summary


async def submit(http: aiohttp.ClientSession, url: str, script: str) -> str:
    body = {
        "image": IMAGE,
        "command": ["sh", "-c", script],
        "resources": {"cpu": 1.0, "memory_mb": 256},
    }
    async with http.post(f"{url}/api/v1/jobs", json=body) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def follow(
    http: aiohttp.ClientSession, url: str, job_id: str
) -> tuple[list[float], int, float, float]:
    """Read the job's socket to its end: latencies (s), line count, first and last receipt."""
    latencies: list[float] = []
    count = 0
    first = last = 0.0
    ws_url = url.replace("http", "ws", 1) + f"/api/v1/jobs/{job_id}/logs/ws?after=0"
    async with http.ws_connect(ws_url, max_msg_size=0) as ws:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data["type"] == "end":
                assert data["state"] == "succeeded", data
                break
            now = time.time()
            last = time.perf_counter()
            first = first or last
            for line in data["lines"]:
                if line["stream"] != "system":
                    count += 1
                    ts = datetime.fromisoformat(line["ts"]).timestamp()
                    latencies.append(now - ts)
    return latencies, count, first, last


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines of the fast job")
    parser.add_argument(
        "--paced", type=int, default=250, help="lines of the paced job (20 ms apart)"
    )
    args = parser.parse_args()
    async with (
        server("--executor", "docker", "--worker-id", "bench") as served,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http,
    ):
        url = served.url
        fast = await submit(http, url, f"seq 1 {args.lines}")
        _, count, first, last = await follow(http, url, fast)
        assert count == args.lines, (count, args.lines)
        paced = await submit(
            http, url, f"for i in $(seq 1 {args.paced}); do echo line $i; sleep 0.02; done"
        )
        latencies, paced_count, _, _ = await follow(http, url, paced)
        assert paced_count == args.paced
    report = {
        "benchmark": "log_streaming",
        "fast_job_lines": args.lines,
        "lines_per_second_one_websocket": round(count / max(last - first, 1e-9)),
        "paced_job_lines": args.paced,
        "line_latency_ms": summary(latencies),
        "machine": machine(),
    }
    print(json.dumps(report, indent=2))
    latency = report["line_latency_ms"]
    print(
        f"lines/s through one socket: {report['lines_per_second_one_websocket']}; "
        f"line latency p50 {latency['median']} ms, p99 {latency['p99']} ms",
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main())
