"""Authentication (a bearer token on every /api/v1 request) and the checks handlers make:
a caller sees only its project's jobs; another project's job is "not found"."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..domain.errors import Forbidden, NotFound, Unauthenticated
from ..domain.events import EventMeta
from ..projections.jobs import JobView
from ..store.access import Principal, Role, token_hash
from .context import LOOKUPS, READS, REQUEST_ID, client_id
from .routes import OPENAPI_PATH

PRINCIPAL = web.RequestKey("principal", Principal)
#: SHA-256 of the server-wide admin token given in the environment, if any.
ENV_ADMIN_HASH = web.AppKey("env_admin_hash", bytes)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The jobs watch WebSocket (issue 17): like the `/ws` routes, it takes `?access_token=`.
WATCH_PATH = "/api/v1/jobs/watch"
_SERVER_ADMIN = Principal(token_id=None, role=Role.ADMIN)


def bearer_token(request: web.Request) -> str | None:
    """The request's token: the Authorization header, or for WebSockets (browsers cannot
    set headers there) the `access_token` query parameter."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.path.endswith("/ws") or request.path == WATCH_PATH:
        return request.query.get("access_token") or None
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/v1 route needs a live token; the principal is stored on the request."""
    if not request.path.startswith("/api/v1/") or request.path == OPENAPI_PATH:
        return await handler(request)
    request[PRINCIPAL] = await authenticate(request)
    return await handler(request)


async def authenticate(request: web.Request) -> Principal:
    """The caller the request's token identifies; 401 without a live token. (The /api/v1
    routes get it from the middleware; a route outside, e.g. /metrics, asks itself.)"""
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
    env_hash = request.app.get(ENV_ADMIN_HASH)
    if env_hash is not None and hmac.compare_digest(token_hash(token), env_hash):
        principal: Principal | None = _SERVER_ADMIN
    else:
        principal = await request.app[LOOKUPS].principal(token)
    if principal is None:
        raise Unauthenticated("invalid, expired or revoked token")
    return principal


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def require(request: web.Request, project: str, role: Role) -> Principal:
    """The caller, if it may act with `role` in `project`; else 403."""
    who = principal(request)
    if not who.may(project, role):
        raise Forbidden(f"{who.actor} may not do this in project {project} (needs {role.value})")
    return who


async def job_for(request: web.Request, job_id: uuid.UUID, role: Role = Role.VIEWER) -> JobView:
    """A job the caller may see (404 otherwise, even if it exists elsewhere), checked for
    `role` (403 when it may see but not do)."""
    view = await request.app[READS].job(job_id)
    if view is None or not principal(request).may(view.project, Role.VIEWER):
        raise NotFound("job not found", job_id=str(job_id))
    require(request, view.project, role)
    return view


def event_meta(request: web.Request) -> EventMeta:
    """Who is acting, with which token, under which request, for the events this request
    appends (I6). The request causes them; they belong to the client's `X-Correlation-Id`
    if it sent a usable one, else to the request itself. A job's later events (a worker's
    start and outcome) carry the correlation id of its submit (see `service.following`)."""
    who = principal(request)
    rid = request[REQUEST_ID]
    return EventMeta(
        actor=who.actor,
        token_id=str(who.token_id) if who.token_id else None,
        request_id=rid,
        correlation_id=client_id(request, "X-Correlation-Id") or rid,
        causation_id=rid,
    )
