"""Routes the web dashboard needs besides the job routes (issue 17): who the caller is, the
job counts per state, and the one-job history check behind the "history verified" mark.
(Time travel is `?at=` on the job routes; the live job list is `watch.py`.)"""

from __future__ import annotations

from aiohttp import web

from ..projections.jobs import count_jobs
from ..replay.archiving import archived_out
from ..replay.verify import ArchivedCheck, verify_archived, verify_stream
from ..wire import ChainProblem, ChainVerdict, JobCounts, WhoAmI
from .auth import job_for, principal
from .context import READS, json_response
from .jobs import ROUTES as JOB_ROUTES
from .jobs import job_id_of, scoped_filter
from .routes import Route

#: The list's filters, as `GET /api/v1/jobs` declares them, without paging or time travel:
#: the counts and the watch take the same ones.
LIST_FILTERS = tuple(
    q
    for r in JOB_ROUTES
    if (r.method, r.path) == ("GET", "/api/v1/jobs")
    for q in r.query
    if q.name not in ("limit", "cursor", "at")
)


async def whoami(request: web.Request) -> web.Response:
    """GET /api/v1/whoami: the caller's actor, role, project and token."""
    who = principal(request)
    return json_response(
        WhoAmI(
            actor=who.actor,
            role=who.role,
            project=who.project,
            token_id=who.token_id,
            expires_at=who.expires_at,
            job_id=who.job_id,
        )
    )


async def job_counts(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/counts: the jobs the list's filters match, per state; scoped like
    the list (a service account counts its own project's jobs)."""
    counts = await count_jobs(request.app[READS].pool, scoped_filter(request))
    return json_response(JobCounts(counts=counts, total=sum(counts.values())))


async def verify_job(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/verify: recompute the job's hash chain (and versions, decoding,
    fold, projection row) the way `replay verify` does, for this one stream."""
    job_id = job_id_of(request)
    await job_for(request, job_id)
    check = await verify_stream(request.app[READS].pool, job_id)
    if check.events == 0 and (kept := await verify_archived(request.app[READS].pool, job_id)):
        return json_response(_archived_verdict(kept))
    problem = None
    if check.problems:
        first = check.problems[0]
        problem = ChainProblem(kind=first.kind, message=first.detail, version=first.version)
    elif check.events == 0:  # a `jobs` row with no events at all: nothing to stand on
        problem = ChainProblem(kind="events_missing", message="the job has no events")
    return json_response(
        ChainVerdict(
            verified=problem is None,
            events=check.events,
            checked_at=check.checked_at,
            problem=problem,
        )
    )


def _archived_verdict(kept: ArchivedCheck) -> ChainVerdict:
    """Issue 19: an archived job's events are in its archive file; the log keeps the
    checkpoint (hash-chained like every event) with the job's final state, which the row
    must equal. `replay verify --archive DIR` checks the file itself."""
    matches = not kept.differences
    problem = None
    if not matches:
        problem = ChainProblem(
            kind="projection_differs",
            message="the jobs row differs from the final state its archive checkpoint keeps "
            "in: " + ", ".join(kept.differences),
        )
    return ChainVerdict(
        verified=matches,
        events=kept.at.state.version,
        checked_at=kept.checked_at,
        problem=problem,
        archived=archived_out(kept.at, state_matches=matches),
    )


# Before the job routes: `/api/v1/jobs/{id}` would otherwise take `counts` for an id.
ROUTES = (
    Route("GET", "/api/v1/whoami", whoami, "Who the token stands for: actor, role, project",
          response=WhoAmI),
    Route("GET", "/api/v1/jobs/counts", job_counts,
          "How many jobs match the list's filters, per state", response=JobCounts,
          query=LIST_FILTERS),
    Route("GET", "/api/v1/jobs/{id}/verify", verify_job,
          "Whether a job's history recomputes (its hash chain, as `replay verify` checks it)",
          response=ChainVerdict),
)  # fmt: skip
