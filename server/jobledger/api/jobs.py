"""Job routes: submit, list, detail, events, cancel."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web

from ..domain.errors import Forbidden, InvalidInput, NotFound, RateLimited
from ..domain.jobs import JOB, JobState, RequestCancel
from ..domain.schedules import SCHEDULE_LABEL
from ..domain.specs import DEFAULT_PROJECT, JobSpec
from ..domain.templates import DefinitionSubmit
from ..projections import jobs as jobs_projection
from ..projections.jobs import Cursor, JobFilter, JobView
from ..replay.archive import jobs_at, stream_at
from ..replay.archiving import archived_at, archived_out
from ..service import Submitted
from ..wire import (
    MAX_BATCH,
    BatchIn,
    BatchOut,
    CancelRequest,
    EventList,
    JobList,
    JobOut,
    Role,
    Timeline,
    UsageView,
    event_out,
)  # fmt: skip
from .auth import event_meta, job_for, principal
from .context import ACCESS, LOOKUPS, READS, SERVICE, decode_body, json_response
from .params import PATH, QUERY
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
        attempt=view.attempt, requeue_reason=view.requeue_reason,
        scheduled_for=view.scheduled_for, worker_id=view.worker_id,
        exit_code=view.exit_code, failure_reason=view.failure_reason, message=view.message,
        usage=view.usage, created_at=view.created_at, updated_at=view.updated_at,
        started_at=view.started_at, finished_at=view.finished_at,
        cancel_requested_at=view.cancel_requested_at,
        cancel_requested_by=view.cancel_requested_by, version=view.version,
        last_position=view.last_position, correlation_id=view.correlation_id,
        waiting_reason=waiting_reason, secrets=view.secrets,
        definition=view.definition,
        definition_version=view.definition_version, source=view.source,
        parent_job=view.parent_job, rerun_of=view.rerun_of,
        workflow_run=view.workflow_run, step=view.step,
        inputs=view.inputs, output=view.output, output_sha256=view.output_sha256,
    )  # fmt: skip


async def job_outs(request: web.Request, views: list[JobView]) -> list[JobOut]:
    reasons = await request.app[LOOKUPS].waiting_reasons(views)
    return [job_out(v, reasons.get(v.id)) for v in views]


def submitted_out(done: Submitted) -> JobOut:
    """A submitted job with the waiting reason its submit's transaction read: no read after
    the commit, which could fail a request whose job exists."""
    return job_out(done.view, done.waiting_reason)


def job_id_of(request: web.Request) -> uuid.UUID:
    """The `{id}` path segment (parsed by the route table)."""
    job_id: uuid.UUID = request[PATH]["id"]
    return job_id


def _project_of(request: web.Request, spec: JobSpec, field: str = "$.project") -> JobSpec:
    """The spec with the caller's project filled in, if the caller may submit there."""
    who = principal(request)
    if who.project is not None and spec.project == DEFAULT_PROJECT:
        # A service account's jobs go to its own project unless the spec says otherwise.
        spec = msgspec.structs.replace(spec, project=who.project)
    if not who.may(spec.project, Role.OPERATOR):
        raise Forbidden(f"{who.actor} may not submit jobs to project {spec.project}", field=field)
    return spec


async def _take_rate(request: web.Request, specs: list[JobSpec], *, batch: bool = False) -> None:
    """Refuse a submit to a project that does not exist (404) or that submits too fast;
    `batch`: the specs are a batch's (errors name `$.jobs[n]`)."""
    per_project: dict[str, int] = {}
    for n, spec in enumerate(specs):
        if spec.project not in per_project and not await request.app[LOOKUPS].project_exists(
            spec.project
        ):
            field = f"$.jobs[{n}].project" if batch else "$.project"
            raise NotFound(f"project {spec.project} does not exist", field=field)
        per_project[spec.project] = per_project.get(spec.project, 0) + 1
    limiter = request.app[SUBMIT_LIMITER]
    for project, count in per_project.items():
        wait = await limiter.retry_after(request.app[ACCESS], project, count)
        if wait is not None:
            request.app[SERVICE].metrics.rate_limited.labels(project).inc()
            raise RateLimited(
                f"project {project} submits too fast; retry in {wait:.2f} s",
                retry_after=round(wait, 3),
            )


async def submit(request: web.Request) -> web.Response:
    """POST /api/v1/jobs: 201 with the new job, 200 with the earlier one for a repeated
    idempotency key."""
    body = await request.read()
    from .definitions import is_by_reference, submit_by_reference  # it imports this module

    if is_by_reference(body):
        return await submit_by_reference(request, body)
    spec = _project_of(request, decode_body(body, JobSpec))
    await _take_rate(request, [spec])
    done = await request.app[SERVICE].submit_with_reason(
        spec, event_meta(request), parent_job=principal(request).job_id
    )
    return json_response(submitted_out(done), status=201 if done.created else 200)


