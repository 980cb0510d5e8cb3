"""Run the whole benchmark set and print one JSON document (the figures of each workload,
machine facts, versions), plus a short table on stderr.

    scripts/bench [--only engine,scale] [--skip peers] [--quick]

Each workload is its own script, runnable alone with its own sizes:
engine.py (submit, drain, pickup, RSS, WAL), container_overhead.py, log_streaming.py,
scale.py, fire_lag.py (how late a schedule firing every second fires and creates its jobs,
of a spec and of a definition), workflow_overhead.py (per workflow step, step ready to its
child job submitted and started, with the no-op and the Docker executor), peers.py
(jobledger beside PgQueuer and procrastinate, CPU and WAL per job, ratios and targets),
scaleout.py (a paced drain of 20 ms jobs by 1 to 8 workers, and the claims' lock waits),
claim_backlog.py (one claim's read of its candidates as due jobs back up).
--quick runs tiny sizes (a smoke run: the figures mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness import machine, shared_cluster

HERE = Path(__file__).resolve().parent

#: Workload: (script, arguments of a full run, arguments of a quick run).
WORKLOADS: dict[str, tuple[str, list[str], list[str]]] = {
    "engine": ("engine.py", [], [
        "--serial", "50", "--concurrent", "160", "--batch-jobs", "1000", "--drain", "500",
        "--pickup", "10", "--by-definition", "10",
    ]),
    "container_overhead": ("container_overhead.py", ["--jobs", "50"], ["--jobs", "3"]),
    "log_streaming": ("log_streaming.py", [], ["--lines", "2000", "--paced", "20"]),
    "scale": ("scale.py", ["--jobs", "50000", "--samples", "100"], [
        "--jobs", "500", "--samples", "5",
    ]),
    "fire_lag": ("fire_lag.py", ["--seconds", "20"], ["--seconds", "3"]),
    "fire_lag_definition": ("fire_lag.py", ["--seconds", "20", "--run", "definition"], [
        "--seconds", "3", "--run", "definition",
    ]),
    "workflow_overhead": ("workflow_overhead.py", ["--runs", "20"], ["--runs", "2"]),
    "workflow_overhead_docker": ("workflow_overhead.py", [
        "--runs", "5", "--executor", "docker",
    ], ["--runs", "1", "--executor", "docker", "--shapes", "diamond"]),
    # Issue 18: jobledger beside PgQueuer and procrastinate on one cluster, and the drain
    # with 1 to 8 workers of 20 ms jobs (the `bench` extra of pyproject.toml).
    "peers": ("peers.py", [], [
        "--serial", "20", "--concurrent", "32", "--batch-jobs", "500", "--drain", "500",
        "--warmup", "5", "--rounds", "1",
    ]),
    "scaleout": ("scaleout.py", [], ["--jobs", "100", "--workers", "1,2", "--rate", "100"]),
    "claim_backlog": ("claim_backlog.py", [], ["--backlogs", "10,100", "--calls", "5"]),
}  # fmt: skip


def run(name: str, quick: bool) -> dict[str, Any]:
    script, full, small = WORKLOADS[name]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(HERE / script), *(small if quick else full)],
        cwd=HERE, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}", "stderr": done.stderr[-3000:]}
    result: dict[str, Any] = json.loads(done.stdout)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    print(f"{name}: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
    return result


def peers_installed() -> bool:
    """Whether the peers the `peers` workload measures are installed (the bench extra)."""
    try:
        return bool(version("pgqueuer") and version("procrastinate"))
    except PackageNotFoundError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated workloads: " + ", ".join(WORKLOADS))
    parser.add_argument("--skip", default="", help="comma-separated workloads not to run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(WORKLOADS)
    skipped = [n for n in args.skip.split(",") if n]
    unknown = [n for n in names + skipped if n not in WORKLOADS]
    names = [n for n in names if n not in skipped]
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}")
    report: dict[str, Any] = {
        "machine": machine(),
        "versions": {p: version(p) for p in ("aiohttp", "asyncpg", "msgspec", "aiodocker")},
        "peers_installed": peers_installed(),
        "quick": args.quick,
    }
    postgres = subprocess.run(
        ["/usr/lib/postgresql/15/bin/postgres", "--version"], capture_output=True, text=True
    )
    report["versions"]["postgres"] = postgres.stdout.strip()
    # A smoke run shares one cluster and one image build among its workloads.
    with shared_cluster() if args.quick else contextlib.nullcontext():
        for name in names:
            report[name] = run(name, args.quick)
    print(json.dumps(report, indent=2))
    return 1 if any("error" in report[n] for n in names) else 0


if __name__ == "__main__":
    sys.exit(main())
