"""The aiohttp application: middleware (request ids, access log, errors) and routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from aiohttp import web

from .. import web as web_pages
from ..administration import AccessService
from ..catalog import Catalog
from ..domain.errors import DomainError, InvalidInput
from ..ids import request_id
from ..projections.reads import JobReads
from ..scheduleservice import ScheduleService
from ..secretservice import SecretService
from ..service import JobService
from ..store.access import token_hash
from ..store.db import DB_ERRORS, unavailable
from ..store.secretbox import SecretBox
from ..workflowservice import WorkflowService
from . import (
    audit,
    dashboard,
    definitions,
    errors,
    jobs,
    loghub,
    logs,
    metrics,
    openapi,
    projects,
    schedules,
    secrets,
    watch,
    workflows,
)  # fmt: skip
from .auth import ENV_ADMIN_HASH, auth_middleware
from .context import ACCESS, LOOKUPS, READS, REQUEST_ID, SERVICE, client_id
from .lookups import Lookups
from .ratelimit import SUBMIT_LIMITER, RateDefaults, SubmitLimiter
from .routes import register

log = structlog.get_logger("jobledger.api")

#: Largest request body accepted; a job spec is a few KiB.
MAX_BODY_BYTES = 1024 * 1024

#: How long /healthz waits for the database before saying it is away.
HEALTH_TIMEOUT_SECONDS = 3.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id to logs, log the request, and turn every error into one JSON shape."""
    rid = client_id(request, "X-Request-Id") or request_id()
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(request_id=rid):
        try:
            reject_nul(request)
            response = await handler(request)
        except DomainError as exc:
            response = errors.from_domain(exc)
        except msgspec.ValidationError as exc:
            response = errors.from_validation(exc)
        except msgspec.DecodeError as exc:
            response = errors.error_response(400, "malformed_json", f"request body: {exc}")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = errors.from_http(exc)
        except DB_ERRORS as exc:
            if not unavailable(exc):  # the database refused the query: a bug of ours
                log.exception("unhandled error", method=request.method, path=request.path)
                response = errors.error_response(500, "internal", "internal server error")
            else:
                log.warning(
                    "database unavailable", method=request.method, path=request.path,
                    error=f"{type(exc).__name__}: {exc}",
                )  # fmt: skip
                response = errors.unavailable()
        except Exception:
            log.exception("unhandled error", method=request.method, path=request.path)
            response = errors.error_response(500, "internal", "internal server error")
        _ids_on(request, response)
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return response


def reject_nul(request: web.Request) -> None:
    """PostgreSQL cannot hold a NUL character in text: refuse one in any query or path
    value here, once for every route, instead of failing in the database."""
    for where, values in (("query", request.query), ("path", request.match_info)):
        for key, value in values.items():
            if "\x00" in key or "\x00" in value:
                raise InvalidInput(
                    "text must not contain NUL characters (%00)", field=f"{where}.{key}"
                )


def _ids_on(request: web.Request, response: web.StreamResponse) -> None:
    """The request's id, and the correlation id its events carry (the client's
    `X-Correlation-Id`, else the request id), on the answer."""
    rid = request[REQUEST_ID]
    response.headers.setdefault("X-Request-Id", rid)
    response.headers.setdefault("X-Correlation-Id", client_id(request, "X-Correlation-Id") or rid)


async def _request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """Streamed answers (logs.txt, the WebSocket upgrade) send their headers before the
    middleware sees them: every answer gets its ids as it is prepared."""
    if REQUEST_ID in request:
        _ids_on(request, response)


async def healthz(request: web.Request) -> web.Response:
    """Alive and the database answers (503 with `Retry-After` while it does not)."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await request.app[READS].now()
    except (*DB_ERRORS, TimeoutError) as exc:
        return errors.unavailable(f"the database does not answer: {type(exc).__name__}")
    return web.json_response({"status": "ok"})


#: Every API operation, in the order the OpenAPI document lists them.
ROUTES = (
    *dashboard.ROUTES, *watch.ROUTES,  # before `/api/v1/jobs/{id}`, which would take them
    *jobs.ROUTES, *logs.ROUTES, *projects.ROUTES, *audit.ROUTES, *secrets.ROUTES,
    *definitions.ROUTES, *schedules.ROUTES, *workflows.ROUTES,
)  # fmt: skip


def create_app(
    service: JobService,
    dsn: str,
    admin_token: str | None = None,
    rate: RateDefaults | None = None,
    secrets_box: SecretBox | None = None,
) -> web.Application:
    """The API bound to a job service (and through it, the database); `secrets_box` holds
    the key secret values are stored under (None: secrets can be listed and deleted, not
    set)."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[SUBMIT_LIMITER] = SubmitLimiter(rate or RateDefaults())
    if admin_token:
        app[ENV_ADMIN_HASH] = token_hash(admin_token)
    app[SERVICE] = service
    app[definitions.CATALOG] = Catalog(service)
    app[READS] = reads = JobReads(service.store)
    app[ACCESS] = access = AccessService(service.pool, service.streams)
    app[LOOKUPS] = Lookups(access, reads)
    app[secrets.SECRETS] = SecretService(service.store, secrets_box)
    app[schedules.SCHEDULES] = ScheduleService(service)
    app[workflows.WORKFLOWS] = WorkflowService(service)
    app.on_response_prepare.append(_request_id_header)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(metrics.PATH, metrics.server_metrics)  # a server admin's token
    register(app.router, ROUTES)
    openapi.install(app, ROUTES)
    loghub.setup(app, dsn)
    watch.setup(app)
    web_pages.setup(app)  # the web pages under / (issue 17)
    return app
