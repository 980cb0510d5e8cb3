"""Audit queries over the event log: who did what to which job, and when."""

from __future__ import annotations

import uuid

from aiohttp import web

from ..domain.errors import Forbidden, InvalidInput
from ..domain.events import EVENT_TYPES, FailureReason
from ..store.audit import AuditFilter
from ..store.audit import audit as audit_events
from ..store.eventstore import record_from_row
from ..wire import AuditPage, JobEvent
from .auth import principal
from .context import SERVICE, json_response
from .jobs import MAX_PAGE, page_limit, query_param, time_param
from .routes import Query, Route


def number_param(request: web.Request, name: str) -> float | None:
    """A non-negative number from the query string, or None."""
    raw = query_param(request, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise InvalidInput(f"{name} must be a number of seconds >= 0", field=f"query.{name}")
    return value


async def audit(request: web.Request) -> web.Response:
    """GET /api/v1/audit: events filtered by project, actor, token, job, type, time, failure
    reason and waiting time."""
    who = principal(request)
    project = query_param(request, "project")
    if who.project is not None:
        if project not in (None, who.project):
            raise Forbidden(f"{who.actor} may not read project {project}", field="query.project")
        project = who.project
    types = [t for raw in request.query.getall("type", []) for t in raw.split(",")]
    for t in types:
        if t not in EVENT_TYPES:
            known = ", ".join(EVENT_TYPES)
            raise InvalidInput(f"unknown event type {t!r}; one of: {known}", field="query.type")
    job_raw = query_param(request, "job")
    cursor_raw = query_param(request, "cursor")
    try:
        job = uuid.UUID(job_raw) if job_raw else None
    except ValueError:
        raise InvalidInput(f"job {job_raw!r} is not a UUID", field="query.job") from None
    try:
        cursor = int(cursor_raw) if cursor_raw else None
        if cursor is not None and not 0 < cursor < 2**63:  # a position is a positive bigint
            raise ValueError(cursor_raw)
    except ValueError:
        raise InvalidInput("cursor is not one this server issued", field="query.cursor") from None
    reason = query_param(request, "reason")
    if reason is not None and reason not in set(FailureReason):
        known = ", ".join(FailureReason)
        raise InvalidInput(f"unknown reason {reason!r}; one of: {known}", field="query.reason")
    min_wait = number_param(request, "min_wait")
    limit = page_limit(request)
    filt = AuditFilter(
        project=project, actor=query_param(request, "actor"),
        token_id=query_param(request, "token_id"), job=job, types=types or None,
        since=time_param(request, "since"), until=time_param(request, "until"),
        before=cursor, reason=reason, min_wait=min_wait,
    )  # fmt: skip
    rows = await audit_events(request.app[SERVICE].pool, filt, limit + 1)
    events = []
    for row in rows[:limit]:
        rec = record_from_row(row)
        events.append(
            JobEvent(
                position=rec.position,
                event_id=rec.event_id,
                stream_id=rec.stream_id,
                version=rec.version,
                type=type(rec.event).__name__,
                schema_version=rec.event.SCHEMA,
                recorded_at=rec.recorded_at,
                data=rec.event,
                meta=rec.meta,
                job_id=rec.stream_id,
                project=row["project"],
                waited_seconds=row["waited"],
            )
        )
    more = len(rows) > limit
    return json_response(AuditPage(events, events[-1].position if more else None))


_TIME = {"type": "string", "format": "date-time"}
ROUTES = (
    Route("GET", "/api/v1/audit", audit, "Events, newest first, filtered", response=AuditPage,
          query=(
              Query("project", {"type": "string"}, "only this project's jobs"),
              Query("actor", {"type": "string"}, "who acted: project/account, admin, worker:ID"),
              Query("token_id", {"type": "string"}, "with which token"),
              Query("job", {"type": "string", "format": "uuid"}, "one job's events"),
              Query("type", {"type": "string", "enum": list(EVENT_TYPES)}, "event types", True),
              Query("since", _TIME, "recorded at or after"),
              Query("until", _TIME, "recorded before"),
              Query("reason", {"type": "string", "enum": list(FailureReason)},
                    "failure reason (JobFailed, JobRetryScheduled)"),
              Query("min_wait", {"type": "number", "minimum": 0},
                    "JobStarted events of jobs that waited longer than this many seconds"),
              Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size"),
              Query("cursor", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    "next_cursor of the previous page"),
          )),
)  # fmt: skip
