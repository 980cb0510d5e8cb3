"""The job state machine: `decide(state, command) -> events` and `evolve(state, event)`.

A job's state is `fold(events)`. Both functions are pure: time enters only through the
recorded events (the database's clock), never from here.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from .errors import CorruptLog, InvalidInput, InvalidTransition, NotFound
from .events import (
    JOB_EVENTS,
    AnyEvent,
    Event,
    FailureReason,
    JobCancelled,
    JobCancelRequested,
    JobFailed,
    JobQueued,
    JobRetryScheduled,
    JobStarted,
    JobSubmitted,
    JobSucceeded,
    Recorded,
    Usage,
)
from .kinds import StreamKind
from .specs import JobSpec, SecretRef
from .templates import FromDefinition, param_env, reserved_env


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    #: Waiting for a worker (maybe for a slot, a tag, or its `scheduled_for`).
    QUEUED = "queued"
    #: A worker runs its container.
    RUNNING = "running"
    #: Cancel was asked while it ran; the container is being stopped.
    CANCELLING = "cancelling"
    #: The command exited 0.
    SUCCEEDED = "succeeded"
    #: The last attempt failed; see `failure_reason`.
    FAILED = "failed"
    #: Cancelled before or while running.
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.RUNNING, JobState.CANCELLING})


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """The state of one job, folded from its events."""

    id: uuid.UUID
    version: int
    last_position: int
    state: JobState
    spec: JobSpec
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    attempt: int = 1
    requeue_reason: str | None = None
    #: When it may start: the spec's `scheduled_for`, or the retry time after a failure.
    scheduled_for: datetime | None = None
    worker_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    cancel_requested_by: str | None = None
    exit_code: int | None = None
    failure_reason: FailureReason | None = None
    message: str | None = None
    usage: Usage | None = None
    #: The correlation id of the job's JobSubmitted: what every later event of the job
    #: carries (I6).
    correlation_id: str | None = None
    #: The event that queued or started the current attempt: the causation of the next
    #: worker-side event (a JobStarted follows the queueing, an outcome the JobStarted).
    cause_event_id: uuid.UUID | None = None
    #: The secrets the last start resolved, by environment variable (see `JobStarted`).
    secrets: dict[str, SecretRef] = {}
    #: The definition, versions and parameters the spec was resolved from, if any.
    source: FromDefinition | None = None
    #: The running job whose token submitted this one (see `Submit.parent_job`).
    parent_job: uuid.UUID | None = None
    #: The job this one reruns.
    rerun_of: uuid.UUID | None = None
    #: For a workflow step's child job: its run and step name.
    workflow_run: uuid.UUID | None = None
    step: str | None = None
    #: What the worker copies into the job's container before it starts (see `Submit`).
    inputs: dict[str, Any] = {}
    #: The output of the attempt that ended the job (JSON, secrets masked) and the SHA-256 of
    #: its stored bytes. It belongs to that attempt alone: an attempt that failed and was
    #: retried records none (`JobRetryScheduled` carries no output), a start clears it, and a
    #: cancelled job has none. So it is only ever set on a succeeded or failed job.
    output: Any = None
    output_sha256: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


# ---- commands -------------------------------------------------------------------------


class Submit(msgspec.Struct, frozen=True, kw_only=True):
    """Create the job."""

    spec: JobSpec
    #: Where the spec was resolved from, for a submit by reference to a definition.
    source: FromDefinition | None = None
    #: The `JOBLEDGER_...` environment variables jobledger itself set on the spec (a
    #: schedule's occurrence); never from a request.
    injected: frozenset[str] = frozenset()
    #: The running job whose token made this submit (its child); never from a request body.
    parent_job: uuid.UUID | None = None
    #: The job this one reruns (`POST /api/v1/jobs/{id}/rerun`).
    rerun_of: uuid.UUID | None = None
    #: For a workflow step's child job: its run and step name.
    workflow_run: uuid.UUID | None = None
    step: str | None = None
    #: A small JSON document copied into the container at `workflows.INPUTS_PATH` (named by
    #: the `INPUTS_ENV` variable) before it starts; empty: nothing is copied. Set by
    #: jobledger (a workflow step's child gets its needs' outputs), not by the submit body.
    inputs: dict[str, Any] = {}


class Start(msgspec.Struct, frozen=True, kw_only=True):
    """A worker claims a queued job."""

    worker_id: str
    #: The secret version each secret reference of the spec resolved to, by variable.
    secrets: dict[str, SecretRef] = {}


class RequestCancel(msgspec.Struct, frozen=True, kw_only=True):
    """Cancel: at once if queued, by stopping the container if running."""

    reason: str | None = None


class Finish(msgspec.Struct, frozen=True, kw_only=True):
    """The container exited by itself."""

    #: The attempt this outcome belongs to; None skips the check.
    attempt: int | None = None
    exit_code: int
    oom_killed: bool = False
    usage: Usage | None = None
    #: What the attempt wrote at `workflows.OUTPUT_PATH`, parsed, masked (None: nothing),
    #: and the SHA-256 of the stored bytes.
    output: Any = None
    output_sha256: str | None = None


class Fail(msgspec.Struct, frozen=True, kw_only=True):
    """The attempt failed for a reason other than the command's own exit."""

    attempt: int | None = None
    reason: FailureReason
    message: str | None = None
    exit_code: int | None = None
    usage: Usage | None = None
    #: As in `Finish`: kept if this failure ends the job, dropped if it is retried.
    output: Any = None
    output_sha256: str | None = None


