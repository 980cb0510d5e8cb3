"""Schedules as a kind of stream: a project's named cron schedule, and per occurrence the
record of what became of it (`ScheduleFired` with its job's id, or `ScheduleSkipped` with
the reason), so "why did the 02:00 run not happen" is read from the log.

Pure: the clock comes in as an argument (`Fire.now`, the database's time when a scheduler
decided). The policies are functions of the state, that instant and how many of the
schedule's jobs are running and waiting:

- catch-up, when more than one occurrence is due at once (the schedulers were down, or one
  was slow): `none` fires the newest only if it is on time (within `grace_seconds`) and
  records every other as skipped `missed`; `latest` fires the newest and skips the rest;
  `all` fires the newest `catch_up_limit` and skips the older ones.
- overlap, when the schedule's previous job has not finished: `skip` records the occurrence
  as skipped `overlap`; `queue_one` fires it if no job of the schedule waits yet; `allow`
  fires it. For a schedule that runs a `workflow`, its unfinished runs count: a run is
  running once one of its steps has started (its child job was made), and waiting while
  none has (so `queue_one` keeps at most one run that has not started a step yet).
- jitter: an occurrence is due `jitter(o)` seconds after its time, from a hash of the
  schedule and the occurrence (the same in every process, and recorded).
- start/end: occurrences before `start_at` or after `end_at` do not exist.
- blocked: a run that cannot be made now (the definition it runs disabled or deleted, as
  the service read just before deciding: `Fire.blocked`) records the occurrence that would
  fire as skipped with that reason, and the schedule goes on.

A paused schedule records nothing; resuming (like creating and updating) starts from the
time of that event: what fell due while paused is not caught up."""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

from . import cron
from .errors import CorruptLog, InvalidTransition, InvalidValue, NotFound
from .events import Event, EventCodec, Recorded
from .jobs import Submit
from .kinds import StreamKind
from .specs import DEFAULT_PROJECT, JobSpec, Key, LabelKey, LabelValue, Name, Priority
from .templates import ConcurrencyLimit, DefinitionSubmit, ParamValue, reserved_env
from .workflow_specs import WorkflowSpec
from .workflow_specs import validate as validate_workflow
from .workflows import Submit as WorkflowSubmit

#: Prefix of the labels jobledger sets on a schedule's jobs (its variables': RESERVED_ENV_PREFIX).
RESERVED_LABEL_PREFIX = "jobledger."
SCHEDULE_LABEL = "jobledger.schedule"
#: The variables a schedule's job gets: the schedule's name and the occurrence (UTC, ISO).
SCHEDULE_ENV = "JOBLEDGER_SCHEDULE"
OCCURRENCE_ENV = "JOBLEDGER_OCCURRENCE"
INJECTED_ENV = frozenset({SCHEDULE_ENV, OCCURRENCE_ENV})
OCCURRENCE_LABEL = "jobledger.occurrence"
#: The concurrency key a schedule's jobs made from a definition share unless its run sets
#: one, followed by PROJECT/NAME (instead of the definition's `definition:...`).
SCHEDULE_KEY_PREFIX = "schedule:"
#: Their limit under overlap `allow` unless the run sets one (the most a spec may say).
UNLIMITED = 10_000
#: Most missed occurrences one decision records one by one; older ones are summed up as
#: one `ScheduleSkipped` with `until` (a schedule down a year at one per second).
MAX_LISTED_MISSED = 100
#: Most recent fired occurrences a state remembers (whose jobs a scheduler makes sure of).
RECENT_FIRED = 20


class Overlap(enum.StrEnum):
    """What an occurrence does while the schedule's previous job has not finished."""

    #: Record it as skipped (`overlap`).
    SKIP = "skip"
    #: Fire it if none of the schedule's jobs is waiting yet (at most one queued).
    QUEUE_ONE = "queue_one"
    #: Fire it.
    ALLOW = "allow"


class CatchUp(enum.StrEnum):
    """What happens to occurrences that fell due while no scheduler fired them."""

    #: Record each as skipped (`missed`); fire the newest only if it is on time.
    NONE = "none"
    #: Fire the newest, skip the others.
    LATEST = "latest"
    #: Fire the newest `catch_up_limit`, skip older ones.
    ALL = "all"


