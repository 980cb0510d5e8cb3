"""Schedules that run a workflow, fired as a `worker`/`serve` process fires them (a
scheduler with the process executor, `Firing` and a `WorkflowRuntime` in this process):
every second a run with the occurrence's id whose steps run and know their schedule; while
a run's step still runs, overlap `skip` records the next occurrences as skipped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from jobledger.domain.events import EventMeta
from jobledger.domain.schedules import SCHEDULE, Overlap, ScheduleRun, ScheduleSettings, run_id
from jobledger.domain.workflow_specs import WorkflowSpec
from jobledger.domain.workflows import RunState, StepState
from jobledger.runtime.firing import Firing
from jobledger.runtime.process import ProcessExecutor
from jobledger.runtime.workflows import WorkflowRuntime
from jobledger.scheduleservice import ScheduleService
from jobledger.service import JobService
from tests.runtime.conftest import StartScheduler

META = EventMeta(actor="test")


@pytest.fixture
async def schedules(
    service: JobService, dsn: str, start_scheduler: StartScheduler
) -> AsyncIterator[ScheduleService]:
    """What one `worker` process runs: a scheduler, the firing and the workflow runtime."""
    await start_scheduler(ProcessExecutor(), capacity=4, poll_interval=1.0)
    schedules = ScheduleService(service)
    firing = Firing(schedules, dsn, "test-firing", poll_interval=1.0)
    runtime = WorkflowRuntime(schedules.workflows, dsn, "test-runtime", poll_interval=1.0)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(firing.run(stop)), asyncio.create_task(runtime.run(stop))]
    yield schedules
    stop.set()
    await asyncio.gather(*tasks)


def every_second(overlap: Overlap, *steps: dict[str, Any]) -> ScheduleSettings:
    spec = msgspec.convert({"steps": list(steps)}, WorkflowSpec)
    return ScheduleSettings(cron="* * * * * *", run=ScheduleRun(workflow=spec), overlap=overlap)


def sh(name: str, script: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "spec": {"image": "x", "command": ["sh", "-c", script]}, **kw}


async def fired_runs(pool: asyncpg.Pool, name: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT data FROM events WHERE stream_id = $1 AND type = 'ScheduleFired' ORDER BY version",
        SCHEDULE.stream_id("default", name),
    )
    return [msgspec.json.decode(r["data"]) for r in rows]


async def test_each_occurrence_starts_a_run_whose_steps_run_and_know_the_schedule(
    schedules: ScheduleService, service: JobService, pool: asyncpg.Pool
) -> None:
    settings = every_second(
        Overlap.SKIP,
        sh("extract", 'test "$JOBLEDGER_SCHEDULE" = tick && test -n "$JOBLEDGER_OCCURRENCE"'),
        sh("load", "true", needs=["extract"]),
    )
    await schedules.create("default", "tick", settings, META)
    async with asyncio.timeout(60):
        while True:
            runs, _ = await schedules.workflows.list(
                projects=["default"], states=None, before=None, limit=10, schedule="tick"
            )
            if any(r.state is RunState.SUCCEEDED for r in runs):
                break
            await asyncio.sleep(0.2)
    await schedules.pause("default", "tick", META)
    done = next(r for r in runs if r.state is RunState.SUCCEEDED)
    assert [s.state for s in done.steps.values()] == [StepState.SUCCEEDED] * 2
    sid = SCHEDULE.stream_id("default", "tick")
    assert done.occurrence is not None and done.id == run_id(sid, done.occurrence)
    job = await service.load(done.steps["extract"].job_id)  # type: ignore[arg-type]
    assert job is not None and job.workflow_run == done.id
    assert job.spec.env["JOBLEDGER_SCHEDULE"] == "tick"
    assert job.spec.env["JOBLEDGER_OCCURRENCE"] == done.occurrence.isoformat()
    # Each fired occurrence names its run; the occurrences list shows it with its state.
    fired = await fired_runs(pool, "tick")
    assert str(done.id) in [f["workflow_run"] for f in fired]
    assert all(f["job_id"] is None for f in fired)
    page = await schedules.occurrences("default", "tick")
    shown = next(o for o in page.occurrences if o.workflow_run == done.id)
    assert (shown.outcome, shown.workflow_run_state) == ("fired", RunState.SUCCEEDED)


async def test_overlap_skip_records_occurrences_while_a_runs_step_runs(
    schedules: ScheduleService, pool: asyncpg.Pool
) -> None:
    settings = every_second(Overlap.SKIP, sh("slow", "sleep 60"))
    await schedules.create("default", "slow", settings, META)
    async with asyncio.timeout(60):
        while len(await pool.fetch(
            "SELECT 1 FROM events WHERE stream_id = $1 AND type = 'ScheduleSkipped' "
            "AND data ->> 'reason' = 'overlap'", SCHEDULE.stream_id("default", "slow"),
        )) < 3:  # fmt: skip
            await asyncio.sleep(0.2)
    await schedules.pause("default", "slow", META)
    [fired] = await fired_runs(pool, "slow")
    run = await schedules.workflows.load(uuid.UUID(fired["workflow_run"]))
    assert run.state is RunState.RUNNING and run.steps["slow"].state is StepState.RUNNING
    cancelled = await schedules.workflows.cancel(run.id, "test over", META)
    assert cancelled.state is RunState.CANCELLING
    async with asyncio.timeout(30):
        while (await schedules.workflows.load(run.id)).state is not RunState.CANCELLED:
            await asyncio.sleep(0.2)
