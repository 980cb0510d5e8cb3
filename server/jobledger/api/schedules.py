"""Schedule routes: operators and admins create, change, pause, resume, trigger and delete a
project's schedules; viewers read them, their next times (`?preview=N`) and occurrences."""

from __future__ import annotations

from aiohttp import web

from ..domain.schedules import Schedule, ScheduleSettings
from ..scheduleservice import ScheduleService
from ..wire import (
    NewSchedule,
    OccurrenceList,
    Role,
    ScheduleList,
    ScheduleOut,
    TriggeredOut,
)
from .auth import event_meta
from .context import decode_body, json_response
from .params import PATH, QUERY
from .projects import existing_project
from .routes import Query, Route

#: Changes, reads and fires schedules.
SCHEDULES = web.AppKey("schedules", ScheduleService)


def _service(request: web.Request) -> ScheduleService:
    return request.app[SCHEDULES]


async def _answer(request: web.Request, state: Schedule, status: int = 200) -> web.Response:
    out = await _service(request).get(state.project, state.name)
    return json_response(out, status=status)


async def create_schedule(request: web.Request) -> web.Response:
    """POST /api/v1/projects/{project}/schedules (operator)."""
    project = await existing_project(request, Role.OPERATOR)
    body = decode_body(await request.read(), NewSchedule)
    state = await _service(request).create(project, body.name, body.settings(), event_meta(request))
    return await _answer(request, state, 201)


async def list_schedules(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}/schedules."""
    project = await existing_project(request, Role.VIEWER)
    return json_response(ScheduleList(await _service(request).list(project)))


async def get_schedule(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}/schedules/{schedule}[?preview=N]."""
    project = await existing_project(request, Role.VIEWER)
    preview = request[QUERY]["preview"] or 0
    return json_response(
        await _service(request).get(project, request[PATH]["schedule"], preview=preview)
    )


async def put_schedule(request: web.Request) -> web.Response:
    """PUT /api/v1/projects/{project}/schedules/{schedule}: replace the settings (operator)."""
    project = await existing_project(request, Role.OPERATOR)
    settings = decode_body(await request.read(), ScheduleSettings)
    state = await _service(request).update(
        project, request[PATH]["schedule"], settings, event_meta(request)
    )
    return await _answer(request, state)


async def delete_schedule(request: web.Request) -> web.Response:
    """DELETE /api/v1/projects/{project}/schedules/{schedule} (operator)."""
    project = await existing_project(request, Role.OPERATOR)
    await _service(request).delete(project, request[PATH]["schedule"], event_meta(request))
    return web.Response(status=204)


async def pause_schedule(request: web.Request) -> web.Response:
    project = await existing_project(request, Role.OPERATOR)
    state = await _service(request).pause(project, request[PATH]["schedule"], event_meta(request))
    return await _answer(request, state)


async def resume_schedule(request: web.Request) -> web.Response:
    project = await existing_project(request, Role.OPERATOR)
    state = await _service(request).resume(project, request[PATH]["schedule"], event_meta(request))
    return await _answer(request, state)


async def trigger_schedule(request: web.Request) -> web.Response:
    """POST .../{schedule}/trigger: run now, as a manual occurrence (operator)."""
    project = await existing_project(request, Role.OPERATOR)
    state, fired = await _service(request).trigger(
        project, request[PATH]["schedule"], event_meta(request)
    )
    out = await _service(request).get(state.project, state.name)
    triggered = TriggeredOut(schedule=out, job_id=fired.job_id, workflow_run=fired.workflow_run)
    return json_response(triggered, status=201)


async def list_occurrences(request: web.Request) -> web.Response:
    """GET .../{schedule}/occurrences: fired and skipped, newest first."""
    project = await existing_project(request, Role.VIEWER)
    q = request[QUERY]
    return json_response(
        await _service(request).occurrences(
            project,
            request[PATH]["schedule"],
            before=q["before"],
            since=q["since"],
            until=q["until"],
            limit=q["limit"],
        )
    )


_BASE = "/api/v1/projects/{project}/schedules"
_ONE = f"{_BASE}/{{schedule}}"
_TIME = {"type": "string", "format": "date-time"}
_T = ("schedules",)

ROUTES = (
    Route("POST", _BASE, create_schedule, "Create a schedule", body=NewSchedule,
          response=ScheduleOut, status=201, role="operator", tags=_T),
    Route("GET", _BASE, list_schedules, "List a project's schedules", response=ScheduleList,
          tags=_T),
    Route("GET", _ONE, get_schedule, "A schedule (with ?preview=N: its next N times)",
          response=ScheduleOut, tags=_T,
          query=(Query("preview", {"type": "integer", "minimum": 0, "maximum": 100},
                       "list the next N times in the schedule's zone and UTC"),)),
    Route("PUT", _ONE, put_schedule, "Replace a schedule's settings (from now on)",
          body=ScheduleSettings, response=ScheduleOut, role="operator", tags=_T),
    Route("DELETE", _ONE, delete_schedule, "Delete a schedule (its occurrences stay in the log)",
          status=204, role="operator", tags=_T),
    Route("POST", f"{_ONE}/pause", pause_schedule, "Pause a schedule (nothing is recorded "
          "while paused)", response=ScheduleOut, role="operator", tags=_T),
    Route("POST", f"{_ONE}/resume", resume_schedule, "Resume a schedule, from now on",
          response=ScheduleOut, role="operator", tags=_T),
    Route("POST", f"{_ONE}/trigger", trigger_schedule, "Run a schedule now (a manual "
          "occurrence)", response=TriggeredOut, status=201, role="operator", tags=_T),
    Route("GET", f"{_ONE}/occurrences", list_occurrences,
          "What became of a schedule's occurrences: fired (job, lag) or skipped (reason)",
          response=OccurrenceList, tags=_T,
          query=(Query("since", _TIME, "occurrences at or after this time"),
                 Query("until", _TIME, "occurrences before this time"),
                 Query("before", {"type": "integer", "minimum": 1}, "next_before of the "
                       "previous page"),
                 Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                       "page size", default=100))),
)  # fmt: skip
