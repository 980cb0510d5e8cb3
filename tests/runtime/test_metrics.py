"""Metrics of running jobs (issue 19): real jobs through the API and a scheduler in this
process (process executor), counted by exactly what happened, read back through
`GET /metrics` with the Prometheus client's parser."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import JobState, Start
from jobledger.runtime.executor import Attempt, JobIO, Outcome, RunRequest
from jobledger.runtime.noop import NoopExecutor
from jobledger.service import JobService
from tests.runtime.conftest import StartScheduler
from tests.scraping import Scrape
from tests.watching import JobWatcher

Client = TestClient[web.Request, web.Application]  # type: ignore[type-arg]
DONE = {"succeeded", "failed", "cancelled"}


async def scrape(client: Client) -> Scrape:
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    return Scrape(await resp.text())


async def submit(client: Client, project: str, command: str, **extra: Any) -> uuid.UUID:
    body = {"image": "x", "command": ["sh", "-c", command], "project": project, **extra}
    resp = await client.post("/api/v1/jobs", json=body)
    assert resp.status == 201, await resp.text()
    return uuid.UUID((await resp.json())["id"])


async def test_real_jobs_move_the_counters_and_histograms_by_what_happened(
    client: Client,
    pool: asyncpg.Pool,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    tmp_path: Path,
) -> None:
    for body in ({"name": "ran"}, {"name": "chatty", "log_limit_bytes": 1024}):
        assert (await client.post("/api/v1/projects", json=body)).status == 201
    await start_scheduler(capacity=4)
    marker = tmp_path / "tried"
    ok = await submit(client, "ran", "echo one; echo two; echo three")
    bad = await submit(client, "ran", "exit 3")
    # Fails once, then succeeds on its retry.
    retried = await submit(
        client, "ran", f"test -e {marker} || {{ touch {marker}; exit 4; }}",
        retry={"max_retries": 1, "backoff_seconds": 0},
    )  # fmt: skip
    # 100 lines of 99 bytes, the project keeps 1,024 bytes: 10 lines stored, 90 dropped.
    line = "x" * 99
    chatty = await submit(
        client, "chatty", f"i=0; while [ $i -lt 100 ]; do echo {line}; i=$((i+1)); done"
    )
    for job in (ok, bad, retried, chatty):
        await watcher.until(job, DONE)

    got = await scrape(client)
    assert got.value("jobledger_jobs_submitted_total", project="ran") == 3
    assert got.value("jobledger_jobs_started_total", project="ran") == 4  # the retry twice
    assert got.value("jobledger_jobs_started_total", project="chatty") == 1
    finished = "jobledger_jobs_finished_total"
    assert got.value(finished, project="ran", state="succeeded", reason="") == 2
    assert got.value(finished, project="ran", state="failed", reason="exit_code") == 1
    assert got.value(finished, project="chatty", state="succeeded", reason="") == 1
    assert got.value("jobledger_job_retries_total", project="ran", reason="exit_code") == 1
    # Histograms: one pickup per start, one run per ended job, by its state.
    assert got.value("jobledger_job_pickup_seconds_count", project="ran") == 4
    assert got.value("jobledger_job_pickup_seconds_bucket", project="ran", le="+Inf") == 4
    assert 0 < got.value("jobledger_job_pickup_seconds_sum", project="ran") < 60
    run = "jobledger_job_run_seconds"
    assert got.value(f"{run}_count", project="ran", state="succeeded") == 2
    assert got.value(f"{run}_count", project="ran", state="failed") == 1
    assert 0 < got.value(f"{run}_sum", project="ran", state="succeeded") < 60
    assert got.value("jobledger_claim_cycle_seconds_count") >= 4
    # Output: what the table holds, and what the limit dropped.
    stored = await pool.fetchrow(
        "SELECT count(*) AS n, sum(octet_length(line ->> 3)) AS bytes"
        " FROM job_logs, json_array_elements(lines) AS line"
    )
    assert got.value("jobledger_log_lines_stored_total") == stored["n"] > 0
    assert got.value("jobledger_log_bytes_stored_total") == stored["bytes"]
    assert got.value("jobledger_log_lines_dropped_total", reason="limit") == 90
    assert got.value("jobledger_log_bytes_dropped_total", reason="limit") == 90 * 99
    # The scheduler: idle again, its capacity, its executor answers.
    assert got.value("jobledger_worker_running_jobs") == 0
    assert got.value("jobledger_worker_capacity") == 4
    assert got.value("jobledger_executor_up", executor="process") == 1
    # Nothing here carries a job's id.
    ids = {str(j) for j in (ok, bad, retried, chatty)}
    assert not any(v in ids for labels in got.samples for _, v in labels[1])


class Broken(NoopExecutor):
    """An executor whose every start fails with an error of its own."""

    name = "broken"

    async def start(self, req: RunRequest, io: JobIO | None) -> Attempt | Outcome:
        raise RuntimeError("the executor broke")


async def test_an_executors_own_error_is_counted(
    client: Client, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await start_scheduler(Broken())
    job = await submit(client, "default", "true")
    done = await watcher.until(job, DONE)
    assert done.failure_reason is FailureReason.WORKER_LOST
    got = await scrape(client)
    assert got.value("jobledger_executor_errors_total", executor="broken", kind="crash") == 1
    failed = {"project": "default", "state": "failed", "reason": "worker_lost"}
    assert got.value("jobledger_jobs_finished_total", **failed) == 1


async def test_lease_reaps_are_counted(
    client: Client,
    service: JobService,
    pool: asyncpg.Pool,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
) -> None:
    # A worker that claimed a job and then went silent long ago.
    await pool.execute(
        "INSERT INTO workers (id, tags, capacity, lease_seconds, executor, hostname, pid,"
        " heartbeat_at) VALUES ('ghost', '{}', 2, 1, 'docker', 'gone', 1, now() - '1 min'::interval)"  # noqa: E501
    )
    job = await submit(client, "default", "true")
    await service.execute(job, Start(worker_id="ghost"), EventMeta(actor="test"))
    await start_scheduler()
    assert (await watcher.until(job, DONE)).state is JobState.FAILED
    got = await scrape(client)
    assert got.value("jobledger_lease_reaps_total") == 1
    # The start (by `execute`, as the ghost) and the reaper's failure, once each.
    assert got.value("jobledger_jobs_started_total", project="default") == 1
    failed = {"project": "default", "state": "failed", "reason": "worker_lost"}
    assert got.value("jobledger_jobs_finished_total", **failed) == 1
    assert got.value("jobledger_job_run_seconds_count", project="default", state="failed") == 1
