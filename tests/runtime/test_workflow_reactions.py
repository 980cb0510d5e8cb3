"""Workflow reactions after a crash, without a scheduler: a step recorded as started whose
process died before creating its job gets it from the next sweep, or, if the run was
cancelled meanwhile, ends cancelled with no job made; a job cancelled by hand ends its
step cancelled."""

from __future__ import annotations

import msgspec

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import JobState, RequestCancel
from jobledger.domain.workflow_specs import WorkflowSpec
from jobledger.domain.workflows import Cancel, Run, StepJobStarted, StepState, child_job_id
from jobledger.service import JobService
from jobledger.workflowservice import WorkflowService

META = EventMeta(actor="test")


def spec(*names: str) -> WorkflowSpec:
    body = {"steps": [{"name": n, "spec": {"image": "b"}} for n in names]}
    return msgspec.convert(body, WorkflowSpec)


async def crashed_after_start(wf: WorkflowService, *names: str) -> Run:
    """A run whose steps were recorded as started by a process that died right after."""
    run = await wf.submit(spec(*names), META)
    for name in names:
        run = await wf._execute(
            run.id, StepJobStarted(step=name, job_id=child_job_id(run.id, name)), META
        )
    return run


async def test_the_sweep_creates_the_job_of_a_started_step(service: JobService) -> None:
    wf = WorkflowService(service)
    run = await crashed_after_start(wf, "a")
    assert await wf.pending() == [run.id]
    assert await wf.react(run.id, "sweeper") == 1
    job = await service.load(child_job_id(run.id, "a"))
    assert job is not None and job.state is JobState.QUEUED and job.step == "a"
    assert await wf.pending() == []
    assert await wf.react(run.id, "sweeper") == 0

    # Cancelled by hand: the step ends cancelled, the run failed.
    await service.execute(job.id, RequestCancel(), META)
    assert await wf.pending() == [run.id]
    await wf.react(run.id, "sweeper")
    state = await wf.load(run.id)
    assert state.steps["a"].state is StepState.CANCELLED and state.state.value == "failed"


async def test_a_started_step_of_a_cancelled_run_gets_no_job(service: JobService) -> None:
    wf = WorkflowService(service)
    run = await crashed_after_start(wf, "a", "b")
    await wf._execute(run.id, Cancel(reason="stop"), META)
    await wf.react(run.id, "sweeper")
    state = await wf.load(run.id)
    assert state.state.value == "cancelled"
    assert {s.state for s in state.steps.values()} == {StepState.CANCELLED}
    for name in ("a", "b"):
        assert await service.load(child_job_id(run.id, name)) is None