async def submit_batch(request: web.Request) -> web.Response:
    """POST /api/v1/jobs:batch: up to 1,000 specs in one transaction; 201 if any job was
    created, 200 if every spec named an existing job by its idempotency key."""
    batch = decode_body(await request.read(), BatchIn)
    specs = [_project_of(request, s, f"$.jobs[{n}].project") for n, s in enumerate(batch.jobs)]
    await _take_rate(request, specs, batch=True)
    results = await request.app[SERVICE].submit_batch_with_reasons(
        specs, event_meta(request), parent_job=principal(request).job_id
    )
    created = sum(1 for done in results if done.created)
    outs = [submitted_out(done) for done in results]
    return json_response(BatchOut(outs, created), status=201 if created else 200)


def _filter(query: dict[str, Any]) -> JobFilter:
    labels: dict[str, str] = {}
    for raw in query["label"]:
        key, _, value = raw.partition("=")
        labels[key] = value
    if query["schedule"] is not None:
        labels[SCHEDULE_LABEL] = query["schedule"]
    return JobFilter(
        states=[JobState(s) for s in query["state"]] or None,
        project=query["project"],
        labels=labels or None,
        created_after=query["created_after"],
        created_before=query["created_before"],
        definition=query["definition"],
        parent_job=query["parent_job"],
        workflow_run=query["workflow_run"],
    )


def scoped_filter(request: web.Request) -> JobFilter:
    """The request's list filters; a service account's are held to its own project (403
    for another)."""
    filt = _filter(request[QUERY])
    who = principal(request)
    if who.project is not None:
        if filt.project not in (None, who.project):
            raise Forbidden(
                f"{who.actor} may not list project {filt.project}", field="query.project"
            )
        filt.project = who.project
    return filt


async def list_jobs(request: web.Request) -> web.Response:
    """GET /api/v1/jobs: newest first, filtered, keyset-paginated; a service account sees
    its own project's jobs only."""
    query = request[QUERY]
    filt = scoped_filter(request)
    try:
        after = Cursor.decode(query["cursor"]) if query["cursor"] else None
        if after is not None:
            after.created_at.astimezone(UTC)  # a forged time may not exist in UTC
    except (ValueError, OverflowError):
        raise InvalidInput("cursor is not one this server issued", field="query.cursor") from None
    if query["at"] is not None:
        return await _list_jobs_at(request, filt, after, query["at"])
    views, next_cursor = await request.app[READS].jobs(filt, after=after, limit=query["limit"])
    return json_response(
        JobList(
            jobs=await job_outs(request, views),
            next_cursor=next_cursor.encode() if next_cursor else None,
        )
    )


async def get_job(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}; `?at=` (issue 17): as it stood then."""
    view = await job_for(request, job_id_of(request))
    if (at := request[QUERY]["at"]) is not None:
        return json_response(await _job_at(request, view.id, at))
    [out] = await job_outs(request, [view])
    return json_response(out)


async def job_events(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/events: the job's history, oldest first."""
    job_id = job_id_of(request)
    await job_for(request, job_id)
    records = await request.app[READS].events(job_id)
    if not records:  # issue 19: archived? Then say where its events went.
        at = await archived_at(request.app[READS].pool, job_id)
        if at is not None:
            return json_response(EventList(events=[], archived=archived_out(at)))
    return json_response(EventList(events=[event_out(r, job_id=r.stream_id) for r in records]))


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


async def rerun_job(request: web.Request) -> web.Response:
    """POST /api/v1/jobs/{id}/rerun (issue 16): 201 with a new job of the same spec minus
    its idempotency key, linked to the old one (`rerun_of`, and its JobSubmitted caused by
    the old job's last event); 409 for a job that has not ended."""
    job_id = job_id_of(request)
    view = await job_for(request, job_id, Role.OPERATOR)
    await _take_rate(request, [view.spec])
    done = await request.app[SERVICE].rerun(
        job_id, event_meta(request), parent_job=principal(request).job_id
    )
    return json_response(submitted_out(done), status=201)


