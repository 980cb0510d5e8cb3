"""The `jobs` projection: each job's current state as one row, kept inline with appends
and rebuildable from the log with identical results (I2)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from ..domain.events import FailureReason, Recorded, Usage
from ..domain.jobs import Job, JobState, fold
from ..domain.specs import JobSpec, SecretRef
from ..domain.templates import FromDefinition
from ..store.db import Conn
from ..store.eventstore import Announce, Change, InlineHook
from ..store.queries import load_queries
from ..store.where import Where

QUERIES = load_queries(Path(__file__).with_name("jobs.sql"))


class JobView(msgspec.Struct, kw_only=True):
    """A job as the list and detail views show it. Field order is the `jobs` column order."""

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
    version: int
    last_position: int
    correlation_id: str | None = None
    cause_event_id: uuid.UUID | None = None
    secrets: dict[str, SecretRef] = {}
    #: For a job made from a definition: its name and version (columns to filter on), and
    #: the whole record of what made the spec (versions, parameters, the request).
    definition: str | None = None
    definition_version: int | None = None
    source: FromDefinition | None = None
    #: For a workflow step's child job: its run and step name.
    workflow_run: uuid.UUID | None = None
    step: str | None = None
    #: What the worker copies into the container (see `domain.jobs.Submit.inputs`), and
    #: the output of the attempt that ended the job with the SHA-256 of its stored bytes.
    inputs: dict[str, Any] = {}
    output: Any = None
    output_sha256: str | None = None
    #: The running job whose token submitted this one, and the job this one reruns.
    parent_job: uuid.UUID | None = None
    rerun_of: uuid.UUID | None = None


COLUMNS: tuple[str, ...] = JobView.__struct_fields__


#: The columns of a `jobs` row a transition may change (write_jobs' update): all but what
#: the submit fixed (the spec and what is taken from it, who, when, where from).
CHANGED = (
    "state", "attempt", "requeue_reason", "scheduled_for", "worker_id", "exit_code",
    "failure_reason", "message", "usage", "updated_at", "started_at", "finished_at",
    "cancel_requested_at", "cancel_requested_by", "version", "last_position",
    "cause_event_id", "secrets", "output", "output_sha256",
)  # fmt: skip
_VIEW_TYPES = {f.name: f.type for f in msgspec.structs.fields(JobView)}
#: What a transition sends: the job's id and its `CHANGED` columns, typed as in `JobView`.
JobChange = msgspec.defstruct(
    "JobChange", [("id", uuid.UUID)] + [(n, _VIEW_TYPES[n]) for n in CHANGED], kw_only=True
)


_CHANGE_FIELDS = JobChange.__struct_fields__


def change_of(job: Job) -> Any:
    """What a transition writes of a job's folded state to the row it already has."""
    return JobChange(**{name: getattr(job, name) for name in _CHANGE_FIELDS})


_JSON_COLUMNS = {
    "spec": JobSpec,
    "labels": dict[str, str],
    "usage": Usage | None,
    "secrets": dict[str, SecretRef],
    "source": FromDefinition | None,
    "inputs": dict[str, Any],
    "output": Any,
}
_decoders = {name: msgspec.json.Decoder(t) for name, t in _JSON_COLUMNS.items()}
_encoder = msgspec.json.Encoder()


def view_of(job: Job) -> JobView:
    """The row a job's folded state projects to."""
    spec = job.spec
    return JobView(
        id=job.id,
        project=spec.project,
        state=job.state,
        spec=spec,
        priority=spec.priority,
        labels=spec.labels,
        tags=spec.tags,
        concurrency_key=spec.concurrency_key,
        concurrency_limit=spec.concurrency_limit,
        idempotency_key=spec.idempotency_key,
        submitted_by=job.submitted_by,
        attempt=job.attempt,
        requeue_reason=job.requeue_reason,
        scheduled_for=job.scheduled_for,
        worker_id=job.worker_id,
        exit_code=job.exit_code,
        failure_reason=job.failure_reason,
        message=job.message,
        usage=job.usage,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        cancel_requested_at=job.cancel_requested_at,
        cancel_requested_by=job.cancel_requested_by,
        version=job.version,
        last_position=job.last_position,
        correlation_id=job.correlation_id,
        cause_event_id=job.cause_event_id,
        secrets=job.secrets,
        definition=job.source.definition if job.source is not None else None,
        definition_version=job.source.definition_version if job.source is not None else None,
        source=job.source,
        workflow_run=job.workflow_run,
        step=job.step,
        inputs=job.inputs,
        output=job.output,
        output_sha256=job.output_sha256,
        parent_job=job.parent_job,
        rerun_of=job.rerun_of,
    )


