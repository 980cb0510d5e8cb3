"""Schedules: create, change, pause, resume, trigger and delete them (one stream each), read
them and their occurrences, and fire what is due (`fire`, called by every scheduler process
through `runtime.firing`). A tick is decided once: the ScheduleFired append expects the
stream's version, so of several processes one records it and the others, deciding again on
the fresh state, find nothing due. Its job is created after that append with an id and an
idempotency key derived from the occurrence, so whichever process creates it (the one that
fired, or any other after a crash in between) creates it once. A schedule that runs a
workflow starts a run the same way: its id comes from the occurrence, and a run's stream
can be started once (`Submit` on an existing run is refused)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog

from .catalog import Catalog
from .domain.cron import zone
from .domain.errors import (
    ConcurrencyError,
    Conflict,
    DomainError,
    InvalidTransition,
    InvalidValue,
    NotFound,
)
from .domain.events import EventMeta, Recorded
from .domain.jobs import JobState, Submit
from .domain.schedules import (
    SCHEDULE,
    SCHEDULE_LABEL,
    Bound,
    Create,
    Delete,
    Fire,
    FiredRef,
    Pause,
    Resume,
    Schedule,
    ScheduleFired,
    ScheduleSettings,
    SkipReason,
    Trigger,
    Update,
    occurrence_request,
    occurrence_submit,
    occurrence_workflow,
    occurrences,
    validate,
)
from .domain.workflows import RunState
from .projections.jobs import JobFilter
from .service import JobService, StreamService
from .store.db import Conn
from .store.eventstore import Announce, Change
from .store.queries import load_queries
from .wire import OccurrenceList, OccurrenceOut, PreviewTime, ScheduleOut
from .workflowservice import WorkflowService

QUERIES = load_queries(Path(__file__).parent / "projections" / "schedules.sql")
#: The state the NOTIFY of a schedule's append names, so schedulers wake for it alone.
SCHEDULE_CHANGE = "schedule"
#: Most coming times a preview lists.
MAX_PREVIEW = 100

log = structlog.get_logger(__name__)
_settings_decoder = msgspec.json.Decoder(ScheduleSettings)


async def _announce(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
    # One NOTIFY naming the schedule with a state of its own: schedulers wake for it.
    last = {r.stream_id: r.version for r in recorded}
    channel, payload = announce([Change(s, v, SCHEDULE_CHANGE) for s, v in last.items()])
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


def schedule_filter(project: str, name: str) -> JobFilter:
    """The job list's filter for a schedule's jobs."""
    return JobFilter(project=project, labels={SCHEDULE_LABEL: name})


class ScheduleService:
    """The one way schedules change, and the firing of their occurrences."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.store = jobs.store
        self.pool: asyncpg.Pool = jobs.pool
        self.streams = StreamService(jobs.store)
        self.catalog = Catalog(jobs)
        self.workflows = WorkflowService(jobs)

    # ---- commands -----------------------------------------------------------------------

    async def _execute(self, project: str, name: str, command: Any, meta: EventMeta) -> Schedule:
        sid = SCHEDULE.stream_id(project, name)
        state: Schedule = await self.streams.execute(
            SCHEDULE.name, sid, command, meta, also=_announce
        )
        return state

    async def create(
        self, project: str, name: str, settings: ScheduleSettings, meta: EventMeta
    ) -> Schedule:
        """A new schedule (or a deleted one's name again); fires from now on."""
        await self.check_run(project, name, settings)
        return await self._execute(
            project, name, Create(project=project, name=name, settings=settings), meta
        )

    async def update(
        self, project: str, name: str, settings: ScheduleSettings, meta: EventMeta
    ) -> Schedule:
        """Replace a schedule's settings; they apply from now on."""
        await self.check_run(project, name, settings)
        return await self._execute(project, name, Update(settings=settings), meta)

    async def pause(self, project: str, name: str, meta: EventMeta) -> Schedule:
        return await self._execute(project, name, Pause(), meta)

    async def resume(self, project: str, name: str, meta: EventMeta) -> Schedule:
        return await self._execute(project, name, Resume(), meta)

    async def delete(self, project: str, name: str, meta: EventMeta) -> Schedule:
        return await self._execute(project, name, Delete(), meta)

    async def trigger(self, project: str, name: str, meta: EventMeta) -> tuple[Schedule, FiredRef]:
        """Fire once now (a manual occurrence) and create its job or workflow run; returns
        what fired (its `job_id` or `workflow_run`)."""
        sid = SCHEDULE.stream_id(project, name)
        now = await self.pool.fetchval(QUERIES["now"])
        current, _ = await self.streams.load(SCHEDULE.name, sid)
        if current is not None and not current.deleted:
            # A run that cannot be made now is refused, not recorded as fired without a job.
            await self.check_run(project, name, current.settings, now)
        state = await self._execute(project, name, Bound(sid, Trigger(now=now)), meta)
        await self.ensure_jobs(sid, state, meta.actor)
        return state, state.recent[-1]

    async def check_run(
        self,
        project: str,
        name: str,
        settings: ScheduleSettings,
        now: datetime | None = None,
    ) -> None:
        """Refuse a run that could not be made now, so a bad schedule is refused when it is
        saved, not at 02:00: the settings' own checks, then for a definition its resolution
        (it exists and is enabled, the version and environment exist, the parameters fit
        its declaration), errors naming the field under `$.run`; for a workflow its steps'
        definitions the same way (under `$.run.workflow`)."""
        validate(settings, project=project)
        if settings.run.workflow is not None:
            spec = msgspec.structs.replace(settings.run.workflow, project=project)
            try:
                await self.workflows.check_definitions(spec)
            except DomainError as exc:
                raise _in_run(exc, "$.run.workflow") from None
            return
        if settings.run.definition is None:
            return
        when = now or datetime.now(UTC)
        request = occurrence_request(project, name, settings, when)
        try:
            await self.catalog.resolve(request, project)
        except DomainError as exc:
            raise _in_run(exc) from None

    async def _blocked(
        self, state: Schedule, now: datetime
    ) -> tuple[SkipReason | None, str | None]:
        """Why a definition-running schedule's occurrence cannot be made now (None: it can):
        what `Fire` records as the skip reason instead of firing. A definition disabled or
        deleted after this is read fails the job's creation instead (logged)."""
        if state.settings.run.definition is None:
            return None, None
        request = occurrence_request(state.project, state.name, state.settings, now)
        try:
            await self.catalog.resolve(request, state.project)
        except Conflict as exc:
            return SkipReason.DEFINITION_DISABLED, exc.message
        except NotFound as exc:
            # The definition itself has no field; a version or an environment does.
            if "field" not in exc.details:
                return SkipReason.DEFINITION_DELETED, exc.message
            return SkipReason.DEFINITION_UNRESOLVED, exc.message
        except DomainError as exc:
            return SkipReason.DEFINITION_UNRESOLVED, exc.message
        return None, None

    async def occurrence_command(self, state: Schedule, ref: FiredRef) -> Submit:
        """The command that creates a fired occurrence's job (a definition resolved now,
        through the catalog's one resolution path)."""
        if state.settings.run.definition is None:
            return occurrence_submit(state, ref)
        request = occurrence_request(
            state.project, state.name, state.settings, ref.occurrence, ref.manual
        )
        resolved = await self.catalog.resolve(request, state.project)
        return occurrence_submit(state, ref, resolved)

    # ---- reads --------------------------------------------------------------------------

    async def get(self, project: str, name: str, preview: int = 0) -> ScheduleOut:
        """A live schedule (`NotFound` otherwise), with its next `preview` times."""
        row = await self.pool.fetchrow(QUERIES["get_schedule"], project, name)
        if row is None:
            raise NotFound(f"no schedule {name!r} in project {project!r}")
        out = out_of(row)
        if preview > 0:
            settings = _settings_decoder.decode(row["settings"])
            start = row["next_occurrence"] or await self.pool.fetchval(QUERIES["now"])
            times = preview_times(settings, start - timedelta(microseconds=1), preview)
            out = msgspec.structs.replace(out, preview=times)
        return out

    async def list(self, project: str) -> list[ScheduleOut]:
        return [out_of(r) for r in await self.pool.fetch(QUERIES["list_schedules"], project)]

    async def occurrences(
        self,
        project: str,
        name: str,
        *,
        before: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> OccurrenceList:
        """A schedule's fired and skipped occurrences, newest first (also of a deleted one:
        the log keeps them)."""
        sid = SCHEDULE.stream_id(project, name)
        rows = await self.pool.fetch(QUERIES["occurrences"], sid, before, since, until, limit + 1)
        if not rows and before is None:
            exists = await self.pool.fetchval("SELECT 1 FROM events WHERE stream_id = $1", sid)
            if not exists:
                raise NotFound(f"no schedule {name!r} in project {project!r}")
        out = [occurrence_out(r) for r in rows[:limit]]
        more = len(rows) > limit
        return OccurrenceList(out, out[-1].version if more and out else None)

    # ---- firing -------------------------------------------------------------------------

    async def due(self, limit: int = 100) -> list[uuid.UUID]:
        """The schedules due now, by the database's clock."""
        return [r["stream_id"] for r in await self.pool.fetch(QUERIES["due_schedules"], limit)]

    async def next_due_in(self) -> float | None:
        """Seconds until the next schedule is due (None: no schedule will be)."""
        seconds: float | None = await self.pool.fetchval(QUERIES["next_due_in"])
        return seconds

    async def unsubmitted(self) -> list[uuid.UUID]:
        """Schedules with a fired occurrence whose job does not exist yet."""
        return [r["stream_id"] for r in await self.pool.fetch(QUERIES["unsubmitted"])]

    async def fire(self, sid: uuid.UUID, actor: str) -> list[FiredRef]:
        """Decide the occurrences of one schedule that are due now and create the jobs of
        those that fire; returns what this call fired (nothing if another process did)."""
        state, _ = await self.streams.load(SCHEDULE.name, sid)
        if state is None or state.deleted or state.paused:
            return []
        await self.ensure_jobs(sid, state, actor)  # a job before it counts as running
        counts = await self.pool.fetchrow(QUERIES["job_counts"], state.project, state.name)
        runs = await self.pool.fetchrow(QUERIES["run_counts"], state.project, state.name)
        now = await self.pool.fetchval(QUERIES["now"])
        assert counts is not None and runs is not None
        blocked, detail = await self._blocked(state, now)
        command = Bound(
            sid,
            Fire(
                now=now, running=counts["running"] + runs["running"],
                waiting=counts["waiting"] + runs["waiting"], blocked=blocked,
                blocked_detail=detail,
            ),
        )  # fmt: skip
        meta = EventMeta(actor=actor, correlation_id=state.correlation_id)
        new: Schedule = await self.streams.execute(
            SCHEDULE.name, sid, command, meta, also=_announce
        )
        before = {r.event_id for r in state.recent}
        fired = [r for r in new.recent if r.event_id not in before]
        if fired:
            await self.ensure_jobs(sid, new, actor)
        return [
            ScheduleFired(
                occurrence=r.occurrence, job_id=r.job_id, workflow_run=r.workflow_run,
                lag_seconds=0.0,
            )
            for r in fired
        ]  # fmt: skip

    async def ensure_jobs(self, sid: uuid.UUID, state: Schedule, actor: str) -> int:
        """Create the jobs (or workflow runs) of the state's recent fired occurrences that do
        not exist yet (each once: its id and idempotency key come from the occurrence);
        returns how many this call created. Each job's JobSubmitted (a run's
        WorkflowSubmitted) is caused by its ScheduleFired."""
        if not state.recent or state.deleted:
            return 0
        ids = [r.started for r in state.recent]
        found = {r["stream_id"] for r in await self.pool.fetch(QUERIES["existing_streams"], ids)}
        created = 0
        for ref in state.recent:
            if ref.started in found:
                continue
            meta = EventMeta(
                actor=actor,
                correlation_id=state.correlation_id or f"schedule:{sid}",
                causation_id=str(ref.event_id),
            )
            then = await self._as_fired(state, ref)
            if ref.workflow_run is not None:
                created += await self._ensure_run(then, ref, meta)
                continue
            try:
                command = await self.occurrence_command(then, ref)
                done = await self.jobs.submit_as(ref.job_id, command, meta)
            except ConcurrencyError:
                continue  # another process created it at the same moment
            except DomainError as exc:
                # The spec cannot run (e.g. a secret deleted since, or the definition
                # disabled after the firing decision): the occurrence stays fired without a
                # job, and the log says why.
                log.warning(
                    "schedule job not created", schedule=state.name, project=state.project,
                    occurrence=ref.occurrence.isoformat(), error=exc.message,
                )  # fmt: skip
                continue
            created += done.created
        return created

    async def _ensure_run(self, state: Schedule, ref: FiredRef, meta: EventMeta) -> int:
        """Start a fired occurrence's workflow run if it does not exist (1: this call did)."""
        assert ref.workflow_run is not None
        try:
            await self.workflows.submit_as(ref.workflow_run, occurrence_workflow(state, ref), meta)
        except (ConcurrencyError, InvalidTransition):
            return 0  # another process started it at the same moment
        except DomainError as exc:
            log.warning(
                "schedule workflow run not started", schedule=state.name, project=state.project,
                occurrence=ref.occurrence.isoformat(), error=exc.message,
            )  # fmt: skip
            return 0
        return 1

    async def _as_fired(self, state: Schedule, ref: FiredRef) -> Schedule:
        """The schedule as it was when `ref` fired, if it runs another kind of thing since
        (a job then, a workflow now, or the other way): read from the log, so what fired is
        what starts. Otherwise the current state (as ever: a changed spec applies)."""
        if (ref.workflow_run is not None) == (state.settings.run.workflow is not None):
            return state
        then: Schedule | None = None
        for rec in await self.store.read_stream(SCHEDULE.stream_id(state.project, state.name)):
            then = SCHEDULE.evolve(then, rec)
            if rec.event_id == ref.event_id:
                break
        assert then is not None
        return then


def preview_times(settings: ScheduleSettings, after: datetime, n: int) -> list[PreviewTime]:
    """The next `n` occurrences after `after`, in the schedule's zone and in UTC."""
    tz = zone(settings.timezone)
    return [
        PreviewTime(local=o.astimezone(tz), utc=o.astimezone(UTC))
        for o in islice(occurrences(settings, after), min(n, MAX_PREVIEW))
    ]


def out_of(row: asyncpg.Record) -> ScheduleOut:
    """A `schedules` row as the API shows it."""
    settings = msgspec.structs.asdict(_settings_decoder.decode(row["settings"]))
    keep = (
        "project", "name", "paused", "next_occurrence", "next_due_at", "last_occurrence",
        "fired", "skipped", "created_by", "created_at", "updated_by", "updated_at", "version",
    )  # fmt: skip
    return ScheduleOut(**settings, **{k: row[k] for k in keep})


def occurrence_out(row: asyncpg.Record) -> OccurrenceOut:
    """One ScheduleFired or ScheduleSkipped of the log as `occurrences` shows it."""
    event = SCHEDULE.decode(row["type"], row["schema_version"], row["data"])
    common = {"occurrence": event.occurrence, "recorded_at": row["recorded_at"],
              "version": row["version"]}  # fmt: skip
    if isinstance(event, ScheduleFired):
        created = row["job_created_at"]
        due = event.occurrence + timedelta(seconds=event.jitter_seconds)
        return OccurrenceOut(
            outcome="fired", job_id=event.job_id, workflow_run=event.workflow_run,
            workflow_run_state=(
                RunState(row["workflow_run_state"]) if row["workflow_run_state"] else None
            ),
            manual=event.manual,
            jitter_seconds=event.jitter_seconds,
            job_state=JobState(row["job_state"]) if row["job_state"] else None,
            fire_lag_seconds=round((row["recorded_at"] - due).total_seconds(), 6),
            job_lag_seconds=(
                round((created - event.occurrence).total_seconds(), 6) if created else None
            ),
            **common,
        )  # fmt: skip
    return OccurrenceOut(
        outcome="skipped", reason=str(event.reason), until=event.until, detail=event.detail,
        **common,
    )  # fmt: skip


def _in_run(exc: DomainError, under: str = "$.run") -> DomainError:
    """A resolution error in a schedule's terms: its field under `$.run` (or `under`), and
    a definition, version or environment that does not exist a 422 (the body names it)."""
    details = dict(exc.details)
    field = details.get("field")
    if isinstance(field, str) and field.startswith("$."):
        details["field"] = under + "." + field[2:]
    elif field is None:
        details["field"] = "$.run.definition"
    if isinstance(exc, NotFound):
        return InvalidValue(exc.message, **details)
    return type(exc)(exc.message, **details)