class SkipReason(enum.StrEnum):
    """Why an occurrence did not fire."""

    #: No scheduler fired it in time (see the catch-up policy).
    MISSED = "missed"
    #: The previous job of the schedule was still going (overlap policy).
    OVERLAP = "overlap"
    #: The definition the schedule runs was disabled at the occurrence.
    DEFINITION_DISABLED = "definition_disabled"
    #: The definition the schedule runs was deleted (or never existed) at the occurrence.
    DEFINITION_DELETED = "definition_deleted"
    #: The definition no longer resolves with the schedule's parameters (a pinned version
    #: gone, a parameter now required, its environment deleted): `detail` says which.
    DEFINITION_UNRESOLVED = "definition_unresolved"


class ScheduleRun(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """What each occurrence runs: a job `spec`, or a `definition` (its latest version at
    each occurrence, or `definition_version`) with `params` and per-run fields, resolved at
    fire time as a submit by reference is, or a `workflow` (a run of that spec in the
    schedule's project). `occurrence_submit` and `occurrence_workflow` are the places that
    read it."""

    spec: JobSpec | None = None
    definition: Name | None = None
    definition_version: Annotated[int, msgspec.Meta(ge=1)] | None = None
    params: Annotated[dict[str, ParamValue], msgspec.Meta(max_length=100)] = {}
    #: Instead of the environment the definition names.
    environment: Name | None = None
    priority: Priority | None = None
    #: Added to the definition's labels.
    labels: Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=64)] = {}
    #: Default `schedule:PROJECT/NAME` (not the definition's key: a schedule sets its own).
    concurrency_key: Key | None = None
    #: Default 1 (overlap `allow`: no limit).
    concurrency_limit: ConcurrencyLimit | None = None
    #: A workflow run per occurrence instead of a job (as `POST /api/v1/workflows` takes it;
    #: its project is the schedule's).
    workflow: WorkflowSpec | None = None


#: The fields of a run that only go with `definition` (a spec says them itself).
DEFINITION_ONLY = (
    "definition_version", "params", "environment", "priority", "labels", "concurrency_key",
    "concurrency_limit",
)  # fmt: skip


Cron = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Zone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Aware = Annotated[datetime, msgspec.Meta(tz=True)]


class ScheduleSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """When a schedule fires, what it runs, and its policies (what a create or update sends)."""

    cron: Cron
    timezone: Zone = "UTC"
    run: ScheduleRun
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.LATEST
    #: With catch_up `all`: most missed occurrences fired at once.
    catch_up_limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    #: With catch_up `none`: how late an occurrence may fire and still count as on time.
    grace_seconds: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 60
    #: Each occurrence fires up to this many seconds late, by a hash (spreads load).
    jitter_seconds: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 0
    start_at: Aware | None = None
    end_at: Aware | None = None


def validate(settings: ScheduleSettings, field: str = "$", project: str | None = None) -> None:
    """Refuse settings msgspec cannot judge: the expression, the zone, the dates, what
    jobledger reserves in the spec, and a workflow that does not hold together (checked as
    in the schedule's `project`). `details.field` is the JSON path of the fault."""
    try:
        cron.zone(settings.timezone)
    except cron.CronError as exc:
        raise InvalidValue(str(exc), field=f"{field}.timezone") from None
    try:
        cron.check(settings.cron, settings.timezone)
    except cron.CronError as exc:
        raise InvalidValue(str(exc), field=f"{field}.cron") from None
    if settings.start_at and settings.end_at and settings.end_at <= settings.start_at:
        raise InvalidValue("end_at must be after start_at", field=f"{field}.end_at")
    run = settings.run
    if sum(w is not None for w in (run.spec, run.definition, run.workflow)) != 1:
        raise InvalidValue(
            "a schedule runs either a `spec`, a `definition` or a `workflow` (exactly one)",
            field=f"{field}.run",
        )
    if run.workflow is not None:
        _only_definition_fields(run, f"{field}.run", "a workflow")
        _check_workflow(run.workflow, f"{field}.run.workflow", project)
        return
    if run.spec is None:
        for key in run.labels:
            _reserved_label(key, f"{field}.run.labels.{key}")
        return
    _only_definition_fields(run, f"{field}.run", "a spec")
    spec = run.spec
    reserved_env(spec.env, f"{field}.run.spec.env")
    for key in spec.labels:
        _reserved_label(key, f"{field}.run.spec.labels.{key}")
    if spec.idempotency_key is not None:
        raise InvalidValue(
            "a schedule's jobs get their idempotency key from the occurrence",
            field=f"{field}.run.spec.idempotency_key",
        )
    if spec.scheduled_for is not None:
        raise InvalidValue(
            "a schedule's jobs run at their occurrence", field=f"{field}.run.spec.scheduled_for"
        )


