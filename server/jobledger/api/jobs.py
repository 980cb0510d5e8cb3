"""Job routes: submit, list, detail, events, cancel."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
from aiohttp import web

from ..domain.errors import Forbidden, InvalidInput, RateLimited
from ..domain.jobs import JobState, RequestCancel
from ..domain.specs import DEFAULT_PROJECT, JobSpec
from ..domain.timeline import timeline
from ..projections import jobs as jobs_projection
from ..projections.jobs import Cursor, JobFilter, JobView
from ..store.logs import read_usage_samples
from ..wire import (
    MAX_BATCH,
    BatchIn,
    BatchOut,
    CancelRequest,
    EventList,
    JobEvent,
    JobList,
    JobOut,
    Role,
    Timeline,
    UsageView,
)  # fmt: skip
from .auth import event_meta, job_for, principal
from .context import LOOKUPS, SERVICE, decode_body, json_response
from .ratelimit import SUBMIT_LIMITER
from .routes import Query, Route

MAX_PAGE = 500
DEFAULT_PAGE = 50


def job_out(view: JobView, waiting_reason: str | None = None) -> JobOut:
    """The API's form of a projection row."""
    return JobOut(
        id=view.id, project=view.project, state=view.state, spec=view.spec,
        priority=view.priority, labels=view.labels, tags=view.tags,
        concurrency_key=view.concurrency_key, concurrency_limit=view.concurrency_limit,
        idempotency_key=view.idempotency_key, submitted_by=view.submitted_by,
        attempt=view.attempt, queue_reason=view.queue_reason,
        scheduled_for=view.scheduled_for, worker_id=view.worker_id,
        exit_code=view.exit_code, failure_reason=view.failure_reason, message=view.message,
        usage=view.usage, created_at=view.created_at, updated_at=view.updated_at,
        started_at=view.started_at, finished_at=view.finished_at,
        cancel_requested_at=view.cancel_requested_at,
        cancel_requested_by=view.cancel_requested_by, version=view.version,
        last_position=view.last_position, waiting_reason=waiting_reason,
    )  # fmt: skip


async def job_outs(request: web.Request, views: list[JobView]) -> list[JobOut]:
    reasons = await request.app[LOOKUPS].waiting_reasons(views)
    return [job_out(v, reasons.get(v.id)) for v in views]


