"""Workflow runs, pure: a run of a spec of named steps with `needs` (the spec and its
validation: `domain.workflow_specs`) is a stream of its own whose state is the fold of its
events, like a job's.

A run is submitted with its whole spec (`WorkflowSubmitted`). From then on every decision
that records an outcome also records what follows from it (`plan`): the steps whose needs
are all finished become `StepReady` or, if their condition does not hold or the failure
policy stopped the run, `StepSkipped` (cascading in the same decision), and when every
step is finished the run's end (`WorkflowSucceeded`/`Failed`/`Cancelled`). Nothing else
moves a run, so no scheduler loop is needed: the runtime only reacts.

What the runtime does on this model:
- on `StepReady`: create the step's child job (`child_job_id(run, step)`, a deterministic
  id, so doing it twice is harmless; `child_label` is its readable `RUN.N`) and record
  `StepJobStarted(step, job_id)` — best in the same transaction as the job's creation, so
  a refused `StepJobStarted` (the run was cancelled meanwhile) leaves no job behind.
  `ready_steps(state)` lists the steps waiting for that (after a restart, say).
- when a step's child job ends: `StepJobEnded(step, job_id, outcome, output, ...)`; a
  repeated delivery records nothing.
- on `WorkflowCancelRequested`: cancel the jobs it names (`jobs`, the running steps'); their
  ends come back as `StepJobEnded(outcome=cancelled)`. Waiting and ready steps were skipped
  in that same decision: no step becomes ready or starts after a cancel was recorded, and
  no clean-up (`always`) step either.
- outputs: a step's child writes `OUTPUT_PATH`; the runtime caps (`MAX_OUTPUT_BYTES`) and
  masks it and passes it with the outcome; it is kept in `StepSucceeded`. Before a step's
  child starts, `step_inputs(state, step)` (its needs' outputs by step name) is copied
  into its container at `INPUTS_PATH`, named by the `INPUTS_ENV` variable.
- rerun: `rerun_plan(old_run, mode)` is the new run's `Submit`; steps kept from the old run
  are recorded as `StepReused` (with the run their output came from) at submit.

A child job cancelled by someone else (not by a run cancel) leaves its step `cancelled`,
which counts as a failure for conditions, the failure policy and the run's outcome.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from .errors import CorruptLog, InvalidTransition, InvalidValue, NotFound
from .events import Event, EventCodec, Recorded
from .kinds import StreamKind
from .workflow_specs import (
    Condition,
    FailurePolicy,
    Step,
    WorkflowSpec,
    needs_of,
    validate,
)

#: Most bytes of a step's output (its JSON as written), as the runtime caps it.
MAX_OUTPUT_BYTES = 64 * 1024
#: Where a step's child job writes its output, and where its inputs are copied.
OUTPUT_PATH = "/jobledger/output.json"
INPUTS_PATH = "/jobledger/inputs.json"
#: The environment variable naming the inputs file in a step's container.
INPUTS_ENV = "JOBLEDGER_INPUTS"
#: The environment variable naming where a job writes its output (any job, not only steps).
OUTPUT_ENV = "JOBLEDGER_OUTPUT"
#: Labels jobledger sets on a step's child job: its run's id and the step's name.
RUN_LABEL = "jobledger.workflow"
STEP_LABEL = "jobledger.step"


# ---- events -------------------------------------------------------------------------------


class SkipReason(enum.StrEnum):
    """Why a step did not run."""

    #: An `on_success` step with a need that failed, was skipped or cancelled.
    NEEDS_NOT_SUCCEEDED = "needs_not_succeeded"
    #: An `on_failure` step, and nothing it depends on failed.
    NO_FAILURE = "no_failure"
    #: The failure policy `stop`: a step failed, nothing new starts.
    STOPPED = "stopped"
    #: The run was cancelled before the step started.
    CANCELLED = "cancelled"


class Outcome(enum.StrEnum):
    """How a step's child job ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RerunMode(enum.StrEnum):
    """What a rerun runs again."""

    #: Every step.
    WHOLE = "whole"
    #: Only what did not succeed (and what depends on it); the rest is reused.
    FROM_FAILURE = "from_failure"


