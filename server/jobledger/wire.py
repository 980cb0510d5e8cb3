"""Everything that crosses HTTP or the CLI, as msgspec structs: what the API sends and takes,
what the client decodes, what `replay export`/`tail` write.

Pure types: this module imports msgspec and `domain/` only, never asyncpg or aiohttp, so the
HTTP client and the CLI's client verbs load it without loading the server."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

import msgspec

from .domain.events import AnyEvent, EventMeta, FailureReason, Recorded, Usage
from .domain.jobs import JobState
from .domain.registry import KINDS
from .domain.schedules import ScheduleSettings
from .domain.secrets import MAX_SECRET_BYTES
from .domain.specs import DEFAULT_MAX_RUNNING_JOBS, JobSpec, Name, SecretRef
from .domain.templates import Change, DefinitionSpec, EnvironmentSpec, FromDefinition

# The timeline route answers with the domain's own structs.
from .domain.timeline import Timeline as Timeline
from .domain.timeline import Transition as Transition
from .domain.workflow_specs import Condition, WorkflowSpec
from .domain.workflows import RerunMode, RunState, SkipReason, StepState

# ---- jobs ---------------------------------------------------------------------------------


class JobOut(msgspec.Struct, kw_only=True):
    """A job as the API shows it: where it stands, what was asked for, when things happened,
    and for a queued job what it waits for now."""

    id: uuid.UUID
    project: str
    state: JobState
    spec: JobSpec
    priority: int
    labels: dict[str, str]
    tags: list[str]
    concurrency_key: str | None
    concurrency_limit: int
    idempotency_key: str | None
    submitted_by: str
    attempt: int
    #: Why the job went back to the queue (e.g. a retry), as recorded.
    requeue_reason: str | None
    scheduled_for: datetime | None
    worker_id: str | None
    exit_code: int | None
    failure_reason: FailureReason | None
    message: str | None
    usage: Usage | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    cancel_requested_by: str | None
    #: The job's stream version and the log position of its last event.
    version: int
    last_position: int
    #: What ties the job's events to the request that began it (`X-Correlation-Id`, or
    #: that request's id): every event of the job carries it.
    correlation_id: str | None = None
    #: What a queued job waits for now (worked out when read, never stored).
    waiting_reason: str | None = None
    #: The secrets its current attempt uses, by environment variable, with the version its
    #: start resolved (never a value).
    secrets: dict[str, SecretRef] = {}
    #: For a job submitted by reference to a definition: its name and version, and what its
    #: spec was resolved from (environment and its version, parameters, the request).
    definition: str | None = None
    definition_version: int | None = None
    source: FromDefinition | None = None
    #: Issue 16: the running job whose token submitted this one (it is that job's child),
    #: and the job this one reruns.
    parent_job: uuid.UUID | None = None
    rerun_of: uuid.UUID | None = None
    #: For a workflow step's child job: its run and step name.
    workflow_run: uuid.UUID | None = None
    step: str | None = None
    #: What the worker copied into the container at its start ({}: nothing; set by
    #: jobledger, e.g. a workflow step's needs' outputs), and the output the attempt that
    #: ended the job wrote (JSON, secrets masked) with the SHA-256 of its stored bytes.
    inputs: dict[str, Any] = {}
    output: Any = None
    output_sha256: str | None = None


class JobList(msgspec.Struct):
    """A page of the job list; pass `next_cursor` as `cursor` for the next one."""

    jobs: list[JobOut]
    next_cursor: str | None


#: Most specs one batch submit takes.
MAX_BATCH = 1000


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Specs to submit together: all are created, or none."""

    jobs: Annotated[list[JobSpec], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BatchOut(msgspec.Struct):
    """The jobs in the order of the specs (an earlier job for a repeated idempotency key)."""

    jobs: list[JobOut]
    #: How many of them this request created.
    created: int


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


class UsageSample(msgspec.Struct, frozen=True, kw_only=True):
    """CPU (percent of one core) and memory of a job at one instant."""

    sampled_at: datetime
    cpu_percent: float
    memory_bytes: int
    attempt: int = 1


class UsageView(msgspec.Struct):
    """A job's CPU/memory samples over time and the usage of its last attempt."""

    job_id: uuid.UUID
    state: JobState
    summary: Usage | None
    samples: list[UsageSample]


# ---- events -------------------------------------------------------------------------------

#: An event's data and metadata: typed (`AnyEvent`, `EventMeta`) where the API answers, raw
#: JSON exactly as the log holds it in an export.
D = TypeVar("D")
M = TypeVar("M")


class EventOut(msgspec.Struct, Generic[D, M], kw_only=True, omit_defaults=True):
    """One event of the log, the one shape of `/jobs/{id}/events`, `/audit`, `replay export`
    and `replay tail`. `data` holds the event in schema `schema_version` with its `type` tag;
    what a source does not know is left out."""

    position: int
    event_id: uuid.UUID
    #: The kind of the stream (job, ...) and its id.
    stream_type: str = "job"
    stream_id: uuid.UUID
    version: int
    type: str
    schema_version: int
    recorded_at: datetime
    data: D
    meta: M
    #: The job the event is about (where the answer is about jobs: events, audit).
    job_id: uuid.UUID | None = None
    #: The job's project, where known (audit).
    project: str | None = None
    #: Audit, JobStarted only: seconds the job waited to start since it could have (queued,
    #: or its scheduled time or retry delay passed).
    waited_seconds: float | None = None
    #: The hash-chain link, hex (export only; absent for events written before chains).
    hash: str | None = None


#: An event as the API sends it: data and metadata decoded.
JobEvent = EventOut[AnyEvent, EventMeta]


def event_out(rec: Recorded, **extra: Any) -> JobEvent:
    """The wire form of a recorded event; `extra` sets the fields a source knows more of
    (job_id, project, waited_seconds)."""
    return JobEvent(
        position=rec.position,
        event_id=rec.event_id,
        stream_type=rec.stream_type,
        stream_id=rec.stream_id,
        version=rec.version,
        type=type(rec.event).__name__,
        schema_version=rec.event.SCHEMA,
        recorded_at=rec.recorded_at,
        data=rec.event,
        meta=rec.meta,
        **extra,
    )


#: An event of any kind the server knows (the union of every registered kind's event types,
#: each tagged by its type name): what `/audit` sends.
AnyKindEvent = Union[tuple(t for k in KINDS for t in k.codec.types.values())]  # type: ignore[misc]  # noqa: UP007
LogEvent = EventOut[AnyKindEvent, EventMeta]  # type: ignore[valid-type]


#: An event as an export holds it: data and metadata byte for byte as stored.
RawEvent = EventOut[msgspec.Raw, msgspec.Raw]


class EventList(msgspec.Struct, omit_defaults=True):
    events: list[JobEvent]
    #: Issue 19: the job's events were moved out of the log by `replay archive` (events is
    #: then empty): where they are.
    archived: ArchivedOut | None = None


class AuditPage(msgspec.Struct):
    """Events newest first; pass `next_cursor` as `cursor` for older ones."""

    events: list[LogEvent]
    next_cursor: int | None


# ---- logs ---------------------------------------------------------------------------------

Stream = Literal["stdout", "stderr", "system"]


class LogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a job's output. `system` lines are jobledger's own (e.g. a dropped-bytes
    marker). `ts` is when the line was read from the container (the worker's clock)."""

    seq: int
    stream: Stream
    ts: datetime
    text: str
    attempt: int = 1


class LogPage(msgspec.Struct):
    """A page of a job's log; pass `next_after` as `after` for the next one."""

    lines: list[LogLine]
    next_after: int
    state: JobState


class LinesMessage(msgspec.Struct, tag="lines", tag_field="type"):
    """WebSocket: consecutive lines, in seq order."""

    lines: list[LogLine]


class EndMessage(msgspec.Struct, tag="end", tag_field="type"):
    """WebSocket: the job is finished and every line up to `last_seq` was sent; the server
    then closes the socket normally."""

    state: JobState
    exit_code: int | None
    failure_reason: FailureReason | None
    last_seq: int


#: What the log WebSocket sends, decodable as one tagged union.
LogMessage = LinesMessage | EndMessage


# ---- projects, service accounts, tokens ---------------------------------------------------


class Role(enum.StrEnum):
    """What a service account may do in its project; each role includes the ones before."""

    #: Read jobs, logs, usage, events.
    VIEWER = "viewer"
    #: And submit and cancel jobs.
    OPERATOR = "operator"
    #: And manage the project's service accounts, tokens and limits.
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
        return order.index(self) >= order.index(needed)


MaxRunning = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
LogLimit = Annotated[int, msgspec.Meta(ge=1024, le=1 << 40)]


class NewProject(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    max_running_jobs: MaxRunning = DEFAULT_MAX_RUNNING_JOBS
    log_limit_bytes: LogLimit | None = None


class ProjectLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Limits of a project; a field left out stays as it is. 0 running jobs pauses it;
    a submit rate of 0 means no limit."""

    max_running_jobs: MaxRunning | None = None
    log_limit_bytes: LogLimit | None = None
    #: Jobs per second the project may submit (a token bucket per API process).
    submit_rate: Annotated[float, msgspec.Meta(ge=0, le=1e6)] | None = None
    #: How many submits may come at once before the rate applies.
    submit_burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    #: Days a finished job's output lines and usage samples are kept (0: forever).
    retention_days: Annotated[int, msgspec.Meta(ge=0, le=36_500)] | None = None


class ProjectView(msgspec.Struct, kw_only=True):
    """A project's limit on running jobs and how many run and wait now."""

    name: str
    max_running_jobs: int
    #: Output a job of this project may store; None: the worker's limit.
    log_limit_bytes: int | None = None
    #: Submits per second allowed (None: the server's default).
    submit_rate: float | None = None
    submit_burst: int | None = None
    running: int
    queued: int
    #: Days its finished jobs' output is kept (None: the server's --retention-days; 0: forever).
    retention_days: int | None = None


class ProjectList(msgspec.Struct):
    projects: list[ProjectView]


class NewServiceAccount(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    role: Role


class ServiceAccount(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    project: str
    name: str
    role: Role
    created_at: datetime
    created_by: str


class ServiceAccountList(msgspec.Struct):
    service_accounts: list[ServiceAccount]


class NewToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    description: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    #: Lifetime; none: until revoked.
    expires_in_seconds: Annotated[int, msgspec.Meta(ge=60, le=10 * 365 * 86400)] | None = None


class IssuedToken(msgspec.Struct, kw_only=True):
    """A new token. `token` is shown this once and never again."""

    id: uuid.UUID
    token: str
    service_account: str
    project: str
    expires_at: datetime | None


class TokenInfo(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    description: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenList(msgspec.Struct):
    tokens: list[TokenInfo]


class RevokedToken(msgspec.Struct):
    id: uuid.UUID
    revoked_at: datetime


# ---- definitions and environments ---------------------------------------------------------


class DefinitionOut(msgspec.Struct, kw_only=True):
    """A definition at one version: its content, who saved that version and when, and
    where the definition stands now (latest version, disabled, last change)."""

    project: str
    name: str
    version: int
    saved_by: str
    saved_at: datetime
    definition: DefinitionSpec
    latest_version: int
    disabled: bool
    disabled_reason: str | None = None
    updated_by: str
    updated_at: datetime


class DefinitionSummary(msgspec.Struct, kw_only=True):
    """A definition in its project's list: its latest version."""

    name: str
    version: int
    disabled: bool
    description: str | None
    #: The names of its declared parameters.
    params: list[str]
    updated_by: str
    updated_at: datetime


class DefinitionList(msgspec.Struct):
    definitions: list[DefinitionSummary]


class DisableRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Why a definition is disabled (shown to whoever's submit it refuses)."""

    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class EnvironmentOut(msgspec.Struct, kw_only=True):
    """An environment at one version."""

    project: str
    name: str
    version: int
    saved_by: str
    saved_at: datetime
    environment: EnvironmentSpec
    latest_version: int
    updated_by: str
    updated_at: datetime


class EnvironmentSummary(msgspec.Struct, kw_only=True):
    name: str
    version: int
    description: str | None
    updated_by: str
    updated_at: datetime


class EnvironmentList(msgspec.Struct):
    environments: list[EnvironmentSummary]


class VersionInfo(msgspec.Struct, kw_only=True):
    """One saved version: who saved it and when (the content: GET with `?version=`)."""

    version: int
    saved_by: str
    saved_at: datetime


class VersionList(msgspec.Struct):
    """Every version of a definition or environment, oldest first."""

    name: str
    versions: list[VersionInfo]


class DiffOut(msgspec.Struct, kw_only=True):
    """What changed from one version to another: each JSON path whose value differs, with
    the value before (`old`) and after (`new`); a side without the path has no value."""

    name: str
    from_version: int
    to_version: int
    changes: list[Change]


# ---- errors -------------------------------------------------------------------------------


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorResponse(msgspec.Struct):
    """The shape of every error the API returns."""

    error: ErrorBody


# ---- secrets ------------------------------------------------------------------------------


class SecretValue(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The body of a secret's PUT: its new value (at most 32 KiB of UTF-8, not empty)."""

    value: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SECRET_BYTES)]

    def __repr__(self) -> str:
        return "SecretValue(value=***)"


class SecretOut(msgspec.Struct, kw_only=True):
    """A secret as every route shows it: its latest version, the keyed fingerprint of that
    version's value, who stored it and when. Never the value."""

    project: str
    name: str
    version: int
    fingerprint: str
    updated_by: str
    updated_at: datetime


class SecretList(msgspec.Struct):
    """A project's live secrets, by name."""

    secrets: list[SecretOut]


# ---- schedules ----------------------------------------------------------------------------


class NewSchedule(ScheduleSettings, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The body of a schedule's POST: its name and settings."""

    name: Name

    def settings(self) -> ScheduleSettings:
        fields = msgspec.structs.asdict(self)
        del fields["name"]
        return ScheduleSettings(**fields)


class PreviewTime(msgspec.Struct, frozen=True):
    """One coming occurrence, in the schedule's zone and in UTC."""

    local: datetime
    utc: datetime


class ScheduleOut(ScheduleSettings, forbid_unknown_fields=False, frozen=True, kw_only=True):
    """A schedule as every route shows it: its settings, whether it is paused, its next
    occurrence (and when that is due, with jitter), counts of fired and skipped occurrences,
    who changed it last; with `?preview=N`, its next N times."""

    project: str
    name: str
    paused: bool
    next_occurrence: datetime | None
    next_due_at: datetime | None
    last_occurrence: datetime | None
    fired: int
    skipped: int
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    version: int
    preview: list[PreviewTime] | None = None


class ScheduleList(msgspec.Struct):
    """A project's schedules, by name."""

    schedules: list[ScheduleOut]


Outcome = Literal["fired", "skipped"]


class OccurrenceOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What became of one occurrence: fired (with its job, how late the decision was and
    how late the job was created, by the database's clock) or skipped (with the reason;
    `until`: every occurrence through it)."""

    occurrence: datetime
    outcome: Outcome
    recorded_at: datetime
    #: The schedule stream's version of the record (`before` pages by it).
    version: int
    reason: str | None = None
    until: datetime | None = None
    #: A skip's reason in words (e.g. the definition's disable reason).
    detail: str | None = None
    job_id: uuid.UUID | None = None
    job_state: JobState | None = None
    #: For a schedule that runs a workflow: the run the occurrence started, and its state.
    workflow_run: uuid.UUID | None = None
    workflow_run_state: RunState | None = None
    manual: bool = False
    jitter_seconds: int = 0
    #: Seconds from the occurrence (plus jitter) to the ScheduleFired.
    fire_lag_seconds: float | None = None
    #: Seconds from the occurrence to the job's (or workflow run's) creation (None: not
    #: created yet).
    job_lag_seconds: float | None = None


class OccurrenceList(msgspec.Struct):
    """Occurrences newest first; pass `next_before` as `before` for older ones. An
    occurrence missing here was never decided: no scheduler ran at its time and none has
    run since (the next one to run records it as missed or fires it)."""

    occurrences: list[OccurrenceOut]
    next_before: int | None


class TriggeredOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A manual occurrence: the schedule and the job (or workflow run) it created."""

    schedule: ScheduleOut
    job_id: uuid.UUID | None = None
    workflow_run: uuid.UUID | None = None


# ---- workflows ----------------------------------------------------------------------------


class WorkflowStepOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One step of a run: its state, its child job (id and readable `RUN.N` label), times,
    why it waits, failed or was skipped, and its output."""

    name: str
    state: StepState
    #: The child job's readable form: the run id's first 8 hex digits and the step's
    #: position in the spec (from 1), e.g. `1a2b3c4d.2`.
    label: str
    needs: list[str] = []
    condition: Condition = Condition.ON_SUCCESS
    job_id: uuid.UUID | None = None
    #: A waiting step's unfinished needs: `waiting for extract, transform`.
    waiting_reason: str | None = None
    ready_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    skip_reason: SkipReason | None = None
    output: Any = None
    output_sha256: str | None = None
    #: For a reused step: the run that really ran it.
    from_run: uuid.UUID | None = None


class WorkflowRunOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A workflow run: its state, its steps in spec order, and the spec it runs."""

    id: uuid.UUID
    project: str
    state: RunState
    steps: list[WorkflowStepOut]
    spec: WorkflowSpec
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    rerun_of: uuid.UUID | None = None
    version: int
    #: A schedule's run: the schedule that started it and the occurrence.
    schedule: str | None = None
    occurrence: datetime | None = None


class WorkflowRunList(msgspec.Struct):
    """Runs newest first; pass `next_cursor` as `cursor` for older ones."""

    runs: list[WorkflowRunOut]
    next_cursor: str | None


class RerunRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What a rerun runs again: every step, or only what did not succeed."""

    mode: RerunMode = RerunMode.WHOLE


class WorkflowEventList(msgspec.Struct, omit_defaults=True):
    events: list[LogEvent]
    #: Issue 19: the run's events were moved out of the log by `replay archive`: where.
    archived: ArchivedOut | None = None


# ---- dashboard (issue 17) -----------------------------------------------------------------


class WhoAmI(msgspec.Struct, kw_only=True):
    """The caller a token stands for, so a page can show only what it may do."""

    #: How events name this caller: `PROJECT/ACCOUNT`, or `admin`.
    actor: str
    role: Role
    #: None for the server-wide admin, who may act in every project.
    project: str | None
    #: None for the server-wide admin token given in the environment.
    token_id: uuid.UUID | None
    expires_at: datetime | None
    #: For a running job's own token: that job.
    job_id: uuid.UUID | None = None


class JobCounts(msgspec.Struct, kw_only=True):
    """How many jobs match the filters, per state (every state present) and in all."""

    counts: dict[JobState, int]
    total: int


class HelloMessage(msgspec.Struct, tag="hello", tag_field="type"):
    """Jobs watch WebSocket: sent once after the upgrade; changes follow."""


class JobMessage(msgspec.Struct, tag="job", tag_field="type"):
    """Jobs watch WebSocket: a job changed. `matches` is false when it no longer matches the
    watch's filters (its state left the `state` filter): a list drops it."""

    job: JobOut
    matches: bool


class ResyncMessage(msgspec.Struct, tag="resync", tag_field="type"):
    """Jobs watch WebSocket: changes may have been missed (the server's LISTEN connection
    came back, or a change listed too many jobs): reload the list."""


#: What the jobs watch WebSocket sends, decodable as one tagged union.
WatchMessage = HelloMessage | JobMessage | ResyncMessage


class ChainProblem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The first thing wrong with a stream's history."""

    #: broken_chain, version_gap, unchained, undecodable, fold_error, events_missing, ...
    kind: str
    message: str
    #: The event at fault (absent when the problem is not one event's, e.g. events missing
    #: at the end of the stream).
    version: int | None = None


class ChainVerdict(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Whether one job's history recomputes: its hash chain, versions, decoding and fold,
    and its `jobs` row at the version the log ends at."""

    verified: bool
    events: int
    checked_at: datetime
    problem: ChainProblem | None = None
    #: Issue 19: the job's events were archived; `verified` then says whether its row
    #: equals the final state the archive checkpoint (itself in the hash-chained log) keeps.
    archived: ArchivedOut | None = None


# ---- archived streams (issue 19) ----------------------------------------------------------


class ArchivedOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where an archived job's or run's events went: `replay archive` wrote them to `file`
    (in the directory the operator named; SHA-256 `sha256`) and recorded the checkpoint
    event that removed them from the log, which keeps the stream's final state."""

    file: str
    sha256: str
    checkpoint_event_id: uuid.UUID
    checkpoint_position: int
    archived_at: datetime
    #: The archive run's cut-off: the stream ended before it.
    before: datetime
    #: Verify only: whether the row shown equals the final state the checkpoint keeps.
    state_matches: bool | None = None
