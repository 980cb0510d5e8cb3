"""Workflow run routes: operators submit, cancel and rerun runs; viewers read them, their
steps (state, child job and its `RUN.N` label, times, waiting reason, output) and events.
A run's child jobs are listed by `GET /api/v1/jobs?workflow_run=ID`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from ..domain.errors import Forbidden, InvalidInput, NotFound
from ..domain.specs import DEFAULT_PROJECT
from ..domain.workflow_specs import WorkflowSpec
from ..domain.workflows import RunState
from ..replay.archiving import archived_at, archived_out
from ..store.access import Role
from ..wire import (
    CancelRequest,
    RerunRequest,
    WorkflowEventList,
    WorkflowRunList,
    WorkflowRunOut,
    event_out,
)
from ..workflowservice import WorkflowService, run_out
from .auth import event_meta, principal, require
from .context import LOOKUPS, decode_body, json_response
from .loghub import LOG_HUB
from .params import PATH, QUERY
from .routes import Query, Route

#: Submits, cancels, reruns and reads workflow runs.
WORKFLOWS = web.AppKey("workflows", WorkflowService)
#: Longest `wait` of a run's long-poll: below clients' usual 30-second read timeouts.
MAX_WAIT_SECONDS = 25.0
#: A long-poll re-reads the run this often even without a notification (one may be lost).
SAFETY_RECHECK_SECONDS = 5.0


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    created_at: datetime
    id: uuid.UUID


def _service(request: web.Request) -> WorkflowService:
    return request.app[WORKFLOWS]


async def _run_id(request: web.Request, role: Role = Role.VIEWER) -> uuid.UUID:
    """The path's run, if the caller may see it (404 otherwise), checked for `role`."""
    run_id: uuid.UUID = request[PATH]["run"]
    project = await _service(request).project_of(run_id)
    if project is None or not principal(request).may(project, Role.VIEWER):
        raise NotFound("workflow run not found", run_id=str(run_id))
    require(request, project, role)
    return run_id


async def submit_workflow(request: web.Request) -> web.Response:
    """POST /api/v1/workflows: a new run of the spec (operator of its project)."""
    spec = decode_body(await request.read(), WorkflowSpec)
    who = principal(request)
    if who.project is not None and spec.project == DEFAULT_PROJECT:
        spec = msgspec.structs.replace(spec, project=who.project)
    if not who.may(spec.project, Role.OPERATOR):
        raise Forbidden(
            f"{who.actor} may not run workflows in project {spec.project}", field="$.project"
        )
    if not await request.app[LOOKUPS].project_exists(spec.project):
        raise NotFound(f"project {spec.project} does not exist", field="$.project")
    run = await _service(request).submit(spec, event_meta(request))
    return json_response(run_out(run), status=201)


async def list_workflows(request: web.Request) -> web.Response:
    """GET /api/v1/workflows: newest first, by project, state and schedule."""
    query = request[QUERY]
    who = principal(request)
    project = query["project"]
    if who.project is not None:
        if project not in (None, who.project):
            raise Forbidden(f"{who.actor} may not list project {project}", field="query.project")
        project = who.project
    try:
        raw = query["cursor"]
        after = msgspec.json.decode(bytes.fromhex(raw), type=_Cursor) if raw else None
        if after is not None:
            after.created_at.astimezone(UTC)
    except (ValueError, OverflowError, msgspec.DecodeError):
        raise InvalidInput("cursor is not one this server issued", field="query.cursor") from None
    runs, more = await _service(request).list(
        projects=[project] if project is not None else None,
        states=[RunState(s) for s in query["state"]] or None,
        before=(after.created_at, after.id) if after is not None else None,
        limit=query["limit"],
        schedule=query["schedule"],
    )
    cursor = msgspec.json.encode(_Cursor(*more)).hex() if more is not None else None
    return json_response(WorkflowRunList(runs=[run_out(r) for r in runs], next_cursor=cursor))


