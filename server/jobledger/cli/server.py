"""`jobledger serve`, `worker` and `migrate`: the server-side verbs. The modules they run on
(asyncpg, aiohttp.web, runtime, store, api) are imported when one of them runs, never to
build the parser, so the client verbs do not load the server."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from typing import TYPE_CHECKING

from ..exitcodes import EXIT_OK
from .options import add_database_args, env_option

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator

    from ..runtime.scheduler import WorkerConfig
    from ..service import JobService
    from ..store.secretbox import SecretBox

#: The executors `--executor` takes (runtime.executors.EXECUTORS, named here so the parser
#: does not import the runtime; a test keeps the two equal).
EXECUTORS = ("auto", "docker", "process", "noop")


def add_worker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scheduler")
    env_option(
        g, "--worker-id", env="JOBLEDGER_WORKER_ID", default=socket.gethostname(),
        help="stable id of this worker: a restart with the same id adopts its running "
        "containers (default: the host name)",
    )  # fmt: skip
    env_option(
        g, "--capacity", env="JOBLEDGER_CAPACITY", type=int, default=4,
        help="jobs this worker runs at once",
    )  # fmt: skip
    env_option(
        g, "--tags", env="JOBLEDGER_TAGS", default="",
        help="comma-separated tags; jobs asking for tags run only on workers having them all",
    )  # fmt: skip
    env_option(
        g, "--executor", env="JOBLEDGER_EXECUTOR", choices=EXECUTORS, default="auto",
        help="how jobs run: docker, process (no isolation), noop (benchmarks), auto",
    )  # fmt: skip
    env_option(
        g, "--noop-seconds", env="JOBLEDGER_NOOP_SECONDS", type=float, default=0.0,
        help="with --executor noop: how long each attempt lasts (benchmarks of fixed-length "
        "jobs; default 0, it ends at once)",
    )  # fmt: skip
    env_option(
        g, "--poll-interval", env="JOBLEDGER_POLL_INTERVAL", type=float, default=2.0,
        help="seconds between looks for work when no notification arrives",
    )  # fmt: skip
    env_option(
        g, "--heartbeat-interval", env="JOBLEDGER_HEARTBEAT_INTERVAL", type=float, default=3.0,
        help="seconds between the worker's heartbeats",
    )  # fmt: skip
    env_option(
        g, "--lease-seconds", env="JOBLEDGER_LEASE_SECONDS", type=float, default=15.0,
        help="after this long without a heartbeat, other workers fail this worker's jobs",
    )  # fmt: skip
    env_option(
        g, "--sample-interval", env="JOBLEDGER_SAMPLE_INTERVAL", type=float, default=1.0,
        help="seconds between CPU/memory samples of a running job",
    )  # fmt: skip
    env_option(
        g, "--log-limit-bytes", env="JOBLEDGER_LOG_LIMIT_BYTES", type=int,
        default=100 * 1024 * 1024,
        help="output a job may store; past it lines are dropped and counted",
    )  # fmt: skip
    env_option(
        g, "--api-url", env="JOBLEDGER_API_URL", default=None,
        help="the API address job containers reach the server at: each running job gets a "
        "token of its own and this address (JOBLEDGER_TOKEN, JOBLEDGER_API_URL) to submit "
        "children with (default for serve: from --host/--port, a wildcard host as the "
        f"Docker bridge's {DOCKER_BRIDGE}; a worker without it gives jobs no token)",
    )  # fmt: skip


def add_metrics_args(p: argparse.ArgumentParser, what: str) -> None:
    """`--metrics-port` and `--metrics-host`: a listener of its own serving `/metrics`
    without a token (issue 19)."""
    g = p.add_argument_group("metrics")
    env_option(
        g, "--metrics-port", env="JOBLEDGER_METRICS_PORT", type=int, default=None,
        help=f"serve {what} metrics (Prometheus text format) at /metrics on this port, "
        "without a token, and /healthz (unset: no such listener)",
    )  # fmt: skip
    env_option(
        g, "--metrics-host", env="JOBLEDGER_METRICS_HOST", default="127.0.0.1",
        help="address the metrics listener binds to: only the scraper should reach it",
    )  # fmt: skip


@contextlib.asynccontextmanager
async def metrics_listener(
    service: JobService, args: argparse.Namespace, *, queue: bool
) -> AsyncIterator[None]:
    """The `--metrics-port` listener while the context lasts (none if the port is unset);
    `queue`: its scrapes read the queue too (the server's do)."""
    if args.metrics_port is None:
        yield
        return
    import structlog

    from ..api.metrics import start_listener

    runner = await start_listener(service, args.metrics_host, args.metrics_port, queue=queue)
    structlog.get_logger("jobledger").info(
        "metrics listening",
        url=f"http://{_url_host(args.metrics_host)}:{args.metrics_port}/metrics",
    )
    try:
        yield
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def worker_config(args: argparse.Namespace) -> WorkerConfig:
    """The scheduler settings given on the command line."""
    from ..runtime.scheduler import WorkerConfig

    return WorkerConfig(
        worker_id=args.worker_id,
        capacity=args.capacity,
        tags=[t.strip() for t in args.tags.split(",") if t.strip()],
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat_interval,
        lease_seconds=args.lease_seconds,
        sample_interval=args.sample_interval,
        log_limit_bytes=args.log_limit_bytes,
        api_url=args.api_url or derived_api_url(args),
    )


#: The address the default Docker bridge gives the host, as its containers reach it.
DOCKER_BRIDGE = "172.17.0.1"


def derived_api_url(args: argparse.Namespace) -> str | None:
    """The API address jobs get by default (issue 16): `serve`'s own listen address; one
    listening on every address (0.0.0.0, ::) is reached from a Docker container at the
    bridge's address, from a local process at 127.0.0.1. A `worker` has none, nor does the
    `noop` executor, which runs no command."""
    host, port = getattr(args, "host", None), getattr(args, "port", None)
    if host is None or port is None or args.executor == "noop":  # noop runs no command
        return None
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1" if args.executor == "process" else DOCKER_BRIDGE
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def run_scheduler(
    service: JobService,
    dsn: str,
    args: argparse.Namespace,
    stop: asyncio.Event,
    secrets_box: SecretBox | None = None,
) -> None:
    """Run one scheduler until `stop`. It rides out database outages by itself; should it
    fail all the same (a bug), it is logged and started again, adopting what it left: the
    process (and with `serve`, the API) stays up. Only a worker id already in use stops it."""
    import asyncio
    import contextlib

    import structlog

    from ..runtime.executors import make_executor
    from ..runtime.scheduler import Scheduler
    from ..store.notifications import WorkerIdInUse

    log = structlog.get_logger("jobledger")
    executor = await make_executor(args.executor, noop_seconds=args.noop_seconds)
    backoff = 1.0
    firing = asyncio.create_task(run_firing(service, dsn, args, stop), name="firing")
    workflows = asyncio.create_task(run_workflows(service, dsn, args, stop), name="workflows")
    retention = asyncio.create_task(run_retention(service, args, stop), name="retention")
    try:
        while not stop.is_set():
            try:
                await Scheduler(service, executor, worker_config(args), dsn, secrets_box).run(stop)
            except WorkerIdInUse:
                raise
            except Exception:
                log.exception("scheduler failed, starting it again", retry_in=backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 30.0)
    finally:
        stop.set()
        await asyncio.gather(firing, workflows, retention, return_exceptions=True)
        await executor.close()


async def run_firing(
    service: JobService, dsn: str, args: argparse.Namespace, stop: asyncio.Event
) -> None:
    """Fire due schedules beside the scheduler until `stop` (every scheduler process does:
    each tick is decided once among them). Restarted like the scheduler if it fails."""
    import asyncio
    import contextlib

    import structlog

    from ..runtime.firing import Firing
    from ..scheduleservice import ScheduleService

    log = structlog.get_logger("jobledger")
    firing = Firing(ScheduleService(service), dsn, f"worker:{args.worker_id}", args.poll_interval)
    backoff = 1.0
    while not stop.is_set():
        try:
            await firing.run(stop)
        except Exception:
            log.exception("schedule firing failed, starting it again", retry_in=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 30.0)


async def run_workflows(
    service: JobService, dsn: str, args: argparse.Namespace, stop: asyncio.Event
) -> None:
    """Move workflow runs beside the scheduler until `stop` (every scheduler process does:
    each decision is taken once on the run's stream). Restarted like the scheduler."""
    import asyncio
    import contextlib

    import structlog

    from ..runtime.workflows import WorkflowRuntime
    from ..workflowservice import WorkflowService

    log = structlog.get_logger("jobledger")
    runtime = WorkflowRuntime(
        WorkflowService(service), dsn, f"worker:{args.worker_id}", args.poll_interval
    )
    backoff = 1.0
    while not stop.is_set():
        try:
            await runtime.run(stop)
        except Exception:
            log.exception("workflow runtime failed, starting it again", retry_in=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 30.0)


def add_retention_args(p: argparse.ArgumentParser) -> None:
    """Retention (issue 19): how long finished jobs' output is kept, pruned in the background
    by every scheduler process."""
    g = p.add_argument_group("retention")
    env_option(
        g, "--retention-days", env="JOBLEDGER_RETENTION_DAYS", type=int, default=30,
        help="days a finished job's output lines and usage samples are kept, unless its "
        "project sets retention_days (0: forever)",
    )  # fmt: skip
    env_option(
        g, "--retention-interval", env="JOBLEDGER_RETENTION_INTERVAL", type=float, default=300.0,
        help="seconds between two passes of the background prune",
    )  # fmt: skip


async def run_retention(service: JobService, args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Prune finished jobs' output past retention beside the scheduler until `stop`.
    Restarted like the scheduler if it fails."""
    import asyncio
    import contextlib

    import structlog

    from ..runtime.retention import Retention

    log = structlog.get_logger("jobledger")
    retention = Retention(service.pool, args.retention_days, interval=args.retention_interval)
    backoff = 1.0
    while not stop.is_set():
        try:
            await retention.run(stop)
        except Exception:
            log.exception("retention failed, starting it again", retry_in=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 30.0)


def configure_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP API and a scheduler",
        description="Run the HTTP API and a scheduler. The server admin token comes from "
        "JOBLEDGER_ADMIN_TOKEN; unset, one is created and printed once.",
    )
    add_database_args(p)
    g = p.add_argument_group("API")
    env_option(g, "--host", env="JOBLEDGER_HOST", default="127.0.0.1", help="address to listen on")
    env_option(g, "--port", env="JOBLEDGER_PORT", type=int, default=8080, help="port to listen on")
    g.add_argument("--no-scheduler", action="store_true", help="serve the API only")
    env_option(
        g, "--submit-rate", env="JOBLEDGER_SUBMIT_RATE", type=float, default=0.0,
        help="jobs per second a project may submit unless it sets its own (0: no limit)",
    )  # fmt: skip
    env_option(
        g, "--submit-burst", env="JOBLEDGER_SUBMIT_BURST", type=int, default=100,
        help="submits a project may make at once before the rate applies",
    )  # fmt: skip
    add_worker_args(p)
    add_metrics_args(p, "the server's")
    add_retention_args(p)
    p.set_defaults(func=cmd_serve)


async def cmd_serve(args: argparse.Namespace) -> int:
    import structlog
    from aiohttp import web

    from ..administration import AccessService
    from ..api.app import create_app
    from ..api.ratelimit import RateDefaults
    from .startup import default_data_dir, secrets_box, service_for, stop_on_signals

    log = structlog.get_logger("jobledger")
    stop = stop_on_signals()
    async with service_for(args) as (service, dsn), contextlib.AsyncExitStack() as stack:
        box = secrets_box(args, create=True)
        # A secret: read from the environment only, never an option (it would show in `ps`).
        admin_token = os.environ.get("JOBLEDGER_ADMIN_TOKEN") or None
        if admin_token is None and (
            fresh := await AccessService(service.pool, service.streams).bootstrap_admin_token()
        ):
            # The only time this secret is shown: only its hash is stored.
            print(
                f"\njobledger: server admin token (shown once, keep it): {fresh}\n"
                "  export JOBLEDGER_TOKEN=<it>, or set JOBLEDGER_ADMIN_TOKEN for a fixed one\n",
                file=sys.stderr,
                flush=True,
            )
        rate = RateDefaults(rate=args.submit_rate, burst=args.submit_burst)
        app = create_app(service, dsn, admin_token, rate, secrets_box=box)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            await stack.enter_async_context(metrics_listener(service, args, queue=True))
            where = (
                "DATABASE_URL"
                if args.database_url
                else f"embedded, {args.data_dir or default_data_dir()}"
            )
            log.info(
                "jobledger serving",
                url=f"http://{args.host}:{args.port}",
                database=where,
                secrets_key=box.key_id if box is not None else None,
            )
            if args.no_scheduler:
                await stop.wait()
            else:
                await run_scheduler(service, dsn, args, stop, box)
            log.info("shutting down")
        finally:
            await runner.cleanup()
    return EXIT_OK


def configure_worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run a scheduler and its executor, without the API")
    add_database_args(p)
    add_worker_args(p)
    add_metrics_args(p, "this worker's")
    add_retention_args(p)
    p.set_defaults(func=cmd_worker)


async def cmd_worker(args: argparse.Namespace) -> int:
    import structlog

    from .startup import secrets_box, service_for, stop_on_signals

    stop = stop_on_signals()
    async with service_for(args) as (service, dsn):
        box = secrets_box(args)
        structlog.get_logger("jobledger").info(
            "worker starting", secrets_key=box.key_id if box is not None else None
        )
        async with metrics_listener(service, args, queue=False):
            await run_scheduler(service, dsn, args, stop, box)
    return EXIT_OK


def configure_migrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    add_database_args(p)
    p.set_defaults(func=cmd_migrate)


async def cmd_migrate(args: argparse.Namespace) -> int:
    from ..store.db import connect
    from ..store.migrate import migrate
    from .startup import database

    async with database(args) as dsn:
        conn = await connect(dsn)
        try:
            result = await migrate(conn)
        finally:
            await conn.close()
    print(result)
    return EXIT_OK
