"""Job routes: submit, list, detail, events, cancel."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
from aiohttp import web

from ..domain.errors import InvalidInput, NotFound
from ..domain.events import AnyEvent, EventMeta, Usage
from ..domain.jobs import JobState, RequestCancel
from ..domain.specs import JobSpec
from ..projections import jobs as jobs_projection
from ..projections.jobs import Cursor, JobFilter, JobView
from ..projections.queue import waiting_reasons
from ..store.logs import UsageSample, read_usage_samples
from .context import SERVICE, event_meta, json_response

MAX_PAGE = 500
DEFAULT_PAGE = 50

_spec_decoder = msgspec.json.Decoder(JobSpec)


class JobOut(JobView, kw_only=True):
    """A job as the API shows it: its projection row, and for a queued job what it waits for."""

    waiting_reason: str | None = None


async def job_outs(request: web.Request, views: list[JobView]) -> list[JobOut]:
    reasons = await waiting_reasons(request.app[SERVICE].pool, views)
    return [JobOut(**msgspec.structs.asdict(v), waiting_reason=reasons.get(v.id)) for v in views]


class JobList(msgspec.Struct):
    """A page of the job list; pass `next_cursor` as `cursor` for the next one."""

    jobs: list[JobOut]
    next_cursor: str | None


class EventView(msgspec.Struct):
    """One recorded event of a job."""

    event_id: uuid.UUID
    version: int
    position: int
    type: str
    recorded_at: datetime
    data: AnyEvent
    meta: EventMeta


class EventList(msgspec.Struct):
    events: list[EventView]


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


def job_id_of(request: web.Request) -> uuid.UUID:
    """The `{id}` path segment as a UUID, or 400 naming it."""
    raw = request.match_info["id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput(f"job id {raw!r} is not a UUID", field="path.id") from None


async def submit(request: web.Request) -> web.Response:
    """POST /api/v1/jobs: 201 with the new job, 200 with the earlier one for a repeated
    idempotency key."""
    spec = _spec_decoder.decode(await request.read())
    view, created = await request.app[SERVICE].submit(spec, event_meta(request))
    [out] = await job_outs(request, [view])
    return json_response(out, status=201 if created else 200)


def _param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidInput(f"query parameter {name!r} given more than once", field=f"query.{name}")
    return values[0] if values else None


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = _param(request, name)
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
        project=_param(request, "project"),
        labels=labels or None,
        created_after=_time_param(request, "created_after"),
        created_before=_time_param(request, "created_before"),
    )


async def list_jobs(request: web.Request) -> web.Response:
    """GET /api/v1/jobs: newest first, filtered, keyset-paginated."""
    filt = _filter(request)
    raw_limit = _param(request, "limit")
    try:
        limit = int(raw_limit) if raw_limit is not None else DEFAULT_PAGE
    except ValueError:
        raise InvalidInput(f"limit is not an integer: {raw_limit!r}", field="query.limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="query.limit")
    raw_cursor = _param(request, "cursor")
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
    job_id = job_id_of(request)
    view = await jobs_projection.get(request.app[SERVICE].pool, job_id)
    if view is None:
        raise NotFound("job not found", job_id=str(job_id))
    [out] = await job_outs(request, [view])
    return json_response(out)


async def job_events(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/events: the job's history, oldest first."""
    job_id = job_id_of(request)
    records = await request.app[SERVICE].store.read_stream(job_id)
    if not records:
        raise NotFound("job not found", job_id=str(job_id))
    return json_response(
        EventList(
            events=[
                EventView(
                    event_id=r.event_id,
                    version=r.version,
                    position=r.position,
                    type=type(r.event).__name__,
                    recorded_at=r.recorded_at,
                    data=r.event,
                    meta=r.meta,
                )
                for r in records
            ]
        )
    )


async def cancel_job(request: web.Request) -> web.Response:
    """POST /api/v1/jobs/{id}/cancel: queued jobs end at once, running ones go `cancelling`."""
    job_id = job_id_of(request)
    body = await request.read()
    reason = msgspec.json.decode(body, type=CancelRequest).reason if body.strip() else None
    job = await request.app[SERVICE].execute(
        job_id, RequestCancel(reason=reason), event_meta(request)
    )
    [out] = await job_outs(request, [jobs_projection.view_of(job)])
    return json_response(out)


class UsageView(msgspec.Struct):
    """A job's CPU/memory samples over time and the usage of its last attempt."""

    job_id: uuid.UUID
    state: JobState
    summary: Usage | None
    samples: list[UsageSample]


async def job_usage(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/usage: the samples (CPU % of one core, memory bytes) and the
    summary recorded when the last attempt ended (wall and CPU seconds, peak memory)."""
    job_id = job_id_of(request)
    pool = request.app[SERVICE].pool
    view = await jobs_projection.get(pool, job_id)
    if view is None:
        raise NotFound("job not found", job_id=str(job_id))
    samples = await read_usage_samples(pool, job_id)
    return json_response(
        UsageView(job_id=job_id, state=view.state, summary=view.usage, samples=samples)
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/v1/jobs", submit)
    router.add_get("/api/v1/jobs", list_jobs)
    router.add_get("/api/v1/jobs/{id}", get_job)
    router.add_get("/api/v1/jobs/{id}/events", job_events)
    router.add_post("/api/v1/jobs/{id}/cancel", cancel_job)
    router.add_get("/api/v1/jobs/{id}/usage", job_usage)
