"""`jobledger` command line: one `configure_*_parser` per subcommand."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

import asyncpg
import structlog
from aiohttp import web

from . import clientcli, logs, replaycli
from .commands import (
    add_database_args,
    database,
    default_data_dir,
    service_for,
    stop_on_signals,
)
from .domain.errors import DomainError
from .exitcodes import EXIT_DATABASE, EXIT_ERROR, EXIT_OK
from .runtime.executors import EXECUTORS, ExecutorUnavailable, make_executor
from .runtime.listener import WorkerIdInUse
from .runtime.scheduler import Scheduler, WorkerConfig
from .service import JobService
from .store.access import AccessStore
from .store.db import DatabaseUnavailable, connect
from .store.embedded import EmbeddedPostgresError
from .store.migrate import SchemaError, migrate

log = structlog.get_logger("jobledger")


# ---- serve and worker ---------------------------------------------------------------------


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def add_worker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scheduler")
    g.add_argument(
        "--worker-id",
        default=os.environ.get("JOBLEDGER_WORKER_ID") or socket.gethostname(),
        help="stable id of this worker: a restart with the same id adopts its running "
        "containers (default: the host name)",
    )
    g.add_argument(
        "--capacity", type=int, default=int(os.environ.get("JOBLEDGER_CAPACITY", "4")),
        help="jobs this worker runs at once",
    )  # fmt: skip
    g.add_argument(
        "--tags", default=os.environ.get("JOBLEDGER_TAGS", ""),
        help="comma-separated tags; jobs asking for tags run only on workers having them all",
    )  # fmt: skip
    g.add_argument(
        "--executor", choices=EXECUTORS, default=os.environ.get("JOBLEDGER_EXECUTOR", "auto"),
        help="how jobs run: docker, process (no isolation), noop (benchmarks), auto",
    )  # fmt: skip
    g.add_argument(
        "--poll-interval", type=float, default=_env_float("JOBLEDGER_POLL_INTERVAL", 2.0),
        help="seconds between looks for work when no notification arrives",
    )  # fmt: skip
    g.add_argument(
        "--heartbeat-interval", type=float,
        default=_env_float("JOBLEDGER_HEARTBEAT_INTERVAL", 3.0),
    )  # fmt: skip
    g.add_argument(
        "--lease-seconds", type=float, default=_env_float("JOBLEDGER_LEASE_SECONDS", 15.0),
        help="after this long without a heartbeat, other workers fail this worker's jobs",
    )  # fmt: skip
    _add_output_args(g)


def _add_output_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--sample-interval", type=float, default=_env_float("JOBLEDGER_SAMPLE_INTERVAL", 1.0),
        help="seconds between CPU/memory samples of a running job",
    )  # fmt: skip
    g.add_argument(
        "--log-limit-bytes", type=int,
        default=int(os.environ.get("JOBLEDGER_LOG_LIMIT_BYTES", str(100 * 1024 * 1024))),
        help="output a job may store; past it lines are dropped and counted",
    )  # fmt: skip


def worker_config(args: argparse.Namespace) -> WorkerConfig:
    """The scheduler settings given on the command line."""
    return WorkerConfig(
        worker_id=args.worker_id,
        capacity=args.capacity,
        tags=[t.strip() for t in args.tags.split(",") if t.strip()],
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat_interval,
        lease_seconds=args.lease_seconds,
        sample_interval=args.sample_interval,
        log_limit_bytes=args.log_limit_bytes,
    )


async def run_scheduler(
    service: JobService, dsn: str, args: argparse.Namespace, stop: asyncio.Event
) -> None:
    """Run one scheduler until `stop`; when the scheduler fails, the process stops too."""
    executor = await make_executor(args.executor)
    try:
        await Scheduler(service, executor, worker_config(args), dsn).run(stop)
    finally:
        stop.set()
        await executor.close()


def configure_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the HTTP API and a scheduler")
    add_database_args(p)
    p.add_argument("--host", default=os.environ.get("JOBLEDGER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("JOBLEDGER_PORT", "8080")))
    p.add_argument("--no-scheduler", action="store_true", help="serve the API only")
    p.add_argument(
        "--submit-rate", type=float, default=_env_float("JOBLEDGER_SUBMIT_RATE", 0.0),
        help="jobs per second a project may submit unless it sets its own (0: no limit)",
    )  # fmt: skip
    p.add_argument(
        "--submit-burst", type=int, default=int(os.environ.get("JOBLEDGER_SUBMIT_BURST", "100")),
        help="submits a project may make at once before the rate applies",
    )  # fmt: skip
    add_worker_args(p)
    p.set_defaults(func=cmd_serve)


async def cmd_serve(args: argparse.Namespace) -> int:
    from .api.app import create_app
    from .api.ratelimit import RateDefaults

    stop = stop_on_signals()
    async with service_for(args) as (service, dsn):
        admin_token = os.environ.get("JOBLEDGER_ADMIN_TOKEN") or None
        if admin_token is None and (
            fresh := await AccessStore(service.pool).bootstrap_admin_token()
        ):
            # The only time this secret is shown: only its hash is stored.
            print(
                f"\njobledger: server admin token (shown once, keep it): {fresh}\n"
                "  export JOBLEDGER_TOKEN=<it>, or set JOBLEDGER_ADMIN_TOKEN for a fixed one\n",
                file=sys.stderr,
                flush=True,
            )
        rate = RateDefaults(rate=args.submit_rate, burst=args.submit_burst)
        app = create_app(service, dsn, admin_token, rate)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            where = (
                "DATABASE_URL"
                if args.database_url
                else f"embedded, {args.data_dir or default_data_dir()}"
            )
            log.info("jobledger serving", url=f"http://{args.host}:{args.port}", database=where)
            if args.no_scheduler:
                await stop.wait()
            else:
                await run_scheduler(service, dsn, args, stop)
            log.info("shutting down")
        finally:
            await runner.cleanup()
    return EXIT_OK


def configure_worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run a scheduler and its executor, without the API")
    add_database_args(p)
    add_worker_args(p)
    p.set_defaults(func=cmd_worker)


async def cmd_worker(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    async with service_for(args) as (service, dsn):
        await run_scheduler(service, dsn, args, stop)
    return EXIT_OK


# ---- migrate ------------------------------------------------------------------------------


def configure_migrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    add_database_args(p)
    p.set_defaults(func=cmd_migrate)


async def cmd_migrate(args: argparse.Namespace) -> int:
    async with database(args) as dsn:
        conn = await connect(dsn)
        try:
            result = await migrate(conn)
        finally:
            await conn.close()
    print(result)
    return EXIT_OK


# ---- entry point --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobledger", description=__doc__)
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=os.environ.get("JOBLEDGER_LOG_FORMAT", "auto"),
    )
    parser.add_argument("--log-level", default=os.environ.get("JOBLEDGER_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    configure_serve_parser(sub)
    configure_worker_parser(sub)
    configure_migrate_parser(sub)
    replaycli.configure_replay_parser(sub)
    clientcli.configure_logs_parser(sub)
    clientcli.configure_submit_parser(sub)
    clientcli.configure_jobs_parser(sub)
    clientcli.configure_audit_parser(sub)
    clientcli.configure_show_parser(sub)
    clientcli.configure_cancel_parser(sub)
    clientcli.configure_tokens_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    try:
        code: int = asyncio.run(args.func(args))
        return code
    except (EmbeddedPostgresError, DatabaseUnavailable, SchemaError, asyncpg.PostgresError) as exc:
        print(f"jobledger: database error: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except (OSError, ExecutorUnavailable, WorkerIdInUse) as exc:
        print(f"jobledger: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except DomainError as exc:
        print(f"jobledger: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