def job_id_of(request: web.Request) -> uuid.UUID:
    """The `{id}` path segment as a UUID, or 400 naming it."""
    raw = request.match_info["id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput(f"job id {raw!r} is not a UUID", field="path.id") from None


def _project_of(request: web.Request, spec: JobSpec, field: str = "$.project") -> JobSpec:
    """The spec with the caller's project filled in, if the caller may submit there."""
    who = principal(request)
    if who.project is not None and spec.project == DEFAULT_PROJECT:
        # A service account's jobs go to its own project unless the spec says otherwise.
        spec = msgspec.structs.replace(spec, project=who.project)
    if not who.may(spec.project, Role.OPERATOR):
        raise Forbidden(f"{who.actor} may not submit jobs to project {spec.project}", field=field)
    return spec


async def _take_rate(request: web.Request, specs: list[JobSpec]) -> None:
    per_project: dict[str, int] = {}
    for spec in specs:
        per_project[spec.project] = per_project.get(spec.project, 0) + 1
    limiter = request.app[SUBMIT_LIMITER]
    for project, count in per_project.items():
        wait = await limiter.retry_after(request.app[SERVICE].pool, project, count)
        if wait is not None:
            raise RateLimited(
                f"project {project} submits too fast; retry in {wait:.2f} s",
                retry_after=round(wait, 3),
            )


async def submit(request: web.Request) -> web.Response:
    """POST /api/v1/jobs: 201 with the new job, 200 with the earlier one for a repeated
    idempotency key."""
    spec = _project_of(request, decode_body(await request.read(), JobSpec))
    await _take_rate(request, [spec])
    view, created = await request.app[SERVICE].submit(spec, event_meta(request))
    [out] = await job_outs(request, [view])
    return json_response(out, status=201 if created else 200)


async def submit_batch(request: web.Request) -> web.Response:
    """POST /api/v1/jobs:batch: up to 1,000 specs in one transaction; 201 if any job was
    created, 200 if every spec named an existing job by its idempotency key."""
    batch = decode_body(await request.read(), BatchIn)
    specs = [_project_of(request, s, f"$.jobs[{n}].project") for n, s in enumerate(batch.jobs)]
    await _take_rate(request, specs)
    results = await request.app[SERVICE].submit_batch(specs, event_meta(request))
    outs = await job_outs(request, [view for view, _ in results])
    created = sum(1 for _, new in results if new)
    return json_response(BatchOut(outs, created), status=201 if created else 200)


def query_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidInput(f"query parameter {name!r} given more than once", field=f"query.{name}")
    return values[0] if values else None


def page_limit(request: web.Request) -> int:
    """The `limit` query parameter: 1..MAX_PAGE, DEFAULT_PAGE when absent."""
    raw = query_param(request, "limit")
    try:
        limit = int(raw) if raw is not None else DEFAULT_PAGE
    except ValueError:
        raise InvalidInput(f"limit is not an integer: {raw!r}", field="query.limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="query.limit")
    return limit


def time_param(request: web.Request, name: str) -> datetime | None:
    raw = query_param(request, name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{name} is not an ISO 8601 time: {raw!r}", field=f"query.{name}"
        ) from None
    if value.tzinfo is None:
        raise InvalidInput(f"{name} needs a timezone offset, e.g. {raw}Z", field=f"query.{name}")
    return value


def _filter(request: web.Request) -> JobFilter:
    states: list[JobState] = []
    for raw in request.query.getall("state", []):
        for part in raw.split(","):
            try:
                states.append(JobState(part))
            except ValueError:
                allowed = ", ".join(s.value for s in JobState)
                raise InvalidInput(
                    f"unknown state {part!r}; one of: {allowed}", field="query.state"
                ) from None
    labels: dict[str, str] = {}
    for raw in request.query.getall("label", []):
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise InvalidInput(f"label filter must be KEY=VALUE, got {raw!r}", field="query.label")
        labels[key] = value
    return JobFilter(
        states=states or None,
        project=query_param(request, "project"),
        labels=labels or None,
        created_after=time_param(request, "created_after"),
        created_before=time_param(request, "created_before"),
    )


async def list_jobs(request: web.Request) -> web.Response:
    """GET /api/v1/jobs: newest first, filtered, keyset-paginated; a service account sees
    its own project's jobs only."""
    filt = _filter(request)
    who = principal(request)
    if who.project is not None:
        if filt.project not in (None, who.project):
            raise Forbidden(
                f"{who.actor} may not list project {filt.project}", field="query.project"
            )
        filt.project = who.project
    limit = page_limit(request)
    raw_cursor = query_param(request, "cursor")
    try:
        after = Cursor.decode(raw_cursor) if raw_cursor else None
    except ValueError:
        raise InvalidInput("cursor is not one this server issued", field="query.cursor") from None
    views, next_cursor = await jobs_projection.list_jobs(
        request.app[SERVICE].pool, filt, after=after, limit=limit
    )
    return json_response(
        JobList(
            jobs=await job_outs(request, views),
            next_cursor=next_cursor.encode() if next_cursor else None,
        )
    )


async def get_job(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}."""
    view = await job_for(request, job_id_of(request))
    [out] = await job_outs(request, [view])
    return json_response(out)


async def job_events(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/events: the job's history, oldest first."""
    job_id = job_id_of(request)
    await job_for(request, job_id)
    records = await request.app[SERVICE].store.read_stream(job_id)
    return json_response(
        EventList(
            events=[
                JobEvent(
                    position=r.position,
                    event_id=r.event_id,
                    stream_id=r.stream_id,
                    version=r.version,
                    type=type(r.event).__name__,
                    schema_version=r.event.SCHEMA,
                    recorded_at=r.recorded_at,
                    data=r.event,
                    meta=r.meta,
                    job_id=r.stream_id,
                )
                for r in records
            ]
        )
    )


async def cancel_job(request: web.Request) -> web.Response:
    """POST /api/v1/jobs/{id}/cancel: queued jobs end at once, running ones go `cancelling`."""
    job_id = job_id_of(request)
    await job_for(request, job_id, Role.OPERATOR)
    body = await request.read()
    reason = decode_body(body, CancelRequest).reason if body.strip() else None
    job = await request.app[SERVICE].execute(
        job_id, RequestCancel(reason=reason), event_meta(request)
    )
    [out] = await job_outs(request, [jobs_projection.view_of(job)])
    return json_response(out)


async def job_usage(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/usage: the samples (CPU % of one core, memory bytes) and the
    summary recorded when the last attempt ended (wall and CPU seconds, peak memory)."""
    job_id = job_id_of(request)
    pool = request.app[SERVICE].pool
    view = await job_for(request, job_id)
    samples = await read_usage_samples(pool, job_id)
    return json_response(
        UsageView(job_id=job_id, state=view.state, summary=view.usage, samples=samples)
    )


async def job_timeline(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/timeline: every transition with its actor and time, and the
    seconds spent in each state (a job still going counts until now)."""
    job_id = job_id_of(request)
    await job_for(request, job_id)
    records = await request.app[SERVICE].store.read_stream(job_id)
    now = await request.app[SERVICE].pool.fetchval("SELECT clock_timestamp()")
    return json_response(timeline(records, now))


_JOB_ID = "{id}"
_STATES = {"type": "string", "enum": [s.value for s in JobState]}
_TIME = {"type": "string", "format": "date-time"}

ROUTES = (
    Route("POST", "/api/v1/jobs", submit, "Submit a job", body=JobSpec, response=JobOut,
          status=201, also=(200,), role="operator"),
    Route("POST", "/api/v1/jobs:batch", submit_batch,
          f"Submit up to {MAX_BATCH} jobs at once, all or none", body=BatchIn,
          response=BatchOut, status=201, also=(200,), role="operator"),
    Route("GET", "/api/v1/jobs", list_jobs, "List jobs, newest first", response=JobList, query=(
        Query("state", _STATES, "only jobs in these states (repeat or comma-separate)", True),
        Query("project", {"type": "string"}, "only this project's jobs"),
        Query("label", {"type": "string", "pattern": "^[^=]+=.*$"},
              "KEY=VALUE; every one given must match", True),
        Query("created_after", _TIME, "created at or after (with an offset)"),
        Query("created_before", _TIME, "created before (with an offset)"),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size"),
        Query("cursor", {"type": "string"}, "next_cursor of the previous page"),
    )),
    Route("GET", f"/api/v1/jobs/{_JOB_ID}", get_job, "A job", response=JobOut),
    Route("GET", f"/api/v1/jobs/{_JOB_ID}/events", job_events, "A job's events",
          response=EventList),
    Route("POST", f"/api/v1/jobs/{_JOB_ID}/cancel", cancel_job, "Cancel a job",
          body=CancelRequest, body_optional=True, response=JobOut, role="operator"),
    Route("GET", f"/api/v1/jobs/{_JOB_ID}/usage", job_usage, "A job's CPU/memory usage",
          response=UsageView),
    Route("GET", f"/api/v1/jobs/{_JOB_ID}/timeline", job_timeline,
          "A job's transitions and time per state", response=Timeline),
)  # fmt: skip