_BARE_RUN = ScheduleRun()


def _only_definition_fields(run: ScheduleRun, field: str, what: str) -> None:
    for name in DEFINITION_ONLY:
        if getattr(run, name) != getattr(_BARE_RUN, name):
            raise InvalidValue(
                f"{name} goes with a definition; {what} says it itself", field=f"{field}.{name}"
            )


def _check_workflow(spec: WorkflowSpec, field: str, project: str | None) -> None:
    """The checks `POST /api/v1/workflows` makes, its paths under the schedule's `field`;
    the workflow runs in the schedule's project (`default`, the field's default, means it)."""
    if project is not None:
        if spec.project not in (DEFAULT_PROJECT, project):
            raise InvalidValue(
                f"a schedule's workflow runs in the schedule's project {project}",
                field=f"{field}.project",
            )
        spec = msgspec.structs.replace(spec, project=project)
    try:
        validate_workflow(spec)
    except InvalidValue as exc:
        details = dict(exc.details)
        inner = details.get("field")
        details["field"] = field + inner[1:] if isinstance(inner, str) else field
        raise InvalidValue(exc.message, **details) from None


def _reserved_label(key: str, field: str) -> None:
    if key.lower().startswith(RESERVED_LABEL_PREFIX):
        raise InvalidValue(
            f"labels starting with {RESERVED_LABEL_PREFIX} are set by jobledger", field=field
        )


# ---- events -------------------------------------------------------------------------------


class ScheduleCreated(Event, frozen=True, kw_only=True):
    """A schedule was created (or created again after a delete); it fires from now on."""

    project: str
    name: str
    settings: ScheduleSettings


class ScheduleUpdated(Event, frozen=True, kw_only=True):
    """The settings were replaced; they apply from now on (nothing before is caught up)."""

    settings: ScheduleSettings


class SchedulePaused(Event, frozen=True, kw_only=True):
    """No occurrence fires or is recorded until it is resumed."""


class ScheduleResumed(Event, frozen=True, kw_only=True):
    """It fires again, from now on."""


class ScheduleDeleted(Event, frozen=True, kw_only=True):
    """The tombstone: creating the name again continues the stream."""


class ScheduleFired(Event, frozen=True, kw_only=True):
    """An occurrence fired: its job is `job_id` (created right after, with an idempotency
    key from the occurrence, so at most once whatever happens in between), or for a schedule
    that runs a workflow its run is `workflow_run` (an id from the occurrence: once too)."""

    occurrence: datetime
    job_id: uuid.UUID | None = None
    #: The workflow run it started (a schedule whose run is a `workflow`; then no job_id).
    workflow_run: uuid.UUID | None = None
    #: Seconds between the occurrence and the decision, by the database's clock.
    lag_seconds: float
    jitter_seconds: int = 0
    #: A run asked for by someone (`trigger`), outside the cron times.
    manual: bool = False


class ScheduleSkipped(Event, frozen=True, kw_only=True):
    """An occurrence did not fire, and why. With `until`, every occurrence from
    `occurrence` through `until` (too many to list one by one)."""

    occurrence: datetime
    reason: SkipReason
    until: datetime | None = None
    #: What made it skip, in words (a definition's disable reason, a resolution error).
    detail: str | None = None


