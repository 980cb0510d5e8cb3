"""`GET /metrics` in Prometheus's text format (issue 19).

Two ways to reach it, the operator's choice (README "Metrics"):
- on the API's own address, with a server admin's token: the counts cover every project, so
  no project's role may read them;
- on a separate address (`serve --metrics-port`, `worker --metrics-port`), without a token:
  a small listener serving only `/metrics` and `/healthz`, to be bound where only the
  scraper reaches it (default 127.0.0.1).

The queue gauges are read from the `jobs` projection when scraped, by the server only (a
worker's scrape holds its own counts): one grouped query over the queued jobs, under a
time limit so that a slow database never holds a scrape; its time is itself a gauge."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog
from aiohttp import web

from ..domain.errors import Forbidden
from ..metrics import CONTENT_TYPE, Metrics
from ..projections.queue import queue_depths
from ..service import JobService
from ..store.db import DB_ERRORS
from . import errors
from .auth import authenticate
from .context import SERVICE

log = structlog.get_logger(__name__)

#: The longest a scrape waits for the queue query; past it the queue gauges are left out.
QUEUE_TIMEOUT_SECONDS = 2.0
#: How long the separate listener's /healthz waits for the database.
HEALTH_TIMEOUT_SECONDS = 3.0

PATH = "/metrics"


async def scrape(metrics: Metrics, pool: asyncpg.Pool, *, queue: bool) -> bytes:
    """The process's metrics, with the queue read now if `queue` (the server's)."""
    if queue:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(QUEUE_TIMEOUT_SECONDS):
                rows = await queue_depths(pool)
        except (*DB_ERRORS, TimeoutError) as exc:
            log.warning("metrics: the queue could not be read", error=f"{type(exc).__name__}")
            metrics.queue_failed()
        else:
            metrics.set_queue(rows, time.perf_counter() - began)
    return metrics.render()


def _response(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def server_metrics(request: web.Request) -> web.Response:
    """GET /metrics on the API's address: a server admin's token is needed."""
    who = await authenticate(request)
    if not who.is_server_admin:
        raise Forbidden(
            "only a server admin may read /metrics here (or scrape the --metrics-port "
            "listener, which needs no token)"
        )
    service = request.app[SERVICE]
    return _response(await scrape(service.metrics, service.pool, queue=True))


def metrics_app(service: JobService, *, queue: bool) -> web.Application:
    """The separate listener: `/metrics` (no token) and `/healthz` (the database answers)."""

    async def metrics(_request: web.Request) -> web.Response:
        return _response(await scrape(service.metrics, service.pool, queue=queue))

    async def healthz(_request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await service.pool.fetchval("SELECT 1")
        except (*DB_ERRORS, TimeoutError) as exc:
            return errors.unavailable(f"the database does not answer: {type(exc).__name__}")
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get(PATH, metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_listener(
    service: JobService, host: str, port: int, *, queue: bool
) -> web.AppRunner:
    """Serve `metrics_app` on host:port until the returned runner is cleaned up."""
    runner = web.AppRunner(metrics_app(service, queue=queue), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
