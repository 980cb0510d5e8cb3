"""Workflow runs: submit, cancel and rerun them (one stream each, through
`StreamService.execute`), read them, and the reactions that move them (`react`, called by
every scheduler process through `runtime.workflows`).

A reaction decides on the run's stream first and acts after: a ready step is recorded as
`StepStarted` with its child job's deterministic id (`child_job_id`), and only then is the
job created (`JobService.submit_as`, with an idempotency key derived from the run and the
step). Of several processes reacting at once, the run's expected version lets one record
it; every one may then create the job, which exists once. So no step starts after a cancel
was recorded (the cancel and the start are decided on the same stream), and a process that
dies between the two leaves a running step without a job, which the next sweep creates —
or, if the run was cancelled meanwhile, records as cancelled. A child job that ends is
recorded as `StepJobEnded` (a repeated delivery records nothing); a run being cancelled has
its running steps' jobs cancelled the usual way."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog

from .catalog import Catalog
from .domain.errors import (
    ConcurrencyError,
    DomainError,
    InvalidTransition,
    InvalidValue,
    NotFound,
)
from .domain.events import EventMeta, Recorded
from .domain.jobs import Job, JobState, RequestCancel
from .domain.jobs import Submit as JobSubmit
from .domain.schedules import OCCURRENCE_ENV, SCHEDULE_ENV
from .domain.workflow_specs import WorkflowSpec, needs_of, validate
from .domain.workflows import (
    RUN_LABEL,
    STEP_LABEL,
    WORKFLOW,
    Cancel,
    Outcome,
    RerunMode,
    Run,
    RunState,
    StepJobEnded,
    StepJobStarted,
    StepRun,
    StepState,
    Submit,
    child_job_id,
    child_label,
    ready_steps,
    rerun_plan,
    step_inputs,
    waiting_reason,
)
from .service import JobService, StreamService
from .store.db import Conn
from .store.eventstore import Announce, Change
from .store.queries import load_queries
from .wire import WorkflowRunOut, WorkflowStepOut

log = structlog.get_logger(__name__)
QUERIES = load_queries(Path(__file__).with_name("workflows.sql"))

#: The state a run's NOTIFY carries: workflow runtimes wake for it.
WORKFLOW_CHANGE = "workflow"
_steps_decoder = msgspec.json.Decoder(list[StepRun])
_spec_decoder = msgspec.json.Decoder(WorkflowSpec)
_OUTCOMES = {
    JobState.SUCCEEDED: Outcome.SUCCEEDED,
    JobState.FAILED: Outcome.FAILED,
    JobState.CANCELLED: Outcome.CANCELLED,
}


async def _announce(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
    # One NOTIFY naming the run with a state of its own: workflow runtimes wake for it.
    last = {r.stream_id: r.version for r in recorded}
    channel, payload = announce([Change(s, v, WORKFLOW_CHANGE) for s, v in last.items()])
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


def new_run_id() -> uuid.UUID:
    """A fresh run id: random, not a time-ordered UUIDv7 like a job's, whose first 8 hex
    digits (the `RUN` of a child's `RUN.N` label) are the same for every run of a minute."""
    return uuid.uuid4()


class WorkflowService:
    """The one way workflow runs change, and the reactions that move them."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.store = jobs.store
        self.pool: asyncpg.Pool = jobs.pool
        self.streams = StreamService(jobs.store)
        self.catalog = Catalog(jobs)

    async def _execute(self, run_id: uuid.UUID, command: Any, meta: EventMeta) -> Run:
        state: Run = await self.streams.execute(
            WORKFLOW.name, run_id, command, meta, also=_announce
        )
        return state

    # ---- commands -----------------------------------------------------------------------

    async def submit(self, spec: WorkflowSpec, meta: EventMeta) -> Run:
        """A new run of a spec (422 naming the field if it does not hold together, or if a
        definition step does not resolve now)."""
        validate(spec)
        await self.check_definitions(spec)
        return await self._execute(new_run_id(), Submit(spec=spec), meta)

    async def submit_as(self, run_id: uuid.UUID, command: Submit, meta: EventMeta) -> Run:
        """A run whose id the caller derived (a schedule's occurrence): a second submit of
        the same id, from any process, is refused (`InvalidTransition`: it exists, or
        `ConcurrencyError` at the same moment), so the run starts once."""
        return await self._execute(run_id, command, meta)

    async def check_definitions(self, spec: WorkflowSpec) -> None:
        """Refuse a definition step that does not resolve now: 422 naming the step's field."""
        for i, step in enumerate(spec.steps):
            if step.definition is None:
                continue
            try:
                await self.catalog.resolve(step.definition, spec.project)
            except DomainError as exc:
                details = dict(exc.details)
                inner = details.get("field")
                at = f"$.steps[{i}].definition"
                details["field"] = at + inner[1:] if isinstance(inner, str) else at
                details["step"] = step.name
                # A definition, version or environment that does not exist is the body's
                # fault: 422 naming it, as a schedule's run (a 404 would say the route).
                kind = InvalidValue if isinstance(exc, NotFound) else type(exc)
                raise kind(exc.message, **details) from None

    async def cancel(self, run_id: uuid.UUID, reason: str | None, meta: EventMeta) -> Run:
        """Cancel a run: what has not started is skipped, running steps' jobs cancelled."""
        state = await self._execute(run_id, Cancel(reason=reason), meta)
        await self._cancel_jobs(state, meta)
        return state

    async def rerun(self, run_id: uuid.UUID, mode: RerunMode, meta: EventMeta) -> Run:
        """A new run of an ended run's spec: whole, or from its failed steps."""
        old = await self.load(run_id)
        return await self._execute(new_run_id(), rerun_plan(old, mode), meta)

    # ---- reads --------------------------------------------------------------------------

    async def load(self, run_id: uuid.UUID) -> Run:
        """A run folded from its stream (an archived run: its row); `NotFound` if none."""
        state, _ = await self.streams.load(WORKFLOW.name, run_id)
        if state is None:
            # Issue 19: an archived run's events left the log; its row stays, as it ended.
            row = await self.pool.fetchrow(QUERIES["run_row"], run_id)
            if row is not None:
                return run_of_row(row)
            raise NotFound("workflow run not found", run_id=str(run_id))
        run: Run = state
        return run

    async def project_of(self, run_id: uuid.UUID) -> str | None:
        project: str | None = await self.pool.fetchval(QUERIES["run_project"], run_id)
        return project

    async def list(
        self,
        *,
        projects: list[str] | None,
        states: list[RunState] | None,
        before: tuple[Any, uuid.UUID] | None,
        limit: int,
        schedule: str | None = None,
    ) -> tuple[list[Run], tuple[Any, uuid.UUID] | None]:
        """Runs newest first (of these projects, None: all; in these states; started by
        this schedule), a page after `before` (created_at, id), and the next page's
        position."""
        rows = await self.pool.fetch(
            QUERIES["list_runs"],
            projects,
            [s.value for s in states] if states else None,
            before[0] if before else None,
            before[1] if before else None,
            limit + 1,
            schedule,
        )
        runs = [run_of_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return runs, ((runs[-1].created_at, runs[-1].id) if more and runs else None)

    async def events(self, run_id: uuid.UUID) -> list[Recorded]:
        return await self.store.read_stream(run_id)

    # ---- reactions ----------------------------------------------------------------------

    async def pending(self) -> list[uuid.UUID]:
        """The unfinished runs something is to be done for: a ready step, a running step
        whose job has ended or does not exist, or (being cancelled) whose job still runs."""
        rows = await self.pool.fetch(QUERIES["unfinished_runs"])
        if not rows:
            return []
        steps = {r["stream_id"]: _steps_decoder.decode(r["steps"]) for r in rows}
        job_ids = [s.job_id for ss in steps.values() for s in ss if s.job_id is not None and
                   s.state is StepState.RUNNING]  # fmt: skip
        jobs = {
            r["id"]: JobState(r["state"])
            for r in await self.pool.fetch(QUERIES["job_states"], job_ids)
        }
        out: list[uuid.UUID] = []
        for r in rows:
            cancelling = r["state"] == RunState.CANCELLING.value
            for s in steps[r["stream_id"]]:
                job = jobs.get(s.job_id) if s.job_id is not None else None
                if s.state is StepState.READY or (
                    s.state is StepState.RUNNING
                    and (
                        job is None
                        or job in _OUTCOMES
                        or (cancelling and job is not JobState.CANCELLING)
                    )
                ):
                    out.append(r["stream_id"])
                    break
        return out

    async def react(self, run_id: uuid.UUID, actor: str) -> int:
        """Do what a run's state asks for now (see the module docstring); returns how many
        events and jobs this call recorded or created. Safe to call from several
        processes at once and to repeat."""
        done = 0
        for _ in range(1000):  # each round records something, or stops
            state = await self.load(run_id)
            if state.is_terminal:
                return done
            meta = EventMeta(
                actor=actor, correlation_id=state.correlation_id or f"workflow:{run_id}"
            )
            moved = False
            for name in ready_steps(state):
                try:
                    state = await self._execute(
                        run_id, StepJobStarted(step=name, job_id=child_job_id(run_id, name)), meta
                    )
                    moved = True
                except InvalidTransition:
                    moved = True  # another process moved the run: look again
            running = [s for s in state.steps.values() if s.state is StepState.RUNNING]
            for step in running:
                assert step.job_id is not None
                job = await self.jobs.load(step.job_id)
                if job is None:
                    if state.cancel_requested:
                        moved |= await self._ended(state, step, Outcome.CANCELLED, None, meta)
                    else:
                        moved |= await self._create_child(state, step, meta)
                    done += 1
                elif job.is_terminal:
                    moved |= await self._ended(
                        state, step, _OUTCOMES[job.state], _reason(job), meta, job
                    )
                    done += 1
            if state.cancel_requested:
                done += await self._cancel_jobs(state, meta)
            if not moved:
                return done
        return done  # pragma: no cover

    async def _ended(
        self,
        state: Run,
        step: StepRun,
        outcome: Outcome,
        reason: str | None,
        meta: EventMeta,
        job: Job | None = None,
    ) -> bool:
        assert step.job_id is not None
        command = StepJobEnded(
            step=step.name, job_id=step.job_id, outcome=outcome, reason=reason,
            output=job.output if job is not None and outcome is Outcome.SUCCEEDED else None,
            output_sha256=(
                job.output_sha256 if job is not None and outcome is Outcome.SUCCEEDED else None
            ),
        )  # fmt: skip
        with contextlib.suppress(InvalidTransition):  # told by another process meanwhile
            await self._execute(state.id, command, meta)
        return True

    async def _create_child(self, state: Run, step: StepRun, meta: EventMeta) -> bool:
        """Create a running step's child job (once, whoever calls); a step whose job cannot
        be made (its definition disabled since, say) fails with the reason."""
        assert step.job_id is not None
        spec_step = next(s for s in state.spec.steps if s.name == step.name)
        project = state.spec.project
        # The run's labels, the step's own over them, jobledger's over both.
        ours = {RUN_LABEL: str(state.id), STEP_LABEL: step.name}
        key = f"jobledger.workflow/{state.id}/{step.name}"
        # A schedule's run: its steps' jobs know the schedule and occurrence as a job of the
        # schedule does (variables only: the `jobledger.schedule` label counts a schedule's
        # own jobs, and the run is what counts for its overlap policy).
        from_schedule = (
            {SCHEDULE_ENV: state.schedule, OCCURRENCE_ENV: state.occurrence.astimezone(UTC)
             .isoformat()}
            if state.schedule is not None and state.occurrence is not None else {}
        )  # fmt: skip
        try:
            if spec_step.definition is not None:
                base = await self.catalog.resolve(spec_step.definition, project)
            else:
                assert spec_step.spec is not None
                base = JobSubmit(spec=spec_step.spec)
            spec = msgspec.structs.replace(
                base.spec, project=project, idempotency_key=key,
                labels={**state.spec.labels, **base.spec.labels, **ours},
                env={**base.spec.env, **from_schedule},
            )  # fmt: skip
            # Its needs' outputs are its inputs.
            command = msgspec.structs.replace(
                base, spec=spec, workflow_run=state.id, step=step.name,
                inputs=step_inputs(state, step.name),
                injected=base.injected | frozenset(from_schedule),
            )  # fmt: skip
            child_meta = msgspec.structs.replace(meta, causation_id=f"workflow:{state.id}")
            await self.jobs.submit_as(step.job_id, command, child_meta)
        except ConcurrencyError:
            return True  # another process created it at the same moment
        except DomainError as exc:
            log.warning("step job not created", run_id=str(state.id), step=step.name,
                        error=exc.message)  # fmt: skip
            return await self._ended(
                state, step, Outcome.FAILED, f"its job could not be made: {exc.message}", meta
            )
        return True

    async def _cancel_jobs(self, state: Run, meta: EventMeta) -> int:
        """Cancel the running steps' jobs of a run being cancelled (those not ended or
        already being cancelled); returns how many this call asked to cancel."""
        ids = [
            s.job_id
            for s in state.steps.values()
            if s.state is StepState.RUNNING and s.job_id is not None
        ]
        if not ids:
            return 0
        rows = await self.pool.fetch(QUERIES["job_states"], ids)
        live = [r["id"] for r in rows if r["state"] in (JobState.QUEUED, JobState.RUNNING)]
        if not live:
            return 0
        results = await self.jobs.execute_many(
            {i: RequestCancel(reason=f"workflow run {state.id} cancelled") for i in live},
            meta,
        )
        return sum(1 for r in results.values() if not isinstance(r, DomainError))


def _reason(job: Job) -> str | None:
    if job.state is not JobState.FAILED:
        return None
    reason = job.failure_reason.value if job.failure_reason is not None else "failed"
    return f"{reason}: {job.message}" if job.message else reason


def run_of_row(row: asyncpg.Record) -> Run:
    """A `workflow_runs` row as the run's state (what the list shows)."""
    spec = _spec_decoder.decode(row["spec"])
    steps = _steps_decoder.decode(row["steps"])
    return Run(
        id=row["stream_id"], version=row["version"], spec=spec, needs=needs_of(spec),
        steps={s.name: s for s in steps}, state=RunState(row["state"]),
        submitted_by=row["submitted_by"], created_at=row["created_at"],
        updated_at=row["updated_at"], finished_at=row["finished_at"], rerun_of=row["rerun_of"],
        schedule=row["schedule"], occurrence=row["occurrence"],
    )  # fmt: skip


def run_out(run: Run) -> WorkflowRunOut:
    """A run as the API shows it: each step with its child's `RUN.N` label and why it
    waits."""
    conditions = {s.name: s.condition for s in run.spec.steps}
    steps = [
        WorkflowStepOut(
            name=s.name,
            state=s.state,
            label=child_label(run.id, run.spec, s.name),
            needs=list(run.needs[s.name]),
            condition=conditions[s.name],
            job_id=s.job_id,
            waiting_reason=waiting_reason(run, s.name),
            ready_at=s.ready_at,
            started_at=s.started_at,
            finished_at=s.finished_at,
            reason=s.reason,
            skip_reason=s.skip_reason,
            output=s.output,
            output_sha256=s.output_sha256,
            from_run=s.from_run,
        )
        for s in run.steps.values()
    ]
    return WorkflowRunOut(
        id=run.id, project=run.spec.project, state=run.state, steps=steps, spec=run.spec,
        submitted_by=run.submitted_by, created_at=run.created_at, updated_at=run.updated_at,
        finished_at=run.finished_at, rerun_of=run.rerun_of, version=run.version,
        schedule=run.schedule, occurrence=run.occurrence,
    )  # fmt: skip
