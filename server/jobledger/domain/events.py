"""Every fact the log records about a job, as a tagged union of msgspec structs.

An event's wire form is its JSON with a `type` tag. Each type has a schema version; when a
type's shape changes, bump `SCHEMA` and register an upcaster from the old version so old
logs stay readable (see `upcast`).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar, Union

import msgspec

from .specs import JobSpec, SecretRef
from .templates import FromDefinition


class FailureReason(enum.StrEnum):
    """Why an attempt of a job failed."""

    #: The command exited with a non-zero code.
    EXIT_CODE = "exit_code"
    #: The container was killed for using more memory than its limit.
    OOM = "oom"
    #: The job ran longer than its `timeout_seconds`.
    TIMEOUT = "timeout"
    #: The worker running it stopped heartbeating and the container could not be adopted.
    WORKER_LOST = "worker_lost"
    #: The container could not be created or started (missing image, bad command, ...).
    START_ERROR = "start_error"


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Resources one attempt consumed."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """Base of all job events; the tag is the class name."""

    SCHEMA: ClassVar[int] = 1


class JobSubmitted(Event, frozen=True, kw_only=True, omit_defaults=True):
    """A user asked for a job; `spec` is exactly what will run. The job is queued from
    this event on (attempt 1)."""

    spec: JobSpec
    #: For a job submitted by reference to a definition: which versions and parameters
    #: made its spec (absent for a spec submitted as it is, and in older events).
    source: FromDefinition | None = None
    #: Issue 16 (wftoken): the running job whose token submitted this one (its child).
    parent_job: uuid.UUID | None = None
    #: Issue 16 (wftoken): the job this one reruns (`POST /api/v1/jobs/{id}/rerun`).
    rerun_of: uuid.UUID | None = None
    #: For a workflow step's child job: its run and step name (absent otherwise).
    workflow_run: uuid.UUID | None = None
    step: str | None = None
    #: A small JSON document the worker copies into the job's container before it starts
    #: (at `domain.workflows.INPUTS_PATH`; empty: none is copied). Absent in older events.
    inputs: dict[str, Any] = {}


class JobQueued(Event, frozen=True, kw_only=True):
    """The job waits for a worker; `attempt` counts from 1. Logs written before submits
    became one event have one after each JobSubmitted; nothing records it now."""

    SCHEMA: ClassVar[int] = 2

    attempt: int = 1
    #: Why it went back to the queue, if something more than "in line" (schema 1: `reason`).
    requeue_reason: str | None = None


class JobStarted(Event, frozen=True, kw_only=True):
    """A worker claimed the job and is starting its container."""

    worker_id: str
    attempt: int
    #: When the job could have started (queued, or its scheduled/retry time if later), as
    #: seconds since the epoch: the audit's waiting time is `recorded_at - ready_at`, an
    #: expression the database can index. None in events written before it existed.
    ready_at: float | None = None
    #: The secrets the attempt's environment uses, by variable, each with the version the
    #: claim resolved (the values are read by the worker, never recorded). Absent in events
    #: written before secrets existed.
    secrets: dict[str, SecretRef] = {}


class JobCancelRequested(Event, frozen=True, kw_only=True):
    """Someone asked to cancel the job."""

    reason: str | None = None


class JobSucceeded(Event, frozen=True, kw_only=True):
    """The command exited 0."""

    exit_code: int = 0
    usage: Usage | None = None
    #: What the attempt wrote at `domain.workflows.OUTPUT_PATH` (JSON, secrets masked), and
    #: the SHA-256 of its stored bytes; None if it wrote none (or one that was left out).
    output: Any = None
    output_sha256: str | None = None


class JobFailed(Event, frozen=True, kw_only=True):
    """The job ended in failure and will not be retried."""

    reason: FailureReason
    exit_code: int | None = None
    message: str | None = None
    usage: Usage | None = None
    #: The last attempt's output, as in `JobSucceeded`.
    output: Any = None
    output_sha256: str | None = None


class JobCancelled(Event, frozen=True, kw_only=True):
    """The job was cancelled; if it ran, its container is gone."""

    exit_code: int | None = None
    usage: Usage | None = None


class JobRetryScheduled(Event, frozen=True, kw_only=True):
    """An attempt failed and another one is queued after `delay_seconds`."""

    attempt: int
    failed_attempt: int
    reason: FailureReason
    exit_code: int | None = None
    message: str | None = None
    delay_seconds: float = 0.0
    usage: Usage | None = None


AnyEvent = (
    JobSubmitted
    | JobQueued
    | JobStarted
    | JobCancelRequested
    | JobSucceeded
    | JobFailed
    | JobCancelled
    | JobRetryScheduled
)
EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        JobSubmitted,
        JobQueued,
        JobStarted,
        JobCancelRequested,
        JobSucceeded,
        JobFailed,
        JobCancelled,
        JobRetryScheduled,
    )
}


class EventMeta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who and what caused an event (design map I6); the time is the database's."""

    actor: str
    #: The API token the actor used, if any.
    token_id: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """An event as the log holds it: its place in the stream and the global log."""

    event_id: uuid.UUID
    stream_id: uuid.UUID
    version: int
    position: int
    #: A job event for job streams; another kind's event for streams of that kind.
    event: Any
    meta: EventMeta
    recorded_at: datetime
    #: The kind of the stream (see `domain.kinds`).
    stream_type: str = "job"


# (type, from_version) -> function turning the old JSON object into the next version's.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventCodec:
    """Reads and writes the events of one kind of stream: a stored event is decoded by its
    type name into the current schema, older schema versions upcast step by step first."""

    def __init__(
        self, types: Iterable[type[Event]], upcasters: dict[tuple[str, int], Upcaster]
    ) -> None:
        self.types: dict[str, type[Event]] = {cls.__name__: cls for cls in types}
        #: (type, from_version) -> upcaster; the caller's dict, so it can be added to later.
        self.upcasters = upcasters
        union = Union[tuple(self.types.values())]  # noqa: UP007 - built at run time
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)
        self._union = union

    def decode(self, type_name: str, schema: int, data: str | bytes) -> Any:
        """Read a stored event, upcasting older schema versions to the current one."""
        cls = self.types.get(type_name)
        if cls is None:
            raise ValueError(f"unknown event type {type_name!r}")
        if schema == cls.SCHEMA:
            return self._decoder.decode(data)
        obj: dict[str, Any] = msgspec.json.decode(data)
        while schema < cls.SCHEMA:
            obj = self.upcasters[(type_name, schema)](obj)
            schema += 1
        obj["type"] = type_name
        return msgspec.convert(obj, self._union)


_event_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    """The JSON the log stores for an event (includes its `type` tag)."""
    return _event_encoder.encode(event)


def _requeue_reason(obj: dict[str, Any]) -> dict[str, Any]:
    """JobQueued 1 -> 2: `reason` was renamed `requeue_reason` (not why a job waits now,
    which is worked out when asked, but why it went back to the queue)."""
    if "reason" in obj:
        obj["requeue_reason"] = obj.pop("reason")
    return obj


UPCASTERS: dict[tuple[str, int], Upcaster] = {("JobQueued", 1): _requeue_reason}
#: The codec of job events.
JOB_EVENTS = EventCodec(EVENT_TYPES.values(), UPCASTERS)


def decode_event(type_name: str, schema: int, data: str | bytes) -> AnyEvent:
    """Read a stored job event, upcasting older schema versions to the current one."""
    event: AnyEvent = JOB_EVENTS.decode(type_name, schema, data)
    return event
