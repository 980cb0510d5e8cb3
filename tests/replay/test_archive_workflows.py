"""`replay archive` of workflow runs (issue 19): a run that ended before the cut-off goes with
its step jobs in one batch; a run still going, or ended after the cut-off, stays with every
step job, finished or not. Verify, rebuild and import still account for the archived runs'
`workflow_runs` rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from jobledger.domain.archives import StreamsArchived
from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import Finish, JobState, Start
from jobledger.domain.workflow_specs import WorkflowSpec
from jobledger.domain.workflows import Run, StepState
from jobledger.replay.archive import import_lines
from jobledger.replay.archiving import archive_before, archive_files
from jobledger.replay.rebuild import rebuild
from jobledger.replay.verify import Problem, Verifier
from jobledger.service import JobService
from jobledger.workflowservice import WorkflowService
from tests.factories import spec as job_spec

META = EventMeta(actor="test")


def wf_spec(*steps: tuple[str, list[str]]) -> WorkflowSpec:
    body = {"steps": [{"name": n, "needs": needs, "spec": {"image": "b"}} for n, needs in steps]}
    return msgspec.convert(body, WorkflowSpec)


async def advance(
    wf: WorkflowService, service: JobService, run_id: uuid.UUID, *, steps: int
) -> Run:
    """Move a run on as the runtime would, running at most `steps` of its child jobs to
    success (real jobs through the job service), then letting the run record their ends."""
    for _ in range(20):
        await wf.react(run_id, "test")
        state = await wf.load(run_id)
        queued = [
            job
            for s in state.steps.values()
            if s.state is StepState.RUNNING and s.job_id is not None
            and (job := await service.load(s.job_id)) is not None
            and job.state is JobState.QUEUED
        ]  # fmt: skip
        if state.is_terminal or not queued or steps == 0:
            return state
        await service.execute(queued[0].id, Start(worker_id="w"), META)
        await service.execute(queued[0].id, Finish(exit_code=0), META)
        steps -= 1
    raise AssertionError("the run did not settle")


async def verify(pool: asyncpg.Pool, archive: Path | None = None) -> list[Problem]:
    return [p async for p in Verifier(pool, batch=5, archive=archive).problems()]


async def runs_rows(pool: asyncpg.Pool) -> dict[uuid.UUID, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM workflow_runs ORDER BY stream_id")
    return {r["stream_id"]: dict(r) for r in rows}


async def in_log(pool: asyncpg.Pool) -> set[uuid.UUID]:
    return {r["stream_id"] for r in await pool.fetch("SELECT DISTINCT stream_id FROM events")}


class Archived(msgspec.Struct):
    cutoff: datetime
    old: Run  # ended before the cut-off, three steps
    going: Run  # one step finished before the cut-off, one still running
    recent: Run  # ended after the cut-off
    job: uuid.UUID  # a job of no run, ended before the cut-off
    runs_before: dict[uuid.UUID, dict[str, Any]]
    to: Path


def step_jobs(run: Run) -> set[uuid.UUID]:
    return {s.job_id for s in run.steps.values() if s.job_id is not None}


@pytest.fixture
async def archived(pool: asyncpg.Pool, service: JobService, tmp_path: Path) -> Archived:
    wf = WorkflowService(service)
    old = await wf.submit(wf_spec(("a", []), ("b", ["a"]), ("c", ["a"])), META)
    old = await advance(wf, service, old.id, steps=3)
    going = await wf.submit(wf_spec(("a", []), ("b", ["a"])), META)
    going = await advance(wf, service, going.id, steps=1)
    alone, _ = await service.submit(job_spec(), META)
    await service.execute(alone.id, Start(worker_id="w"), META)
    await service.execute(alone.id, Finish(exit_code=0), META)
    cutoff = await pool.fetchval("SELECT clock_timestamp()")
    recent = await wf.submit(wf_spec(("a", [])), META)
    recent = await advance(wf, service, recent.id, steps=1)
    assert old.state.value == "succeeded" and len(step_jobs(old)) == 3
    assert going.state.value == "running"
    assert going.steps["a"].state is StepState.SUCCEEDED
    assert going.steps["b"].state is StepState.RUNNING
    assert recent.state.value == "succeeded"
    assert await verify(pool) == []
    to = tmp_path / "archive"
    report = await archive_before(pool, cutoff, to, batch=2)
    # The run and its three jobs in one batch, bigger than 2: a run is never split.
    assert report.kinds == {"workflow": 1, "job": 4}
    assert len(report.files) == 2
    return Archived(
        cutoff=cutoff, old=old, going=going, recent=recent, job=alone.id,
        runs_before=await runs_rows(pool), to=to,
    )  # fmt: skip


async def test_an_ended_run_goes_with_its_step_jobs_and_a_running_run_stays(
    pool: asyncpg.Pool, service: JobService, archived: Archived
) -> None:
    a = archived
    left = await in_log(pool)
    gone = {a.old.id, a.job, *step_jobs(a.old)}
    assert not gone & left
    # The running run stays with its finished step's job; the recent run with its job.
    assert {a.going.id, *step_jobs(a.going), a.recent.id, *step_jobs(a.recent)} <= left
    # The run and its jobs went in one batch, and the checkpoint says which is which.
    rows = await pool.fetch(
        "SELECT data FROM events WHERE stream_type = 'archive' ORDER BY position"
    )
    first = msgspec.json.decode(rows[0]["data"].encode(), type=StreamsArchived)
    assert set(first.streams) == {a.old.id, *step_jobs(a.old)}
    assert first.kind_of(a.old.id) == "workflow"
    assert {first.kind_of(j) for j in step_jobs(a.old)} == {"job"}
    assert first.states[str(a.old.id)]["state"] == "succeeded"
    # Rows stay as they were; the run still loads (from its row) with its steps' jobs.
    assert await runs_rows(pool) == a.runs_before
    loaded = await WorkflowService(service).load(a.old.id)
    assert (loaded.state, step_jobs(loaded)) == (a.old.state, step_jobs(a.old))
    assert await verify(pool) == []
    assert await verify(pool, a.to) == []
    # Nothing more to archive until the running run ends (and then only after a later cut).
    again = await archive_before(pool, a.cutoff, a.to)
    assert (again.streams, again.files) == (0, [])


async def test_a_changed_row_of_an_archived_run_is_reported(
    pool: asyncpg.Pool, archived: Archived
) -> None:
    await pool.execute(
        "UPDATE workflow_runs SET state = 'failed' WHERE stream_id = $1", archived.old.id
    )
    problems = await verify(pool)
    assert [(p.kind, p.stream_type, p.stream_id) for p in problems] == [
        ("projection_differs", "workflow", archived.old.id)
    ]


async def test_rebuild_reproduces_the_rows_of_archived_runs(
    pool: asyncpg.Pool, archived: Archived
) -> None:
    jobs_before = await pool.fetch("SELECT id, state, workflow_run FROM jobs ORDER BY id")
    await pool.execute("DELETE FROM workflow_runs")
    await pool.execute("DELETE FROM jobs")
    report = await rebuild(pool, batch=3, restart=True)
    assert report.tables["workflow_runs"] == 3
    assert await runs_rows(pool) == archived.runs_before
    assert await pool.fetch("SELECT id, state, workflow_run FROM jobs ORDER BY id") == jobs_before
    assert await verify(pool) == []


async def test_import_of_the_archive_into_an_empty_database_restores_the_run(
    pool: asyncpg.Pool, other_pool: asyncpg.Pool, archived: Archived
) -> None:
    a = archived
    lines = [line for f in archive_files(a.to) for line in f.read_bytes().splitlines()]
    await import_lines(other_pool, lines)
    assert await in_log(other_pool) == {a.old.id, a.job, *step_jobs(a.old)}
    await rebuild(other_pool, restart=True)
    assert await runs_rows(other_pool) == {a.old.id: a.runs_before[a.old.id]}
    restored = await other_pool.fetch("SELECT * FROM jobs ORDER BY id")
    original = await pool.fetch(
        "SELECT * FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id", [a.job, *step_jobs(a.old)]
    )
    assert [r["id"] for r in restored] == [r["id"] for r in original]
    assert [r["state"] for r in restored] == [r["state"] for r in original]
    assert await verify(other_pool) == []


def test_a_checkpoint_written_before_kinds_were_recorded_still_decodes() -> None:
    """Checkpoints from before workflow runs were archived name no kinds: all jobs."""
    sid = uuid.uuid4()
    old = {
        "type": "StreamsArchived", "before": "2026-01-01T00:00:00Z", "file": "f.ndjson",
        "sha256": "00", "streams": [str(sid)], "events": 3, "first_position": 1,
        "last_position": 3, "states": {str(sid): {}},
    }  # fmt: skip
    cp = msgspec.convert(old, StreamsArchived, strict=False)
    assert (cp.kinds, cp.kind_of(sid)) == ({}, "job")
