"""Profile the API server under one-client serial submits (issue 18): starts `jobledger
serve --no-scheduler` on an embedded cluster, attaches py-spy to it for the duration, and
prints the server's CPU ms per submit (from /proc) beside the client's call p50.

    .venv/bin/python bench/profile_submit.py [--jobs 3000] [--out /tmp/submit.svg]
                                             [--format flamegraph|speedscope|raw]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgspec
from engine import SPEC, post
from harness import ADMIN_TOKEN, server, summary


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--out", default="/tmp/submit-profile.txt")
    p.add_argument("--format", default="raw")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()
    async with server("--no-scheduler") as srv:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        body = msgspec.json.encode(SPEC)
        async with aiohttp.ClientSession(headers=headers) as http:
            url = f"{srv.url}/api/v1/jobs"
            warm: list[float] = []
            for _ in range(200):
                await post(http, url, body, warm)
            spy = None
            if not args.no_profile:
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                     str(srv.pid), "--rate", "500", "--format", args.format,
                     "--output", args.out, "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                await asyncio.sleep(1.0)
            lat: list[float] = []
            cpu0, t0 = cpu_seconds(srv.pid), time.perf_counter()
            for _ in range(args.jobs):
                await post(http, url, body, lat)
            cpu1, t1 = cpu_seconds(srv.pid), time.perf_counter()
            if spy is not None:
                spy.send_signal(2)
                spy.wait(timeout=60)
    print(
        json.dumps(
            {
                "jobs": args.jobs,
                "jobs_per_s": round(args.jobs / (t1 - t0), 1),
                "call_ms": summary(lat),
                "server_cpu_ms_per_submit": round((cpu1 - cpu0) * 1000 / args.jobs, 3),
                "profile": None if spy is None else args.out,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
