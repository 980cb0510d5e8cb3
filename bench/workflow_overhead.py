"""What a workflow adds per step: one `jobledger serve` (its workflow reactor, scheduler and
executor in one process) runs `--runs` workflow runs of each shape, one run at a time,
submitted over HTTP: a chain of 5 steps (a → b → c → d → e) and a diamond (a → b, c → d).
From the log and by the database's clock, for every step: StepReady → its child's
JobSubmitted (the reactor's delay in making the job) and StepReady → the child's first
JobStarted (step ready → child job started); for every run: WorkflowSubmitted → its end
(wall time) and the events it wrote (its own stream, and with its child jobs'). Prints one
JSON document (and a short line on stderr).

    .venv/bin/python bench/workflow_overhead.py [--runs 20] [--executor noop|docker]
                                                [--shapes chain,diamond]

With `--executor docker` each step is a `true` container of the test image.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

import aiohttp
import asyncpg
from harness import ADMIN_TOKEN, IMAGE, machine, server, summary

STEP = {"image": IMAGE, "command": ["true"]}
SHAPES: dict[str, list[dict[str, Any]]] = {
    "chain": [{"name": n, "spec": STEP, **({"needs": [p]} if p else {})}
              for p, n in zip(["", "a", "b", "c", "d"], "abcde", strict=True)],
    "diamond": [
        {"name": "a", "spec": STEP},
        {"name": "b", "spec": STEP, "needs": ["a"]},
        {"name": "c", "spec": STEP, "needs": ["a"]},
        {"name": "d", "spec": STEP, "needs": ["b", "c"]},
    ],
}  # fmt: skip
ENDED = ("succeeded", "failed", "cancelled")

#: Per step: StepReady, then its StepStarted's job: that job's JobSubmitted and first JobStarted.
STEPS = """
SELECT r.stream_id AS run, r.data->>'step' AS step, r.recorded_at AS ready_at,
       j.recorded_at AS submitted_at,
       (SELECT min(x.recorded_at) FROM events x
        WHERE x.stream_id = j.stream_id AND x.type = 'JobStarted') AS started_at
FROM events r
JOIN events s ON s.stream_id = r.stream_id AND s.type = 'StepStarted'
             AND s.data->>'step' = r.data->>'step'
JOIN events j ON j.stream_id = (s.data->>'job_id')::uuid AND j.type = 'JobSubmitted'
WHERE r.type = 'StepReady' AND r.stream_id = ANY($1::uuid[])
"""
#: Per run: submitted → ended, its own events, and its child jobs' events.
RUNS = """
SELECT r.stream_id AS run,
       min(r.recorded_at) FILTER (WHERE r.type = 'WorkflowSubmitted') AS submitted_at,
       max(r.recorded_at) FILTER (WHERE r.type IN
           ('WorkflowSucceeded', 'WorkflowFailed', 'WorkflowCancelled')) AS ended_at,
       bool_or(r.type = 'WorkflowSucceeded') AS succeeded,
       count(*) AS run_events,
       (SELECT count(*) FROM events c WHERE c.stream_id IN (
           SELECT (s.data->>'job_id')::uuid FROM events s
           WHERE s.stream_id = r.stream_id AND s.type = 'StepStarted')) AS job_events
FROM events r
WHERE r.stream_id = ANY($1::uuid[])
GROUP BY r.stream_id
"""


async def run_all(url: str, shape: str, runs: int) -> list[uuid.UUID]:
    """Submit `runs` runs of `shape`, one at a time, each waited for (polled) to its end."""
    ids = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        for _ in range(runs):
            async with http.post(f"{url}/api/v1/workflows", json={"steps": SHAPES[shape]}) as r:
                assert r.status == 201, await r.text()
                run = (await r.json())["id"]
            for _ in range(6000):
                async with http.get(f"{url}/api/v1/workflows/{run}") as r:
                    view = await r.json()
                if view["state"] in ENDED:
                    break
                await asyncio.sleep(0.02)
            assert view["state"] == "succeeded", view
            ids.append(uuid.UUID(run))
    return ids


async def figures(dsn: str, shape: str, ids: list[uuid.UUID]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        steps = await conn.fetch(STEPS, ids)
        runs = await conn.fetch(RUNS, ids)
    finally:
        await conn.close()
    per_run = len(SHAPES[shape])
    assert len(steps) == per_run * len(ids), (len(steps), per_run, len(ids))
    assert len(runs) == len(ids) and all(r["succeeded"] for r in runs)
    return {
        "runs": len(ids),
        "steps": len(steps),
        "unit": "ms",
        "step_ready_to_job_submitted": summary(
            [(s["submitted_at"] - s["ready_at"]).total_seconds() for s in steps]
        ),
        "step_ready_to_job_started": summary(
            [(s["started_at"] - s["ready_at"]).total_seconds() for s in steps]
        ),
        "run_submitted_to_succeeded": summary(
            [(r["ended_at"] - r["submitted_at"]).total_seconds() for r in runs]
        ),
        "events_per_run": {
            "run_stream": max(r["run_events"] for r in runs),
            "with_child_jobs": max(r["run_events"] + r["job_events"] for r in runs),
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each shape")
    parser.add_argument("--executor", choices=("noop", "docker"), default="noop")
    parser.add_argument("--shapes", default="chain,diamond", help="comma-separated: chain,diamond")
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    report: dict[str, Any] = {"benchmark": "workflow_overhead", "executor": args.executor}
    async with server("--executor", args.executor, "--worker-id", "bench") as served:
        for shape in shapes:
            ids = await run_all(served.url, shape, args.runs)
            report[shape] = await figures(served.dsn, shape, ids)
    report["machine"] = machine()
    print(json.dumps(report, indent=2))
    parts = []
    for shape in shapes:
        figs = report[shape]
        j, s = figs["step_ready_to_job_submitted"], figs["step_ready_to_job_started"]
        w = figs["run_submitted_to_succeeded"]
        parts.append(
            f"{shape} x{args.runs}: ready→job p50 {j['median']:.1f} p99 {j['p99']:.1f}, "
            f"ready→started p50 {s['median']:.1f} p99 {s['p99']:.1f} max {s['max']:.1f}, "
            f"run p50 {w['median']:.0f} ms"
        )
    print(f"workflow overhead ({args.executor}): " + "; ".join(parts), file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