async def job_usage(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/usage: the samples (CPU % of one core, memory bytes) and the
    summary recorded when the last attempt ended (wall and CPU seconds, peak memory)."""
    job_id = job_id_of(request)
    view = await job_for(request, job_id)
    samples = await request.app[READS].usage_samples(job_id)
    return json_response(
        UsageView(job_id=job_id, state=view.state, summary=view.usage, samples=samples)
    )


async def job_timeline(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/timeline: every transition with its actor and time, and the
    seconds spent in each state (a job still going counts until now)."""
    job_id = job_id_of(request)
    view = await job_for(request, job_id)
    found = await request.app[READS].timeline(job_id)
    if found is None:  # issue 19: archived, its transitions are in the archive file
        found = Timeline(job_id=job_id, state=view.state, transitions=[], seconds_in_state={})
    return json_response(found)


# ---- time travel (issue 17) -----------------------------------------------------------------


async def _job_at(request: web.Request, job_id: uuid.UUID, at: datetime) -> JobOut:
    """A job folded from its events recorded at or before `at` (no waiting reason: that is
    a fact of now); 404 if it did not exist yet."""
    try:
        then = await stream_at(request.app[READS].pool, JOB.name, job_id, at=at)
    except NotFound:
        raise NotFound(
            "the job did not exist at that time", job_id=str(job_id), field="query.at"
        ) from None
    return job_out(then.state)


async def _list_jobs_at(
    request: web.Request, filt: JobFilter, after: Cursor | None, at: datetime
) -> web.Response:
    """The list as it stood at `at`: jobs created by then, newest first, each folded to `at`;
    a state filter applies to the state then, after paging, so a page may be short."""
    states = filt.states
    filt.states = None
    try:
        until = at + timedelta(microseconds=1)  # created at or before `at`
        filt.created_before = min(filt.created_before or until, until)
    except OverflowError:  # `at` is the last instant there is: every job was created by then
        pass
    reads = request.app[READS]
    views, next_cursor = await reads.jobs(filt, after=after, limit=request[QUERY]["limit"])
    then = await jobs_at(reads.pool, [v.id for v in views], at)
    outs = [
        job_out(view)
        for v in views
        if (view := then.get(v.id)) is not None and (not states or view.state in states)
    ]
    return json_response(
        JobList(jobs=outs, next_cursor=next_cursor.encode() if next_cursor else None)
    )


_JOB_ID = "{id}"
_AT = Query(
    "at",
    {"type": "string", "format": "date-time"},
    "time travel: as it stood at this instant (with an offset), folded from the log",
)
_STATES = {"type": "string", "enum": [s.value for s in JobState]}
_TIME = {"type": "string", "format": "date-time"}

ROUTES = (
    Route("POST", "/api/v1/jobs", submit,
          "Submit a job: a spec, or a definition's name with its params", body=JobSpec,
          body_also=(DefinitionSubmit,), response=JobOut, status=201, also=(200,),
          role="operator"),
    Route("POST", "/api/v1/jobs:batch", submit_batch,
          f"Submit up to {MAX_BATCH} jobs at once, all or none", body=BatchIn,
          response=BatchOut, status=201, also=(200,), role="operator"),
    Route("GET", "/api/v1/jobs", list_jobs, "List jobs, newest first", response=JobList, query=(
        Query("state", _STATES, "only jobs in these states (repeat or comma-separate)", True),
        Query("project", {"type": "string"}, "only this project's jobs"),
        Query("label", {"type": "string", "pattern": "^[^=]+=.*$"},
              "KEY=VALUE; every one given must match", True),
        Query("schedule", {"type": "string"}, "only the jobs this schedule made (with project)"),
        Query("created_after", _TIME, "created at or after (with an offset)"),
        Query("created_before", _TIME, "created before (with an offset)"),
        Query("definition", {"type": "string"}, "only jobs made from this definition"),
        Query("parent_job", {"type": "string", "format": "uuid"},
              "only the children of this job (submitted with its token)"),
        Query("workflow_run", {"type": "string", "format": "uuid"},
              "only the child jobs of this workflow run"),
        Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size",
              default=DEFAULT_PAGE),
        Query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        Query("at", _TIME, "time travel: the jobs created by then, each as it stood then; a "
              "state filter applies to the state then, so a page may be shorter than limit"),
    )),
    Route("GET", f"/api/v1/jobs/{_JOB_ID}", get_job, "A job", response=JobOut, query=(_AT,)),
    Route("GET", f"/api/v1/jobs/{_JOB_ID}/events", job_events, "A job's events",
          response=EventList),
    Route("POST", f"/api/v1/jobs/{_JOB_ID}/cancel", cancel_job, "Cancel a job",
          body=CancelRequest, body_optional=True, response=JobOut, role="operator"),
    Route("POST", f"/api/v1/jobs/{_JOB_ID}/rerun", rerun_job,
          "Run an ended job again: a new job of its spec, linked by rerun_of",
          response=JobOut, status=201, role="operator"),
    Route("GET", f"/api/v1/jobs/{_JOB_ID}/usage", job_usage, "A job's CPU/memory usage",
          response=UsageView),
    Route("GET", f"/api/v1/jobs/{_JOB_ID}/timeline", job_timeline,
          "A job's transitions and time per state", response=Timeline),
)  # fmt: skip