class WorkflowSubmitted(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A run was asked for: its whole spec (validated). For a rerun, the run it reruns."""

    spec: WorkflowSpec
    rerun_of: uuid.UUID | None = None
    rerun_mode: RerunMode | None = None
    #: A run a schedule started: the schedule's name and the occurrence.
    schedule: str | None = None
    occurrence: datetime | None = None


class StepReady(Event, frozen=True, kw_only=True):
    """The step's needs are finished and its condition holds: its child job is to be made."""

    step: str


class StepStarted(Event, frozen=True, kw_only=True):
    """The step's child job exists (queued or running: the job says)."""

    step: str
    job_id: uuid.UUID


class StepSucceeded(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The step's job succeeded; `output` is what it wrote (masked), if anything."""

    step: str
    output: Any = None
    output_sha256: str | None = None


class StepFailed(Event, frozen=True, kw_only=True):
    """The step's job failed; `reason` in words (the job's failure reason and message)."""

    step: str
    reason: str


class StepCancelled(Event, frozen=True, kw_only=True):
    """The step's job was cancelled (by the run's cancel, or on its own)."""

    step: str


class StepSkipped(Event, frozen=True, kw_only=True, omit_defaults=True):
    """The step will not run: its condition did not hold, the run stopped or was cancelled."""

    step: str
    reason: SkipReason
    detail: str | None = None


class StepReused(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A rerun kept the step's result from `from_run` (the run where it really ran)."""

    step: str
    from_run: uuid.UUID
    output: Any = None
    output_sha256: str | None = None


class WorkflowCancelRequested(Event, frozen=True, kw_only=True, omit_defaults=True):
    """Cancel was asked: `jobs` are the running steps' child jobs, to be cancelled."""

    reason: str | None = None
    jobs: list[uuid.UUID]


class WorkflowSucceeded(Event, frozen=True, kw_only=True):
    """Every step finished and none failed or was cancelled."""


class WorkflowFailed(Event, frozen=True, kw_only=True):
    """Every step finished; `failed` failed or had their job cancelled."""

    failed: list[str]


class WorkflowCancelled(Event, frozen=True, kw_only=True):
    """The run was cancelled and every step is finished."""


WORKFLOW_EVENTS: tuple[type[Event], ...] = (
    WorkflowSubmitted, StepReady, StepStarted, StepSucceeded, StepFailed, StepCancelled,
    StepSkipped, StepReused, WorkflowCancelRequested, WorkflowSucceeded, WorkflowFailed,
    WorkflowCancelled,
)  # fmt: skip


# ---- state --------------------------------------------------------------------------------


class StepState(enum.StrEnum):
    """Where a step of a run is."""

    #: Some need has not finished.
    WAITING = "waiting"
    #: Its child job is to be made.
    READY = "ready"
    #: Its child job exists and has not ended.
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Did not run (see `SkipReason`).
    SKIPPED = "skipped"
    #: A rerun kept its result from an earlier run.
    REUSED = "reused"
    #: Its child job was cancelled.
    CANCELLED = "cancelled"


STEP_TERMINAL = frozenset(
    {StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED, StepState.REUSED,
     StepState.CANCELLED}
)  # fmt: skip
#: What an `on_success` need must be.
STEP_SUCCESSFUL = frozenset({StepState.SUCCEEDED, StepState.REUSED})
#: What `on_failure` and the failure policy count as a failure.
STEP_FAILED = frozenset({StepState.FAILED, StepState.CANCELLED})


class RunState(enum.StrEnum):
    """Where a run is."""

    RUNNING = "running"
    #: Cancel was asked; running steps' jobs are being cancelled.
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})


class StepRun(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One step of a run."""

    name: str
    state: StepState = StepState.WAITING
    job_id: uuid.UUID | None = None
    ready_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    output_sha256: str | None = None
    #: Why it failed or was skipped.
    reason: str | None = None
    skip_reason: SkipReason | None = None
    #: For a reused step: the run that really ran it.
    from_run: uuid.UUID | None = None


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """A workflow run, folded from its events. `steps` in spec order."""

    id: uuid.UUID
    version: int
    spec: WorkflowSpec
    #: Each step's needs, its own and its stage's (`needs_of`).
    needs: dict[str, tuple[str, ...]]
    steps: dict[str, StepRun]
    state: RunState = RunState.RUNNING
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    cancel_requested_by: str | None = None
    rerun_of: uuid.UUID | None = None
    correlation_id: str | None = None
    #: The schedule that started it and the occurrence (None: not a schedule's run).
    schedule: str | None = None
    occurrence: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in RUN_TERMINAL

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None

    def step(self, name: str) -> StepRun:
        """A step by name; `NotFound` for a name the spec does not have."""
        try:
            return self.steps[name]
        except KeyError:
            raise NotFound(f"run has no step {name!r}", step=name) from None


# ---- commands -----------------------------------------------------------------------------


class Reuse(msgspec.Struct, frozen=True, kw_only=True):
    """A step's result a rerun keeps (see `rerun_plan`)."""

    from_run: uuid.UUID
    output: Any = None
    output_sha256: str | None = None


class Submit(msgspec.Struct, frozen=True, kw_only=True):
    """Create the run (validates the spec)."""

    spec: WorkflowSpec
    #: Steps whose results are kept from an earlier run, by name (a rerun from failure).
    reuse: dict[str, Reuse] = {}
    rerun_of: uuid.UUID | None = None
    rerun_mode: RerunMode | None = None
    #: A schedule's run: the schedule's name and the occurrence (set by jobledger).
    schedule: str | None = None
    occurrence: datetime | None = None


class StepJobStarted(msgspec.Struct, frozen=True, kw_only=True):
    """A ready step's child job was made."""

    step: str
    job_id: uuid.UUID


class StepJobEnded(msgspec.Struct, frozen=True, kw_only=True):
    """A step's child job ended."""

    step: str
    job_id: uuid.UUID
    outcome: Outcome
    #: For a failure: why, in words.
    reason: str | None = None
    output: Any = None
    output_sha256: str | None = None


class Cancel(msgspec.Struct, frozen=True, kw_only=True):
    """Cancel the run: skip what has not started, cancel the running steps' jobs."""

    reason: str | None = None


Command = Submit | StepJobStarted | StepJobEnded | Cancel


# ---- planning -----------------------------------------------------------------------------


def _failed_upstream(state: Run, name: str) -> str | None:
    """A step `name` depends on (directly or through its needs) that failed, if any."""
    seen: set[str] = set()
    todo = list(state.needs[name])
    while todo:
        need = todo.pop(0)
        if need in seen:
            continue
        seen.add(need)
        if state.steps[need].state in STEP_FAILED:
            return need
        todo += state.needs[need]
    return None


def _stopped(state: Run) -> bool:
    """Policy `stop` and a step failed: nothing new but always/on_failure steps starts."""
    return state.spec.failure_policy is FailurePolicy.STOP and any(
        s.state in STEP_FAILED for s in state.steps.values()
    )


def _verdict(state: Run, step: Step) -> Event | None:
    """What becomes of a waiting or ready step now: ready, skipped, or nothing yet."""
    me = state.steps[step.name]
    if state.cancel_requested:
        return StepSkipped(step=step.name, reason=SkipReason.CANCELLED)
    if step.condition is Condition.ON_SUCCESS and _stopped(state):
        return StepSkipped(step=step.name, reason=SkipReason.STOPPED)
    if me.state is StepState.READY:
        return None
    needs = [state.steps[n] for n in state.needs[step.name]]
    if any(n.state not in STEP_TERMINAL for n in needs):
        return None
    match step.condition:
        case Condition.ON_SUCCESS:
            bad = next((n for n in needs if n.state not in STEP_SUCCESSFUL), None)
            if bad is not None:
                return StepSkipped(
                    step=step.name,
                    reason=SkipReason.NEEDS_NOT_SUCCEEDED,
                    detail=f"{bad.name} {bad.state.value}",
                )
        case Condition.ON_FAILURE:
            if _failed_upstream(state, step.name) is None:
                return StepSkipped(step=step.name, reason=SkipReason.NO_FAILURE)
    return StepReady(step=step.name)


def _end(state: Run) -> Event | None:
    """The run's end, if every step has finished."""
    if state.is_terminal or any(s.state not in STEP_TERMINAL for s in state.steps.values()):
        return None
    if state.cancel_requested:
        return WorkflowCancelled()
    failed = [s.name for s in state.steps.values() if s.state in STEP_FAILED]
    return WorkflowFailed(failed=failed) if failed else WorkflowSucceeded()


def plan(state: Run) -> list[Event]:
    """What follows from the state as it is: steps made ready or skipped (a skip may make
    others ready or skipped: followed to the end), then the run's end if all finished."""
    out: list[Event] = []
    while True:
        round_ = [
            e
            for step in state.spec.steps
            if state.steps[step.name].state in (StepState.WAITING, StepState.READY)
            and (e := _verdict(state, step)) is not None
        ]
        if not round_:
            break
        for event in round_:
            state = _apply(state, event, state.updated_at, "")
        out += round_
    if (end := _end(state)) is not None:
        out.append(end)
    return out


def ready_steps(state: Run) -> list[str]:
    """The steps whose child job is to be made now, in spec order."""
    return [n for n, s in state.steps.items() if s.state is StepState.READY]


def waiting_reason(state: Run, name: str) -> str | None:
    """Why a waiting step waits: `waiting for extract, transform` (its unfinished needs, in
    spec order); None for a step that is not waiting."""
    if state.step(name).state is not StepState.WAITING:
        return None
    pending = [n for n in state.needs[name] if state.steps[n].state not in STEP_TERMINAL]
    return f"waiting for {', '.join(pending)}" if pending else None


def step_inputs(state: Run, name: str) -> dict[str, Any]:
    """The outputs a step's child gets (at `INPUTS_PATH`): its needs' that have one, by name."""
    return {
        n: state.steps[n].output
        for n in state.needs[state.step(name).name]
        if state.steps[n].output is not None
    }


def child_label(run_id: uuid.UUID, spec: WorkflowSpec, step: str) -> str:
    """A step's child job in readable form: `1a2b3c4d.2` (the run id's first 8 hex digits,
    the step's position in the spec from 1)."""
    for n, s in enumerate(spec.steps, 1):
        if s.name == step:
            return f"{run_id.hex[:8]}.{n}"
    raise NotFound(f"workflow has no step {step!r}", step=step)


def child_job_id(run_id: uuid.UUID, step: str) -> uuid.UUID:
    """The id of a step's child job: the same whoever makes it, so making it is idempotent."""
    return uuid.uuid5(run_id, f"step/{step}")


def rerun_plan(old: Run, mode: RerunMode) -> Submit:
    """The `Submit` of a new run of `old`'s spec: `whole` runs every step again;
    `from_failure` keeps each step that succeeded (or was reused) and whose needs are all
    kept, with its output and the run it really ran in, and runs the rest. A run still
    going, or from_failure of a run where nothing failed, is refused."""
    if not old.is_terminal:
        raise InvalidTransition(
            f"run is {old.state.value}: rerun it when it has ended", state=old.state.value
        )
    if mode is RerunMode.WHOLE:
        return Submit(spec=old.spec, rerun_of=old.id, rerun_mode=mode)
    if old.state is RunState.SUCCEEDED:
        raise InvalidTransition("nothing failed in this run: rerun it whole", state=old.state.value)
    kept: dict[str, Reuse] = {}
    for name in _topological(old):
        step = old.steps[name]
        if step.state in STEP_SUCCESSFUL and all(n in kept for n in old.needs[name]):
            kept[name] = Reuse(
                from_run=step.from_run or old.id,
                output=step.output,
                output_sha256=step.output_sha256,
            )
    return Submit(spec=old.spec, reuse=kept, rerun_of=old.id, rerun_mode=mode)


def _topological(state: Run) -> list[str]:
    """Step names, each after its needs (the spec is acyclic, checked at submit)."""
    out: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for need in state.needs[name]:
            visit(need)
        out.append(name)

    for name in state.steps:
        visit(name)
    return out


# ---- decide -------------------------------------------------------------------------------


def decide(state: Run | None, command: Command) -> list[Event]:
    """The events a command produces on a run (each outcome with what follows from it), or
    a `DomainError` saying why not."""
    if isinstance(command, Submit):
        if state is not None:
            raise InvalidTransition("run already exists", run_id=str(state.id))
        validate(command.spec)
        names = {s.name for s in command.spec.steps}
        for name in command.reuse:
            if name not in names:
                raise InvalidValue(f"no step {name!r} to reuse", field=f"$.reuse.{name}")
        submitted = WorkflowSubmitted(
            spec=command.spec, rerun_of=command.rerun_of, rerun_mode=command.rerun_mode,
            schedule=command.schedule, occurrence=command.occurrence,
        )  # fmt: skip
        reused = [
            StepReused(step=s.name, from_run=r.from_run, output=r.output,
                       output_sha256=r.output_sha256)
            for s in command.spec.steps if (r := command.reuse.get(s.name)) is not None
        ]  # fmt: skip
        shadow = _new(uuid.UUID(int=0), submitted, datetime.min, "", None)
        return [submitted, *_then(shadow, reused)]
    if state is None:
        raise NotFound("workflow run not found")
    name = type(command).__name__
    if state.is_terminal and not isinstance(command, StepJobEnded):
        # (A job's end told again after the run's end is answered below: nothing new.)
        raise InvalidTransition(
            f"run is already {state.state.value}", state=state.state.value, command=name
        )
    match command:
        case Cancel(reason=reason):
            if state.cancel_requested:
                return []
            jobs = [
                s.job_id
                for s in state.steps.values()
                if s.state is StepState.RUNNING and s.job_id is not None
            ]
            return _then(state, [WorkflowCancelRequested(reason=reason, jobs=jobs)])
        case StepJobStarted(step=step, job_id=job_id):
            me = state.step(step)
            if me.state is StepState.RUNNING and me.job_id == job_id:
                return []  # told twice
            if me.state is not StepState.READY:
                raise InvalidTransition(
                    f"step {step} is {me.state.value}, not ready: its job must not start",
                    state=me.state.value,
                    command=name,
                    step=step,
                )
            return [StepStarted(step=step, job_id=job_id)]
        case StepJobEnded(step=step, job_id=job_id, outcome=outcome):
            me = state.step(step)
            if me.job_id != job_id:
                raise InvalidTransition(
                    f"job {job_id} is not step {step}'s (that is {me.job_id})",
                    state=me.state.value,
                    command=name,
                    step=step,
                )
            if me.state in STEP_TERMINAL:
                return []  # told twice
            if outcome is Outcome.SUCCEEDED:
                ended: Event = StepSucceeded(
                    step=step, output=command.output, output_sha256=command.output_sha256
                )
            elif outcome is Outcome.FAILED:
                ended = StepFailed(step=step, reason=command.reason or "failed")
            else:
                ended = StepCancelled(step=step)
            return _then(state, [ended])
    raise InvalidTransition(f"cannot {name} a workflow run", command=name)  # pragma: no cover


def _then(state: Run, events: list[Event]) -> list[Event]:
    """The events, followed by what follows from them (`plan` on the state after them)."""
    for event in events:
        state = _apply(state, event, state.updated_at, "")
    return [*events, *plan(state)]


# ---- evolve -------------------------------------------------------------------------------


def _new(
    run_id: uuid.UUID, event: WorkflowSubmitted, at: datetime, actor: str, correlation: str | None
) -> Run:
    return Run(
        id=run_id,
        version=1,
        spec=event.spec,
        needs=needs_of(event.spec),
        steps={s.name: StepRun(name=s.name) for s in event.spec.steps},
        submitted_by=actor,
        created_at=at,
        updated_at=at,
        rerun_of=event.rerun_of,
        correlation_id=correlation,
        schedule=event.schedule,
        occurrence=event.occurrence,
    )


def _apply(state: Run, event: Event, at: datetime, actor: str) -> Run:
    """The state after one event at `at` (the version is the caller's business)."""

    def step(name: str, **changes: Any) -> Run:
        if name not in state.steps:
            raise CorruptLog(f"event for unknown step {name!r}", stream_id=str(state.id))
        new = msgspec.structs.replace(state.steps[name], **changes)
        return msgspec.structs.replace(state, steps={**state.steps, name: new}, updated_at=at)

    def ended(to: RunState) -> Run:
        return msgspec.structs.replace(state, state=to, updated_at=at, finished_at=at)

    match event:
        case StepReady(step=name):
            return step(name, state=StepState.READY, ready_at=at)
        case StepStarted(step=name, job_id=job_id):
            return step(name, state=StepState.RUNNING, job_id=job_id, started_at=at)
        case StepSucceeded(step=name, output=output, output_sha256=sha):
            return step(
                name, state=StepState.SUCCEEDED, finished_at=at, output=output, output_sha256=sha
            )
        case StepFailed(step=name, reason=reason):
            return step(name, state=StepState.FAILED, finished_at=at, reason=reason)
        case StepCancelled(step=name):
            return step(name, state=StepState.CANCELLED, finished_at=at)
        case StepSkipped(step=name, reason=reason, detail=detail):
            return step(
                name, state=StepState.SKIPPED, finished_at=at, skip_reason=reason, reason=detail
            )
        case StepReused(step=name, from_run=from_run, output=output, output_sha256=sha):
            return step(
                name, state=StepState.REUSED, finished_at=at, from_run=from_run, output=output,
                output_sha256=sha,
            )  # fmt: skip
        case WorkflowCancelRequested():
            return msgspec.structs.replace(
                state,
                state=RunState.CANCELLING,
                updated_at=at,
                cancel_requested_at=at,
                cancel_requested_by=actor,
            )
        case WorkflowSucceeded():
            return ended(RunState.SUCCEEDED)
        case WorkflowFailed():
            return ended(RunState.FAILED)
        case WorkflowCancelled():
            return ended(RunState.CANCELLED)
        case WorkflowSubmitted():
            raise CorruptLog("run submitted twice", stream_id=str(state.id))
    raise CorruptLog(f"unknown event {type(event).__name__}")  # pragma: no cover


def evolve(state: Run | None, rec: Recorded) -> Run:
    """The state after one recorded event."""
    event = rec.event
    if state is None:
        if not isinstance(event, WorkflowSubmitted):
            raise CorruptLog(
                f"stream starts with {type(event).__name__}", stream_id=str(rec.stream_id)
            )
        return msgspec.structs.replace(
            _new(rec.stream_id, event, rec.recorded_at, rec.meta.actor, rec.meta.correlation_id),
            version=rec.version,
        )
    if rec.version != state.version + 1:
        raise CorruptLog(
            f"version {rec.version} follows {state.version}", stream_id=str(rec.stream_id)
        )
    new = _apply(state, event, rec.recorded_at, rec.meta.actor)
    return msgspec.structs.replace(new, version=rec.version)


def fold(records: Iterable[Recorded], state: Run | None = None) -> Run | None:
    """Apply recorded events in order to a state (None: the run does not exist yet)."""
    for rec in records:
        state = evolve(state, rec)
    return state


#: Workflow runs as a kind of stream (registered in `domain.registry`).
WORKFLOW_EVENTS_CODEC = EventCodec(WORKFLOW_EVENTS, {})
WORKFLOW = StreamKind("workflow", WORKFLOW_EVENTS_CODEC, evolve, decide)