class ConfirmCancelled(msgspec.Struct, frozen=True, kw_only=True):
    """The container of a cancelling job is gone."""

    attempt: int | None = None
    exit_code: int | None = None
    usage: Usage | None = None


Command = Submit | Start | RequestCancel | Finish | Fail | ConfirmCancelled
COMMAND_TYPES: tuple[type[Command], ...] = (
    Submit,
    Start,
    RequestCancel,
    Finish,
    Fail,
    ConfirmCancelled,
)


_encoder = msgspec.json.Encoder()


def _unstorable(text: str) -> bool:
    """NUL, which PostgreSQL cannot store, or a lone surrogate, which is not UTF-8."""
    if "\x00" in text:
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def unstorable_path(value: object, path: str) -> str | None:
    """The JSON path of the first string the database cannot store (see `_unstorable`)."""
    if isinstance(value, str):
        return path if _unstorable(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            if found := unstorable_path(k, f"{path}.{k!r}") or unstorable_path(v, f"{path}.{k}"):
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if found := unstorable_path(v, f"{path}[{i}]"):
                return found
    return None


def validate(command: Command) -> None:
    """Refuse what no state would accept: text PostgreSQL cannot store, and environment
    variables named like jobledger's own (`JOBLEDGER_...`; a job made from a definition
    holds its parameters' `JOBLEDGER_PARAM_...`)."""
    if isinstance(command, Submit):
        params = command.source.params if command.source is not None else {}
        allowed = command.injected | {param_env(p) for p in params}
        reserved_env(command.spec.env, "$.env", allowed)
    if isinstance(command, Submit) and (path := unstorable_path(command.inputs, "$.inputs")):
        raise InvalidInput(
            "text must be UTF-8 without NUL characters (\\u0000) or lone surrogates", field=path
        )
    payload = command.spec if isinstance(command, Submit) else command
    try:  # the common case in one pass of C: nothing to look for
        if b"\\u0000" not in _encoder.encode(payload):
            return
    except UnicodeEncodeError:
        pass
    if path := unstorable_path(msgspec.to_builtins(payload), "$"):
        raise InvalidInput(
            "text must be UTF-8 without NUL characters (\\u0000) or lone surrogates", field=path
        )


def decide(state: Job | None, command: Command) -> list[Event]:
    """The events a command produces on a job, or a `DomainError` saying why not."""
    validate(command)
    if isinstance(command, Submit):
        if state is not None:
            raise InvalidTransition("job already exists", job_id=str(state.id))
        # queued as of now: one transition
        return [
            JobSubmitted(
                spec=command.spec,
                source=command.source,
                parent_job=command.parent_job,
                rerun_of=command.rerun_of,
                workflow_run=command.workflow_run,
                step=command.step,
                inputs=command.inputs,
            )
        ]
    if state is None:
        raise NotFound("job not found")
    name = type(command).__name__
    attempt = getattr(command, "attempt", None)
    if attempt is not None and attempt != state.attempt:
        # A late outcome of an earlier attempt must not end the current one.
        raise InvalidTransition(
            f"outcome of attempt {attempt}, but the job is at attempt {state.attempt}",
            state=state.state.value,
            command=name,
        )
    if state.is_terminal:
        raise InvalidTransition(
            f"job is already {state.state.value}", state=state.state.value, command=name
        )
    match command, state.state:
        case Start(worker_id=worker, secrets=secrets), JobState.QUEUED:
            # From when it could start: queued (the last event), or its time, if later.
            ready = max(state.updated_at, state.scheduled_for or state.updated_at)
            return [
                JobStarted(
                    worker_id=worker,
                    attempt=state.attempt,
                    ready_at=ready.timestamp(),
                    secrets=secrets,
                )
            ]
        case RequestCancel(reason=reason), JobState.QUEUED:
            return [JobCancelRequested(reason=reason), JobCancelled()]
        case RequestCancel(reason=reason), JobState.RUNNING:
            return [JobCancelRequested(reason=reason)]
        case RequestCancel(), JobState.CANCELLING:
            return []  # asked again: nothing new to record
        case Finish(exit_code=0, usage=usage, output=out, output_sha256=sha), JobState.RUNNING:
            return [JobSucceeded(exit_code=0, usage=usage, output=out, output_sha256=sha)]
        case (
            Finish(exit_code=code, oom_killed=oom, usage=usage) as finished,
            JobState.RUNNING,
        ):
            reason = FailureReason.OOM if oom else FailureReason.EXIT_CODE
            return [_failure(state, reason, code, None, usage, finished)]
        case (
            Fail(reason=reason, message=msg, exit_code=code, usage=usage) as failed,
            JobState.RUNNING,
        ):
            return [_failure(state, reason, code, msg, usage, failed)]
        case (
            Finish(exit_code=code, usage=usage)
            | Fail(exit_code=code, usage=usage)
            | ConfirmCancelled(exit_code=code, usage=usage),
            JobState.CANCELLING,
        ):
            # Whatever ended the container, the user's cancel is what they asked for.
            return [JobCancelled(exit_code=code, usage=usage)]
    raise InvalidTransition(
        f"cannot {name} a {state.state.value} job", state=state.state.value, command=name
    )


def _failure(
    state: Job,
    reason: FailureReason,
    code: int | None,
    message: str | None,
    usage: Usage | None,
    ended: Finish | Fail,
) -> Event:
    policy = state.spec.retry
    # A start error (missing image, bad command) will fail the same way again.
    if reason is not FailureReason.START_ERROR and state.attempt <= policy.max_retries:
        return JobRetryScheduled(
            attempt=state.attempt + 1,
            failed_attempt=state.attempt,
            reason=reason,
            exit_code=code,
            message=message,
            delay_seconds=policy.backoff_seconds * 2 ** (state.attempt - 1),
            usage=usage,
        )
    return JobFailed(
        reason=reason,
        exit_code=code,
        message=message,
        usage=usage,
        output=ended.output,
        output_sha256=ended.output_sha256,
    )


def evolve(state: Job | None, rec: Recorded) -> Job:
    """The state after one recorded event."""
    event: AnyEvent = rec.event
    if state is None:
        if not isinstance(event, JobSubmitted):
            raise CorruptLog(
                f"stream starts with {type(event).__name__}", stream_id=str(rec.stream_id)
            )
        return Job(
            id=rec.stream_id,
            version=rec.version,
            last_position=rec.position,
            state=JobState.QUEUED,
            spec=event.spec,
            submitted_by=rec.meta.actor,
            correlation_id=rec.meta.correlation_id,
            cause_event_id=rec.event_id,
            source=event.source,
            parent_job=event.parent_job,
            rerun_of=event.rerun_of,
            workflow_run=event.workflow_run,
            step=event.step,
            inputs=event.inputs,
            created_at=rec.recorded_at,
            updated_at=rec.recorded_at,
            # One representation for an instant, whatever offset the user wrote it with.
            scheduled_for=event.spec.scheduled_for.astimezone(UTC)
            if event.spec.scheduled_for
            else None,
        )
    if rec.version != state.version + 1:
        raise CorruptLog(
            f"version {rec.version} follows {state.version}", stream_id=str(rec.stream_id)
        )
    at = rec.recorded_at
    common = {"version": rec.version, "last_position": rec.position, "updated_at": at}
    match event:
        case JobQueued(attempt=attempt, requeue_reason=reason):
            return msgspec.structs.replace(
                state,
                **common,
                state=JobState.QUEUED,
                attempt=attempt,
                requeue_reason=reason,
                cause_event_id=rec.event_id,
            )
        case JobStarted(worker_id=worker, attempt=attempt, secrets=secrets):
            return msgspec.structs.replace(
                state,
                **common,
                state=JobState.RUNNING,
                attempt=attempt,
                worker_id=worker,
                secrets=secrets,
                started_at=at,
                cause_event_id=rec.event_id,
                requeue_reason=None,
                exit_code=None,
                failure_reason=None,
                message=None,
                usage=None,
                output=None,
                output_sha256=None,
            )
        case JobCancelRequested():
            return msgspec.structs.replace(
                state,
                **common,
                state=JobState.CANCELLING if state.state in ACTIVE_STATES else state.state,
                cancel_requested_at=at,
                cancel_requested_by=rec.meta.actor,
            )
        case JobSucceeded(exit_code=code, usage=usage):
            ended = _ended(state, common, JobState.SUCCEEDED, code, None, None, usage)
            return _with_output(ended, event.output, event.output_sha256)
        case JobFailed(reason=reason, exit_code=code, message=msg, usage=usage):
            ended = _ended(state, common, JobState.FAILED, code, reason, msg, usage)
            return _with_output(ended, event.output, event.output_sha256)
        case JobCancelled(exit_code=code, usage=usage):
            return _ended(state, common, JobState.CANCELLED, code, None, None, usage)
        case JobRetryScheduled():
            return msgspec.structs.replace(
                state,
                **common,
                state=JobState.QUEUED,
                attempt=event.attempt,
                requeue_reason=f"retry {event.attempt - 1} of {state.spec.retry.max_retries}",
                scheduled_for=at + timedelta(seconds=event.delay_seconds),
                worker_id=None,
                exit_code=event.exit_code,
                failure_reason=event.reason,
                message=event.message,
                usage=event.usage,
                cause_event_id=rec.event_id,
            )
        case JobSubmitted():
            raise CorruptLog("job submitted twice", stream_id=str(rec.stream_id))
    raise CorruptLog(f"unknown event {type(event).__name__}")  # pragma: no cover


def _ended(
    state: Job,
    common: dict[str, object],
    to: JobState,
    code: int | None,
    reason: FailureReason | None,
    message: str | None,
    usage: Usage | None,
) -> Job:
    return msgspec.structs.replace(
        state,
        **common,
        state=to,
        finished_at=common["updated_at"],
        exit_code=code,
        failure_reason=reason,
        message=message,
        usage=usage,
    )


def _with_output(state: Job, output: Any, sha256: str | None) -> Job:
    if output is None and sha256 is None:
        return state
    return msgspec.structs.replace(state, output=output, output_sha256=sha256)


def fold(events: Iterable[Recorded], state: Job | None = None) -> Job | None:
    """Apply events in order to a state (None: the job does not exist yet)."""
    for rec in events:
        state = evolve(state, rec)
    return state


#: Jobs as a kind of stream (see `domain.kinds`).
JOB = StreamKind("job", JOB_EVENTS, evolve, decide)
