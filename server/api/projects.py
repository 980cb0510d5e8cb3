"""Project routes: read a project's limit and usage, set its limit on running jobs."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from aiohttp import web

from ..domain.errors import InvalidInput
from ..domain.specs import PROJECT_NAME
from ..projections import queue
from .context import SERVICE, json_response

_NAME = re.compile(PROJECT_NAME)


class ProjectLimits(msgspec.Struct, forbid_unknown_fields=True):
    """Limits of a project; 0 running jobs pauses it (its jobs wait)."""

    max_running_jobs: Annotated[int, msgspec.Meta(ge=0, le=100_000)]


_limits_decoder = msgspec.json.Decoder(ProjectLimits)


def project_name(request: web.Request) -> str:
    name = request.match_info["project"]
    if len(name) > 63 or not _NAME.match(name):
        raise InvalidInput(f"not a project name: {name!r}", field="path.project")
    return name


async def get_project(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}: limit, running and queued counts."""
    return json_response(await queue.project_view(request.app[SERVICE].pool, project_name(request)))


async def put_limits(request: web.Request) -> web.Response:
    """PUT /api/v1/projects/{project}/limits: set the limit on running jobs."""
    name = project_name(request)
    limits = _limits_decoder.decode(await request.read())
    view = await queue.set_project_limit(request.app[SERVICE].pool, name, limits.max_running_jobs)
    return json_response(view)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/projects/{project}", get_project)
    router.add_put("/api/v1/projects/{project}/limits", put_limits)