SCHEDULE_EVENTS = (
    ScheduleCreated,
    ScheduleUpdated,
    SchedulePaused,
    ScheduleResumed,
    ScheduleDeleted,
    ScheduleFired,
    ScheduleSkipped,
)

# ---- state and commands -------------------------------------------------------------------


class FiredRef(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A fired occurrence whose job (or workflow run) a scheduler makes sure exists."""

    occurrence: datetime
    job_id: uuid.UUID | None
    event_id: uuid.UUID
    manual: bool = False
    workflow_run: uuid.UUID | None = None

    @property
    def started(self) -> uuid.UUID:
        """The id of the stream the occurrence started: its job's or its workflow run's."""
        started = self.workflow_run or self.job_id
        assert started is not None, "a ScheduleFired names a job or a workflow run"
        return started


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule's state. `after`: occurrences after it are still to come (the newest one
    fired or skipped, or the time of the last create/update/resume)."""

    project: str
    name: str
    settings: ScheduleSettings
    paused: bool = False
    deleted: bool = False
    after: datetime
    #: The next occurrence and when it is due (with jitter); None: none left, or paused.
    next_occurrence: datetime | None = None
    next_due_at: datetime | None = None
    last_occurrence: datetime | None = None
    fired: int = 0
    skipped: int = 0
    recent: tuple[FiredRef, ...] = ()
    #: The correlation id of the request that created it: its jobs' events carry it.
    correlation_id: str | None = None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    version: int = 0


class Create(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    name: Name
    settings: ScheduleSettings


class Update(msgspec.Struct, frozen=True, kw_only=True):
    settings: ScheduleSettings


class Pause(msgspec.Struct, frozen=True):
    pass


class Resume(msgspec.Struct, frozen=True):
    pass


class Delete(msgspec.Struct, frozen=True):
    pass


class Fire(msgspec.Struct, frozen=True, kw_only=True):
    """Record what became of the occurrences due at `now` (the database's clock), given how
    many of the schedule's jobs run and wait."""

    now: datetime
    running: int = 0
    waiting: int = 0
    #: Why the run cannot be made now (a definition disabled or deleted), read just before
    #: deciding: an occurrence that would fire is recorded as skipped with it instead.
    blocked: SkipReason | None = None
    blocked_detail: str | None = None


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    """Fire once now, outside the cron times (recorded as manual)."""

    now: datetime


# ---- pure policies ------------------------------------------------------------------------


def jitter(project: str, name: str, occurrence: datetime, seconds: int) -> int:
    """The delay (0..seconds) of an occurrence: a hash, the same in every process."""
    if seconds <= 0:
        return 0
    key = f"{project}/{name}/{occurrence.astimezone(UTC).isoformat()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % (seconds + 1)


def occurrences(settings: ScheduleSettings, after: datetime) -> Iterator[datetime]:
    """The occurrences strictly after `after`, oldest first, within start/end."""
    start = settings.start_at
    if start is not None and after < start:
        after = start - timedelta(microseconds=1)
    for o in cron.after(settings.cron, settings.timezone, after):
        if settings.end_at is not None and o > settings.end_at:
            return
        yield o


def occurrences_back(settings: ScheduleSettings, at: datetime) -> Iterator[datetime]:
    """The occurrences at or before `at`, newest first, within start/end."""
    if settings.end_at is not None and at > settings.end_at:
        at = settings.end_at
    for o in cron.at_or_before(settings.cron, settings.timezone, at):
        if settings.start_at is not None and o < settings.start_at:
            return
        yield o


def due_at(state: Schedule, occurrence: datetime) -> datetime:
    """When an occurrence is due: its time plus its jitter."""
    j = jitter(state.project, state.name, occurrence, state.settings.jitter_seconds)
    return occurrence + timedelta(seconds=j)


def next_due(state: Schedule) -> tuple[datetime | None, datetime | None]:
    """The next occurrence after the state's `after` and when it is due (None, None: no
    more, paused or deleted)."""
    if state.paused or state.deleted:
        return None, None
    o = next(occurrences(state.settings, state.after), None)
    return (o, due_at(state, o)) if o is not None else (None, None)


def job_id(stream_id: uuid.UUID, occurrence: datetime, manual: bool = False) -> uuid.UUID:
    """The id of an occurrence's job: deterministic, so a retry names the same job."""
    tag = "manual/" if manual else ""
    return uuid.uuid5(stream_id, tag + occurrence.astimezone(UTC).isoformat())


def run_id(stream_id: uuid.UUID, occurrence: datetime, manual: bool = False) -> uuid.UUID:
    """The id of an occurrence's workflow run: deterministic like `job_id` (and never the
    same as it), so a retry or a second scheduler names the same run."""
    tag = "manual/" if manual else ""
    return uuid.uuid5(stream_id, "workflow/" + tag + occurrence.astimezone(UTC).isoformat())


def fire_record(
    state: Schedule, stream_id: uuid.UUID, occurrence: datetime, now: datetime,
    manual: bool = False,
) -> ScheduleFired:  # fmt: skip
    """The record of an occurrence that fires: with its job's id, or its workflow run's."""
    s = state.settings
    workflow = s.run.workflow is not None
    return ScheduleFired(
        occurrence=occurrence,
        job_id=None if workflow else job_id(stream_id, occurrence, manual),
        workflow_run=run_id(stream_id, occurrence, manual) if workflow else None,
        lag_seconds=round((now - occurrence).total_seconds(), 6),
        jitter_seconds=0 if manual else jitter(state.project, state.name, occurrence,
                                               s.jitter_seconds),
        manual=manual,
    )  # fmt: skip


def occurrence_workflow(state: Schedule, fired: FiredRef) -> WorkflowSubmit:
    """The run a workflow-running schedule's occurrence submits: its spec in the schedule's
    project, recording the schedule and the occurrence (its steps' jobs get them as
    `JOBLEDGER_SCHEDULE`/`JOBLEDGER_OCCURRENCE`)."""
    spec = state.settings.run.workflow
    assert spec is not None, "a job's occurrence: see occurrence_submit"
    return WorkflowSubmit(
        spec=msgspec.structs.replace(spec, project=state.project),
        schedule=state.name,
        occurrence=fired.occurrence,
    )


def idempotency_key(name: str, occurrence: datetime, manual: bool = False) -> str:
    """The idempotency key of an occurrence's job within the project."""
    tag = "manual/" if manual else ""
    return f"schedule/{name}/{tag}{occurrence.astimezone(UTC).isoformat()}"


def occurrence_spec(state: Schedule, fired: FiredRef) -> JobSpec:
    """The job a spec-running schedule's occurrence submits: its spec in its project, with
    the schedule and occurrence as environment variables and labels and the occurrence's
    idempotency key."""
    spec = state.settings.run.spec
    assert spec is not None, "a definition's run is resolved: see occurrence_request"
    when = fired.occurrence.astimezone(UTC).isoformat()
    return msgspec.structs.replace(
        spec,
        project=state.project,
        env={**spec.env, SCHEDULE_ENV: state.name, OCCURRENCE_ENV: when},
        labels={**spec.labels, SCHEDULE_LABEL: state.name, OCCURRENCE_LABEL: when},
        idempotency_key=idempotency_key(state.name, fired.occurrence, fired.manual),
    )


def occurrence_request(
    project: str, name: str, settings: ScheduleSettings, occurrence: datetime, manual: bool = False
) -> DefinitionSubmit:
    """The submit by reference a definition-running schedule's occurrence makes: the run's
    definition, parameters and per-run fields, the schedule's labels, the occurrence's
    idempotency key, and the schedule's own concurrency (`schedule:PROJECT/NAME`, limit 1,
    or no limit under overlap `allow`) unless the run sets it."""
    run = settings.run
    assert run.definition is not None, "a spec's run: see occurrence_spec"
    when = occurrence.astimezone(UTC).isoformat()
    default_limit = UNLIMITED if settings.overlap is Overlap.ALLOW else 1
    return DefinitionSubmit(
        definition=run.definition,
        definition_version=run.definition_version,
        params=run.params,
        project=project,
        priority=run.priority,
        labels={**run.labels, SCHEDULE_LABEL: name, OCCURRENCE_LABEL: when},
        idempotency_key=idempotency_key(name, occurrence, manual),
        concurrency_key=run.concurrency_key or f"{SCHEDULE_KEY_PREFIX}{project}/{name}",
        concurrency_limit=run.concurrency_limit or default_limit,
        environment=run.environment,
    )


def occurrence_submit(state: Schedule, fired: FiredRef, resolved: Submit | None = None) -> Submit:
    """The command that creates an occurrence's job, the one place that turns a schedule's
    `run` into a submit: for a spec, `occurrence_spec`; for a definition, `resolved` (what
    the catalog resolved `occurrence_request` to) with the schedule's variables added.
    Either way the variables are marked as jobledger's own (`injected`)."""
    if state.settings.run.spec is not None:
        return Submit(spec=occurrence_spec(state, fired), injected=INJECTED_ENV)
    assert resolved is not None, "a definition's run is resolved by the catalog first"
    when = fired.occurrence.astimezone(UTC).isoformat()
    spec = resolved.spec
    env = {**spec.env, SCHEDULE_ENV: state.name, OCCURRENCE_ENV: when}
    return msgspec.structs.replace(
        resolved, spec=msgspec.structs.replace(spec, env=env), injected=INJECTED_ENV
    )


def plan(state: Schedule, stream_id: uuid.UUID, cmd: Fire) -> list[Event]:
    """What becomes of the occurrences due at `cmd.now`: fired or skipped, oldest first."""
    s = state.settings
    now = cmd.now
    keep = s.catch_up_limit if s.catch_up is CatchUp.ALL else 1
    # The newest occurrences, newest first, enough for the policy and one more (to know
    # whether older ones exist): bounded however long the schedulers were away.
    tail: list[datetime] = []
    for o in occurrences_back(s, now):
        if o <= state.after or len(tail) > keep + 1:
            break
        tail.append(o)
    # The newest is due at its time plus jitter; older ones are late already.
    if tail and due_at(state, tail[0]) > now:
        tail.pop(0)
    del tail[keep + 1 :]
    if not tail:
        return []
    tail.reverse()
    older: list[datetime] = []
    summary: ScheduleSkipped | None = None
    if len(tail) > keep:
        # Occurrences before the tail were missed: listed, up to a bound, then summed up.
        first_kept = tail[1]
        for o in occurrences(s, state.after):
            if o >= first_kept:
                break
            if len(older) == MAX_LISTED_MISSED:
                until = next(occurrences_back(s, first_kept - timedelta(microseconds=1)))
                summary = ScheduleSkipped(occurrence=o, reason=SkipReason.MISSED, until=until)
                break
            older.append(o)
        tail = tail[1:]
    newest = tail[-1]
    if s.catch_up is CatchUp.NONE:
        late = (now - due_at(state, newest)).total_seconds() > s.grace_seconds
        to_fire = [] if late else [newest]
    else:
        to_fire = tail[-keep:]
    events: list[Event] = [ScheduleSkipped(occurrence=o, reason=SkipReason.MISSED) for o in older]
    if summary is not None:
        events.append(summary)
    running, waiting = cmd.running, cmd.waiting
    for o in tail:
        if o not in to_fire:
            events.append(ScheduleSkipped(occurrence=o, reason=SkipReason.MISSED))
            continue
        if cmd.blocked is not None:
            events.append(
                ScheduleSkipped(occurrence=o, reason=cmd.blocked, detail=cmd.blocked_detail)
            )
            continue
        busy = running + waiting if s.overlap is Overlap.SKIP else waiting
        if s.overlap is not Overlap.ALLOW and busy > 0:
            events.append(ScheduleSkipped(occurrence=o, reason=SkipReason.OVERLAP))
            continue
        if running == 0:
            running = 1  # it will run: the next one overlaps it
        else:
            waiting += 1
        events.append(fire_record(state, stream_id, o, now))
    return events


def decide(
    state: Schedule | None, command: object, stream_id: uuid.UUID | None = None
) -> list[Event]:
    """The events a command produces on a schedule, or a `DomainError`."""
    match command:
        case Create(project=project, name=name, settings=settings):
            if state is not None and not state.deleted:
                raise InvalidTransition(f"schedule {name!r} exists already")
            validate(settings, project=project)
            return [ScheduleCreated(project=project, name=name, settings=settings)]
    if state is None or state.deleted:
        raise NotFound("no such schedule")
    match command:
        case Update(settings=settings):
            validate(settings, project=state.project)
            return [ScheduleUpdated(settings=settings)]
        case Pause():
            return [] if state.paused else [SchedulePaused()]
        case Resume():
            return [ScheduleResumed()] if state.paused else []
        case Delete():
            return [ScheduleDeleted()]
        case Fire():
            if state.paused:
                return []
            assert stream_id is not None, "Fire needs the stream id"
            return plan(state, stream_id, command)
        case Trigger(now=now):
            assert stream_id is not None, "Trigger needs the stream id"
            return [fire_record(state, stream_id, now, now, manual=True)]
    raise InvalidTransition(f"cannot {type(command).__name__} a schedule")


def _advanced(state: Schedule, **changes: object) -> Schedule:
    state = msgspec.structs.replace(state, **changes)  # type: ignore[arg-type]
    o, due = next_due(state)
    return msgspec.structs.replace(state, next_occurrence=o, next_due_at=due)


def evolve(state: Schedule | None, rec: Recorded) -> Schedule:
    """The state after one recorded event."""
    at, actor, v = rec.recorded_at, rec.meta.actor, rec.version
    match rec.event:
        case ScheduleCreated(project=project, name=name, settings=settings):
            fresh = Schedule(
                project=project, name=name, settings=settings, after=at,
                correlation_id=rec.meta.correlation_id, created_by=actor, created_at=at,
                updated_by=actor, updated_at=at, version=v,
                fired=state.fired if state else 0, skipped=state.skipped if state else 0,
                last_occurrence=state.last_occurrence if state else None,
            )  # fmt: skip
            return _advanced(fresh)
    if state is None:
        raise CorruptLog(f"unexpected {type(rec.event).__name__}", stream_id=str(rec.stream_id))
    match rec.event:
        case ScheduleUpdated(settings=settings):
            return _advanced(
                state, settings=settings, after=at, updated_by=actor, updated_at=at, version=v
            )
        case SchedulePaused():
            return _advanced(state, paused=True, updated_by=actor, updated_at=at, version=v)
        case ScheduleResumed():
            return _advanced(
                state, paused=False, after=at, updated_by=actor, updated_at=at, version=v
            )
        case ScheduleDeleted():
            return _advanced(state, deleted=True, updated_by=actor, updated_at=at, version=v)
        case ScheduleFired(occurrence=o, job_id=jid, manual=manual, workflow_run=run):
            ref = FiredRef(
                occurrence=o, job_id=jid, event_id=rec.event_id, manual=manual, workflow_run=run
            )
            recent = (*state.recent, ref)[-RECENT_FIRED:]
            if manual:
                return msgspec.structs.replace(
                    state, fired=state.fired + 1, recent=recent, version=v
                )
            return _advanced(
                state, after=max(state.after, o), last_occurrence=o, fired=state.fired + 1,
                recent=recent, version=v,
            )  # fmt: skip
        case ScheduleSkipped(occurrence=o, until=until):
            last = until or o
            return _advanced(
                state, after=max(state.after, last), last_occurrence=last,
                skipped=state.skipped + 1, version=v,
            )  # fmt: skip
    raise CorruptLog(f"unexpected {type(rec.event).__name__}", stream_id=str(rec.stream_id))


def _decide_kind(state: Schedule | None, command: object) -> list[Event]:
    # The kind's decide: commands that need the stream id carry it (see `Bound`).
    if isinstance(command, Bound):
        return decide(state, command.command, command.stream_id)
    return decide(state, command)


class Bound(msgspec.Struct, frozen=True):
    """A command with the id of the stream it goes to (what `Fire` and `Trigger` need to
    name their jobs)."""

    stream_id: uuid.UUID
    command: object


#: Schedules as a kind of stream (named: `SCHEDULE.stream_id(project, name)`).
SCHEDULE = StreamKind("schedule", EventCodec(SCHEDULE_EVENTS, {}), evolve, _decide_kind, named=True)