async def get_workflow(request: web.Request) -> web.Response:
    """GET /api/v1/workflows/{id}: the run with its steps. With `after_version=V&wait=S` a
    long-poll: answered once the run's version passes V (it changed), or after S seconds
    with the run as it is. Woken by the run's NOTIFY through the log hub, as log followers
    are by their job's."""
    run_id = await _run_id(request)
    query = request[QUERY]
    service = _service(request)
    after, wait = query["after_version"], query["wait"]
    if after is None or not wait:
        return json_response(run_out(await service.load(run_id)))
    hub = request.app[LOG_HUB]
    deadline = asyncio.get_running_loop().time() + wait
    # Register before reading: a change recorded in between then wakes us.
    with hub.subscribe(run_id) as sub:
        while True:
            sub.clear()
            run = await service.load(run_id)
            left = deadline - asyncio.get_running_loop().time()
            if run.version > after or left <= 0 or hub.closing:
                return json_response(run_out(run))
            await sub.wait(min(left, SAFETY_RECHECK_SECONDS))


async def workflow_events(request: web.Request) -> web.Response:
    """GET /api/v1/workflows/{id}/events: the run's history, oldest first."""
    run_id = await _run_id(request)
    records = await _service(request).events(run_id)
    if not records:  # issue 19: archived? Then say where its events went.
        at = await archived_at(_service(request).pool, run_id)
        if at is not None:
            return json_response(WorkflowEventList(events=[], archived=archived_out(at)))
    return json_response(WorkflowEventList(events=[event_out(r) for r in records]))


async def cancel_workflow(request: web.Request) -> web.Response:
    """POST /api/v1/workflows/{id}/cancel: skip what has not started, cancel running steps."""
    run_id = await _run_id(request, Role.OPERATOR)
    body = await request.read()
    reason = decode_body(body, CancelRequest).reason if body.strip() else None
    run = await _service(request).cancel(run_id, reason, event_meta(request))
    return json_response(run_out(run))


async def rerun_workflow(request: web.Request) -> web.Response:
    """POST /api/v1/workflows/{id}/rerun: a new run, whole or from the failed steps."""
    run_id = await _run_id(request, Role.OPERATOR)
    body = await request.read()
    mode = decode_body(body, RerunRequest).mode if body.strip() else RerunRequest().mode
    run = await _service(request).rerun(run_id, mode, event_meta(request))
    return json_response(run_out(run), status=201)


_BASE = "/api/v1/workflows"
_ONE = f"{_BASE}/{{run}}"
_T = ("workflows",)

ROUTES = (
    Route("POST", _BASE, submit_workflow, "Run a workflow: named steps with needs",
          body=WorkflowSpec, response=WorkflowRunOut, status=201, role="operator", tags=_T),
    Route("GET", _BASE, list_workflows, "List workflow runs, newest first",
          response=WorkflowRunList, tags=_T,
          query=(Query("project", {"type": "string"}, "only this project's runs"),
                 Query("state", {"type": "string", "enum": [s.value for s in RunState]},
                       "only runs in these states (repeat or comma-separate)", True),
                 Query("schedule", {"type": "string"}, "only runs this schedule started"),
                 Query("limit", {"type": "integer", "minimum": 1, "maximum": 500},
                       "page size", default=50),
                 Query("cursor", {"type": "string"}, "next_cursor of the previous page"))),
    Route("GET", _ONE, get_workflow, "A workflow run: its steps with state, child job, "
          "times, waiting reason and output; with after_version and wait, once it changes",
          response=WorkflowRunOut, tags=_T,
          query=(Query("after_version", {"type": "integer", "minimum": 0},
                       "with wait: answer once the run's version is past this one"),
                 Query("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
                       "with after_version: seconds to wait for a change at most",
                       default=0))),
    Route("GET", f"{_ONE}/events", workflow_events, "A workflow run's events, oldest first",
          response=WorkflowEventList, tags=_T),
    Route("POST", f"{_ONE}/cancel", cancel_workflow, "Cancel a run: waiting steps are "
          "skipped, running steps' jobs cancelled", body=CancelRequest, body_optional=True,
          response=WorkflowRunOut, role="operator", tags=_T),
    Route("POST", f"{_ONE}/rerun", rerun_workflow, "Run an ended run's spec again, whole or "
          "from its failed steps", body=RerunRequest, body_optional=True,
          response=WorkflowRunOut, status=201, role="operator", tags=_T),
)  # fmt: skip
