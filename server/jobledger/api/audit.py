"""Audit queries over the event log: who did what to which job, project, account or token,
and when."""

from __future__ import annotations

import uuid

from aiohttp import web

from ..domain.errors import Forbidden, InvalidInput
from ..domain.events import FailureReason
from ..domain.registry import KINDS
from ..domain.specs import DEFAULT_PROJECT
from ..store.audit import AuditFilter
from ..wire import AuditPage, event_out
from .auth import principal
from .context import READS, json_response
from .jobs import DEFAULT_PAGE, MAX_PAGE
from .params import QUERY
from .routes import Query, Route


async def audit(request: web.Request) -> web.Response:
    """GET /api/v1/audit: events filtered by project, actor, token, job, type, time, failure
    reason and waiting time."""
    who = principal(request)
    q = request[QUERY]
    project = q["project"]
    if who.project is not None:
        if project not in (None, who.project):
            raise Forbidden(f"{who.actor} may not read project {project}", field="query.project")
        project = who.project
    limit = q["limit"]
    filt = AuditFilter(
        project=project, stream_type=q["stream_type"], actor=q["actor"],
        token_id=q["token_id"], job=q["job"], types=q["type"] or None, since=q["since"],
        until=q["until"], before=q["cursor"],
        reason=q["reason"], min_wait=q["min_wait"],
        stream=_stream(q["stream_type"], q["stream"]), tokens_of_job=q["tokens_of_job"],
    )  # fmt: skip
    found = await request.app[READS].audit(filt, limit + 1)
    events = [
        event_out(
            a.record,
            job_id=a.record.stream_id if a.record.stream_type == "job" else None,
            project=a.project,
            waited_seconds=a.waited_seconds,
        )
        for a in found[:limit]
    ]
    more = len(found) > limit
    return json_response(AuditPage(events, events[-1].position if more else None))


def _stream(kind: str | None, text: str | None) -> uuid.UUID | None:
    """The `stream` filter: a stream id, or with a named `stream_type` PROJECT/NAME (a
    project: its name; NAME alone: in the project `default`)."""
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    if kind is None or kind not in KINDS or not KINDS.get(kind).named:
        raise InvalidInput(
            "stream is a stream id, or PROJECT/NAME with the stream_type of a named kind",
            field="query.stream",
        )
    try:
        return KINDS.get(kind).stream_of(text, DEFAULT_PROJECT)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="query.stream") from None


#: Every registered kind's event types (the `type` filter's values).
EVENT_TYPE_NAMES = [t for kind in KINDS for t in kind.codec.types]
_TIME = {"type": "string", "format": "date-time"}

ROUTES = (
    Route("GET", "/api/v1/audit", audit, "Events, newest first, filtered", response=AuditPage,
          query=(
              Query("project", {"type": "string"}, "only this project's jobs"),
              Query("stream_type", {"type": "string"}, "only streams of this kind (job, ...)"),
              Query("actor", {"type": "string"}, "who acted: project/account, admin, worker:ID"),
              Query("token_id", {"type": "string"}, "with which token"),
              Query("job", {"type": "string", "format": "uuid"}, "one job's events"),
              Query("stream", {"type": "string"},
                    "one stream: its id, or PROJECT/NAME of a named stream_type (project: NAME)"),
              Query("tokens_of_job", {"type": "string", "format": "uuid"},
                    "events of the API tokens used on this job (with type=TokenIssued: who "
                    "issued them)"),
              Query("type", {"type": "string", "enum": EVENT_TYPE_NAMES}, "event types", True),
              Query("since", _TIME, "recorded at or after"),
              Query("until", _TIME, "recorded before"),
              Query("reason", {"type": "string", "enum": [r.value for r in FailureReason]},
                    "failure reason (JobFailed, JobRetryScheduled)"),
              Query("min_wait", {"type": "number", "minimum": 0},
                    "JobStarted events of jobs that waited longer than this many seconds"),
              Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size",
                    default=DEFAULT_PAGE),
              Query("cursor", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    "next_cursor of the previous page"),
          )),
)  # fmt: skip