def view_from_row(row: asyncpg.Record) -> JobView:
    """Decode a `jobs` row (a query may add columns of its own: they are left out)."""
    values: dict[str, Any] = {name: row[name] for name in COLUMNS}
    for name, decoder in _decoders.items():
        values[name] = decoder.decode(values[name]) if values[name] is not None else None
    values["state"] = JobState(values["state"])
    if values["failure_reason"] is not None:
        values["failure_reason"] = FailureReason(values["failure_reason"])
    return JobView(**values)


_JSON_AT = [COLUMNS.index(name) for name in _JSON_COLUMNS]
_ENUM_AT = [COLUMNS.index("state"), COLUMNS.index("failure_reason")]


_JOB_FIELDS = Job.__struct_fields__


def job_of(view: JobView) -> Job:
    """The folded state a row holds: the inverse of `view_of`. A row is the fold of its
    stream at `version`, so a writer may decide from it; the append's expected version
    refuses it if the stream moved on."""
    return Job(**{name: getattr(view, name) for name in _JOB_FIELDS})


def row_args(view: JobView) -> list[Any]:
    """The column values of a view, in column order, as the `jobs` table takes them (JSON
    columns as encoded bytes). On the rebuild's hot path: no per-column dispatch."""
    args: list[Any] = list(msgspec.structs.astuple(view))
    for i in _JSON_AT:
        if args[i] is not None:
            args[i] = _encoder.encode(args[i])
    for i in _ENUM_AT:
        if args[i] is not None:
            args[i] = args[i].value
    return args


def inline(
    priors: Mapping[uuid.UUID, Job | None], facts: list[asyncpg.Record] | None = None
) -> InlineHook:
    """The inline projection of an append: fold each stream's new events onto its prior
    state (None for a new job), write the rows and announce the changes, in one statement.
    With `facts`, if some job is queued after the append, that statement also reads the
    queue facts of their projects and the hook adds its answer row to the list
    (`queue.facts_of` decodes it; the waiting reasons: `queue.reasons`)."""

    async def hook(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
        by_stream: dict[uuid.UUID, list[Recorded]] = {}
        for rec in recorded:
            by_stream.setdefault(rec.stream_id, []).append(rec)
        jobs = [j for sid, recs in by_stream.items() if (j := fold(recs, priors.get(sid)))]
        channel, payload = announce([Change(j.id, j.version, j.state.value) for j in jobs])
        rows = _encoder.encode([view_of(j) for j in jobs if priors.get(j.id) is None])
        moved = [j for j in jobs if priors.get(j.id) is not None]
        changes = _encoder.encode([change_of(j) for j in moved])
        waiting = (
            sorted({j.spec.project for j in jobs if j.state is JobState.QUEUED})
            if facts is not None
            else []
        )
        row = await conn.fetchrow(
            QUERIES["write_jobs"], rows.decode(), channel, payload, changes.decode(),
            waiting or None, [j.id for j in moved],
        )  # fmt: skip
        if waiting:
            assert facts is not None and row is not None
            facts.append(row)

    return hook


async def get(conn: Conn | asyncpg.Pool, job_id: uuid.UUID) -> JobView | None:
    """One job's view, or None."""
    row = await conn.fetchrow(QUERIES["get_job"], job_id)
    return view_from_row(row) if row is not None else None


async def get_many(conn: Conn | asyncpg.Pool, job_ids: Iterable[uuid.UUID]) -> list[JobView]:
    """The views of the jobs that exist among some ids."""
    return [view_from_row(r) for r in await conn.fetch(QUERIES["get_jobs"], list(job_ids))]


async def find_by_idempotency_keys(
    conn: Conn | asyncpg.Pool, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], JobView]:
    """The jobs projects submitted under some idempotency keys, by (project, key)."""
    keys = list(keys)
    if not keys:
        return {}
    rows = await conn.fetch(
        QUERIES["find_by_idempotency_keys"], [p for p, _ in keys], [k for _, k in keys]
    )
    views = [view_from_row(r) for r in rows]
    return {(v.project, v.idempotency_key): v for v in views if v.idempotency_key is not None}


class JobFilter(msgspec.Struct, kw_only=True):
    """Filters of the job list; None means "any"."""

    states: list[JobState] | None = None
    project: str | None = None
    labels: dict[str, str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: Only jobs made from the definition of this name.
    definition: str | None = None
    #: Only the children of this job (submitted with its token).
    parent_job: uuid.UUID | None = None
    #: Only the child jobs of this workflow run.
    workflow_run: uuid.UUID | None = None


class Cursor(msgspec.Struct, array_like=True, frozen=True):
    """Keyset position in the newest-first list: stable while jobs are inserted."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        return base64.urlsafe_b64encode(msgspec.json.encode(self)).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises ValueError on anything that is not a cursor this server issued."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return msgspec.json.decode(raw, type=cls)
        except (ValueError, msgspec.DecodeError) as exc:
            raise ValueError("not a valid cursor") from exc


async def list_jobs(
    pool: asyncpg.Pool, filt: JobFilter, *, after: Cursor | None, limit: int
) -> tuple[list[JobView], Cursor | None]:
    """A page of jobs, newest first, and the cursor of the next page (None at the end);
    the statement has only the filters given (see `store.where`)."""
    w = job_where(filt)
    if after is not None:
        w.add("(created_at, id) < ({}::timestamptz, {}::uuid)", after.created_at, after.id)
    sql = (
        f"SELECT * FROM jobs {w.sql()}\nORDER BY created_at DESC, id DESC\nLIMIT {w.arg(limit + 1)}"
    )
    rows = await pool.fetch(sql, *w.args)
    views = [view_from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return views, (Cursor(views[-1].created_at, views[-1].id) if more else None)


def job_where(filt: JobFilter) -> Where:
    """The WHERE clause of a job filter, for the list and the counts."""
    w = Where()
    if filt.states:
        w.add("state = ANY({}::text[])", [s.value for s in filt.states])
    if filt.project is not None:
        w.add("project = {}::text", filt.project)
    if filt.labels:
        # A job with no labels matches no label filter; saying so lets the partial index
        # jobs_labels (which leaves those out) serve it.
        w.literal("labels <> '{}'::jsonb")
        w.add("labels @> {}::jsonb", _encoder.encode(filt.labels).decode())
    if filt.definition is not None:
        w.add("definition = {}::text", filt.definition)
    if filt.parent_job is not None:
        w.add("parent_job = {}::uuid", filt.parent_job)
    if filt.workflow_run is not None:
        w.add("workflow_run = {}::uuid", filt.workflow_run)
    if filt.created_after is not None:
        w.add("created_at >= {}::timestamptz", filt.created_after)
    if filt.created_before is not None:
        w.add("created_at < {}::timestamptz", filt.created_before)
    return w


async def count_jobs(pool: asyncpg.Pool, filt: JobFilter) -> dict[JobState, int]:
    """How many jobs match the filter, per state (every state present)."""
    w = job_where(filt)
    rows = await pool.fetch(
        f"SELECT state, count(*) AS n FROM jobs {w.sql()} GROUP BY state", *w.args
    )
    found = {r["state"]: r["n"] for r in rows}
    return {s: found.get(s.value, 0) for s in JobState}


def matches(filt: JobFilter, view: JobView) -> tuple[bool, bool]:
    """Whether a job matches a filter's fixed part (what it was submitted with), and whether
    it matches the whole filter in its current state: the list views' filter, in memory."""
    fixed = (
        (filt.project is None or view.project == filt.project)
        and (not filt.labels or all(view.labels.get(k) == v for k, v in filt.labels.items()))
        and (filt.definition is None or view.definition == filt.definition)
        and (filt.parent_job is None or view.parent_job == filt.parent_job)
        and (filt.workflow_run is None or view.workflow_run == filt.workflow_run)
        and (filt.created_after is None or view.created_at >= filt.created_after)
        and (filt.created_before is None or view.created_at < filt.created_before)
    )
    return fixed, fixed and (not filt.states or view.state in filt.states)
