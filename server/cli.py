"""`jobledger` command line: one `configure_*_parser` per subcommand."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import structlog
from aiohttp import web

from . import logs
from .domain.errors import DomainError
from .domain.jobs import JobState
from .runtime.executors import EXECUTORS, ExecutorUnavailable, make_executor
from .runtime.listener import WorkerIdInUse
from .runtime.scheduler import Scheduler, WorkerConfig
from .service import JobService
from .store.access import bootstrap_admin_token
from .store.db import DatabaseUnavailable, connect, create_pool
from .store.embedded import EmbeddedPostgres, EmbeddedPostgresError
from .store.eventstore import EventStore
from .store.migrate import migrate

if TYPE_CHECKING:
    from .client import Client

log = structlog.get_logger("jobledger")

#: Exit codes scripts can rely on, mapped from errors in this one place.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3

DATABASE_NAME = "jobledger"


def default_data_dir() -> Path:
    """Where the embedded database lives unless told otherwise."""
    if env := os.environ.get("JOBLEDGER_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        # Root's home is closed to the `postgres` user the cluster must run as.
        return Path("/var/lib/jobledger")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jobledger"


def add_database_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (env DATABASE_URL); without it an embedded cluster is used",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory of the embedded cluster (env JOBLEDGER_DATA_DIR; default "
        "~/.local/share/jobledger, or /var/lib/jobledger as root)",
    )


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    """The DSN to use, starting the embedded cluster when no URL is given (and stopping it
    afterwards if this process started it)."""
    if args.database_url:
        yield args.database_url
        return
    data_dir = args.data_dir or default_data_dir()
    pg = EmbeddedPostgres(data_dir / "pg")
    started = not pg.running
    await asyncio.to_thread(pg.start)
    try:
        conn = await connect(pg.dsn("postgres"))
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            await conn.close()
        yield pg.dsn(DATABASE_NAME)
    finally:
        if started:
            await asyncio.to_thread(pg.stop)


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


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


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


async def open_service(dsn: str) -> JobService:
    """A job service on a fresh pool, with the schema brought up to date."""
    pool = await create_pool(dsn)
    async with pool.acquire() as conn:
        await migrate(conn)
    return JobService(EventStore(pool))


def configure_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the HTTP API and a scheduler")
    add_database_args(p)
    p.add_argument("--host", default=os.environ.get("JOBLEDGER_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("JOBLEDGER_PORT", "8080")))
    p.add_argument("--no-scheduler", action="store_true", help="serve the API only")
    add_worker_args(p)
    p.set_defaults(func=cmd_serve)


async def cmd_serve(args: argparse.Namespace) -> int:
    from .api.app import create_app

    stop = stop_on_signals()
    async with database(args) as dsn:
        service = await open_service(dsn)
        try:
            admin_token = os.environ.get("JOBLEDGER_ADMIN_TOKEN") or None
            if admin_token is None and (fresh := await bootstrap_admin_token(service.pool)):
                # The only time this secret is shown: only its hash is stored.
                print(
                    f"\njobledger: server admin token (shown once, keep it): {fresh}\n"
                    "  export JOBLEDGER_TOKEN=<it>, or set JOBLEDGER_ADMIN_TOKEN for a fixed one\n",
                    file=sys.stderr,
                    flush=True,
                )
            app = create_app(service, dsn, admin_token)
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
        finally:
            await service.pool.close()
    return EXIT_OK


def configure_worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run a scheduler and its executor, without the API")
    add_database_args(p)
    add_worker_args(p)
    p.set_defaults(func=cmd_worker)


async def cmd_worker(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    async with database(args) as dsn:
        service = await open_service(dsn)
        try:
            await run_scheduler(service, dsn, args, stop)
        finally:
            await service.pool.close()
    return EXIT_OK


# ---- migrate ------------------------------------------------------------------------------


def configure_migrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="apply schema.sql to the database (idempotent)")
    add_database_args(p)
    p.set_defaults(func=cmd_migrate)


async def cmd_migrate(args: argparse.Namespace) -> int:
    async with database(args) as dsn:
        conn = await connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    print("schema is up to date")
    return EXIT_OK


# ---- replay -------------------------------------------------------------------------------


class RebuildReport(msgspec.Struct):
    projection: str
    jobs: int
    events: int
    seconds: float
    events_per_second: float


def configure_replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="tools that read the event log")
    add_database_args(p)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    rebuild = verbs.add_parser("rebuild", help="rebuild every projection from the event log")
    rebuild.set_defaults(func=cmd_replay_rebuild)


async def cmd_replay_rebuild(args: argparse.Namespace) -> int:
    from .projections import jobs as jobs_projection

    async with database(args) as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            events = await pool.fetchval("SELECT count(*) FROM events")
            started = time.perf_counter()
            count = await jobs_projection.rebuild(pool)
            seconds = time.perf_counter() - started
        finally:
            await pool.close()
    report = RebuildReport(
        "jobs", count, events, round(seconds, 3), round(events / max(seconds, 1e-9))
    )
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return EXIT_OK


# ---- client verbs: logs, submit, jobs, show, cancel ---------------------------------------


def add_client_args(p: argparse.ArgumentParser) -> None:
    """`--url` and `--token`, the options of every verb that talks to a server."""
    from .client import DEFAULT_URL

    g = p.add_argument_group("server")
    g.add_argument(
        "--url", default=os.environ.get("JOBLEDGER_URL", DEFAULT_URL),
        help=f"the server (env JOBLEDGER_URL; default {DEFAULT_URL})",
    )  # fmt: skip
    g.add_argument(
        "--token", default=os.environ.get("JOBLEDGER_TOKEN"),
        help="API token, sent as `Authorization: Bearer` (env JOBLEDGER_TOKEN, which keeps "
        "it out of the process list)",
    )  # fmt: skip


async def with_client(args: argparse.Namespace, action: Callable[[Client], Awaitable[int]]) -> int:
    """Run `action` with a client of the server `args` name; a refused or failed request
    ends it with `jobledger: <message>` on stderr and exit 1."""
    from .client import Client, ClientError

    try:
        async with Client(args.url, token=args.token) as client:
            return await action(client)
    except ClientError as exc:
        hint = (
            " (pass --token or set JOBLEDGER_TOKEN)" if exc.status == 401 and not args.token else ""
        )
        print(f"jobledger: {exc.message}{hint}", file=sys.stderr)
        return EXIT_ERROR


def key_value(text: str) -> tuple[str, str]:
    """`KEY=VALUE` on the command line (an argparse type)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def job_states(text: str) -> list[str]:
    """One state or several comma-separated (an argparse type)."""
    states = [s.strip() for s in text.split(",") if s.strip()]
    known = [s.value for s in JobState]
    if not states or any(s not in known for s in states):
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of: {', '.join(known)}")
    return states


def iso_time(text: str) -> datetime:
    """An ISO 8601 time with its offset, e.g. 2030-01-01T09:00:00Z (an argparse type)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a timezone offset, e.g. 2030-01-01T09:00:00Z or +02:00"
        )
    return value


def configure_logs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("logs", help="print a job's logs; -f follows them until the job ends")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument(
        "-f", "--follow", action="store_true",
        help="stream new lines live until the job ends (resumes after a dropped connection)",
    )  # fmt: skip
    p.add_argument("--after", type=int, default=0, help="start after this line number (seq)")
    add_client_args(p)
    p.set_defaults(func=cmd_logs)


async def cmd_logs(args: argparse.Namespace) -> int:
    from .api.logs import LinesMessage
    from .client import print_lines

    async def run(client: Client) -> int:
        if args.follow:
            async for message in client.follow_logs(args.job_id, after=args.after):
                if isinstance(message, LinesMessage):
                    print_lines(message.lines)
        else:
            async for lines in client.read_logs(args.job_id, after=args.after):
                print_lines(lines)
        return EXIT_OK

    return await with_client(args, run)


SUBMIT_USAGE = "jobledger submit [OPTIONS] IMAGE [OPTIONS] [-- CMD ARG...]"


def _add_submit_options(p: argparse.ArgumentParser) -> None:
    spec = p.add_argument_group("job spec (unset fields take the server's defaults)")
    spec.add_argument(
        "--env", type=key_value, action="append", default=[], metavar="K=V",
        help="an environment variable of the job (repeatable)",
    )  # fmt: skip
    spec.add_argument(
        "--cpu", type=float, metavar="CORES", help="CPU cores, fractions allowed (default 1)"
    )
    spec.add_argument("--memory-mb", type=int, metavar="MB", help="memory limit (default 512)")
    spec.add_argument(
        "--timeout", type=int, metavar="SECONDS", help="wall-clock limit (timeout_seconds)"
    )
    spec.add_argument(
        "--priority", type=int, metavar="N", help="-1000..1000, higher first (default 0)"
    )
    spec.add_argument(
        "--label", type=key_value, action="append", default=[], metavar="K=V",
        help="a label to filter on (repeatable)",
    )  # fmt: skip
    spec.add_argument(
        "--tag", action="append", default=[], metavar="T",
        help="a worker tag the job needs (repeatable)",
    )  # fmt: skip
    spec.add_argument(
        "--project",
        metavar="NAME",
        help="the job's project (default: the token's own, else default)",
    )
    spec.add_argument(
        "--scheduled-for", type=iso_time, metavar="ISO",
        help="earliest start, ISO 8601 with offset (e.g. 2030-01-01T09:00:00Z)",
    )  # fmt: skip
    spec.add_argument("--idempotency-key", metavar="KEY", help="one job per key and project")
    spec.add_argument(
        "--retries", type=int, metavar="N", help="attempts more after a failure (max_retries)"
    )
    spec.add_argument(
        "--concurrency-key", metavar="KEY", help="jobs sharing a key do not run at once"
    )
    spec.add_argument("--workdir", metavar="DIR", help="absolute working directory")
    out = p.add_argument_group("output")
    out.add_argument(
        "--json", action="store_true", help="print the whole job as JSON (with --wait: at its end)"
    )
    out.add_argument(
        "--wait", action="store_true",
        help="wait for the job to end and exit with its exit code (1 when it failed without "
        "one: timeout, start error, cancelled...)",
    )  # fmt: skip
    out.add_argument(
        "-f", "--follow", action="store_true",
        help="stream the job's output while waiting (implies --wait; the id goes to stderr)",
    )  # fmt: skip
    add_client_args(p)


class _AfterImage(argparse.Action):
    """What follows IMAGE: options up to `--`, then the job's command. Left alone, argparse
    would end the options at IMAGE and take everything after it as the command."""

    def __init__(self, *args: Any, options: argparse.ArgumentParser, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.options = options

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        rest = [str(v) for v in values or []]
        if "--" in rest:
            head, command = rest[: rest.index("--")], rest[rest.index("--") + 1 :]
        elif rest and not rest[0].startswith("-"):
            head, command = [], rest  # `IMAGE CMD ARG...`, the way `docker run` takes it
        else:
            head, command = rest, []
        if {"-h", "--help"} & set(head):
            parser.print_help()
            parser.exit()
        _, unknown = self.options.parse_known_args(head, namespace)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (the command goes after --)")
        if namespace.json and namespace.follow:
            parser.error("--json and --follow do not mix: the job's output goes to stdout")
        setattr(namespace, self.dest, command)


def configure_submit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "submit", usage=SUBMIT_USAGE, help="submit a job; --wait for its end, -f for its output"
    )
    _add_submit_options(p)
    after_image = argparse.ArgumentParser(prog=p.prog, usage=SUBMIT_USAGE, add_help=False)
    _add_submit_options(after_image)
    p.add_argument("image", metavar="IMAGE", help="container image")
    p.add_argument(
        "job_command", nargs=argparse.REMAINDER, action=_AfterImage, options=after_image,
        metavar="-- CMD ARG", help="the command and its arguments (default: the image's)",
    )  # fmt: skip
    p.set_defaults(func=cmd_submit)


def spec_of(args: argparse.Namespace) -> dict[str, Any]:
    """The job spec (the API's JSON fields) the submit options ask for; what was not given
    is left out, for the server to fill in with its defaults."""
    resources = {"cpu": args.cpu, "memory_mb": args.memory_mb}
    fields: dict[str, Any] = {
        "image": args.image,
        "command": args.job_command,
        "env": dict(args.env),
        "workdir": args.workdir,
        "resources": {k: v for k, v in resources.items() if v is not None},
        "timeout_seconds": args.timeout,
        "priority": args.priority,
        "labels": dict(args.label),
        "tags": args.tag,
        "project": args.project,
        "scheduled_for": args.scheduled_for,
        "idempotency_key": args.idempotency_key,
        "retry": {"max_retries": args.retries} if args.retries is not None else None,
        "concurrency_key": args.concurrency_key,
    }
    return {k: v for k, v in fields.items() if v is not None and v != [] and v != {}}


async def cmd_submit(args: argparse.Namespace) -> int:
    from .client import print_lines
    from .clientfmt import outcome

    wait = args.wait or args.follow

    async def run(client: Client) -> int:
        job = await client.submit(spec_of(args))
        if args.follow:
            print(f"jobledger: submitted job {job.id}", file=sys.stderr, flush=True)
        elif not (args.json and wait):
            print(msgspec.json.encode(job).decode() if args.json else job.id, flush=True)
        if not wait:
            return EXIT_OK
        job = await client.wait(str(job.id), print_lines if args.follow else None)
        if args.json:
            print(msgspec.json.encode(job).decode())
        code, message = outcome(job)
        if message:
            print(f"jobledger: {message}", file=sys.stderr)
        return code

    return await with_client(args, run)


def configure_jobs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("jobs", help="list jobs, newest first")
    p.add_argument(
        "--state", type=job_states, action="append", default=[], metavar="S",
        help="only jobs in this state (repeatable, or comma-separated)",
    )  # fmt: skip
    p.add_argument("--project", metavar="NAME", help="only this project's jobs")
    p.add_argument(
        "--label", type=key_value, action="append", default=[], metavar="K=V",
        help="only jobs with this label (repeatable; all must match)",
    )  # fmt: skip
    p.add_argument(
        "--limit", type=int, metavar="N", help="jobs per page (1-500; default 50, 500 with --all)"
    )
    p.add_argument("--all", action="store_true", help="every matching job, page after page")
    p.add_argument("--json", action="store_true", help="the jobs as a JSON array")
    add_client_args(p)
    p.set_defaults(func=cmd_jobs)


async def cmd_jobs(args: argparse.Namespace) -> int:
    from .client import MAX_JOBS_PAGE
    from .clientfmt import jobs_table

    states = [s for group in args.state for s in group]
    labels = dict(args.label)

    async def run(client: Client) -> int:
        more = False
        if args.all:
            pages = client.iter_jobs(
                states=states, project=args.project, labels=labels,
                page_size=args.limit or MAX_JOBS_PAGE,
            )  # fmt: skip
            jobs = [job async for page in pages for job in page]
        else:
            page = await client.list_jobs(
                states=states, project=args.project, labels=labels, limit=args.limit
            )
            jobs, more = page.jobs, page.next_cursor is not None
        if args.json:
            print(msgspec.json.encode(jobs).decode())
            return EXIT_OK
        sys.stdout.write(jobs_table(jobs))
        if more:
            print("jobledger: more jobs match; --all lists every one", file=sys.stderr)
        return EXIT_OK

    return await with_client(args, run)


def configure_show_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("show", help="one job's spec, state, outcome, usage and times")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="the job as the API returns it")
    add_client_args(p)
    p.set_defaults(func=cmd_show)


async def cmd_show(args: argparse.Namespace) -> int:
    from .clientfmt import job_details

    async def run(client: Client) -> int:
        job = await client.get_job(args.job_id)
        if args.json:
            print(msgspec.json.encode(job).decode())
        else:
            sys.stdout.write(job_details(job))
        return EXIT_OK

    return await with_client(args, run)


def configure_cancel_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cancel", help="cancel a job; prints its state afterwards")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--reason", metavar="TEXT", help="why, recorded in the job's history")
    add_client_args(p)
    p.set_defaults(func=cmd_cancel)


async def cmd_cancel(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        job = await client.cancel(args.job_id, args.reason)
        print(job.state.value)
        return EXIT_OK

    return await with_client(args, run)


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
    configure_replay_parser(sub)
    configure_logs_parser(sub)
    configure_submit_parser(sub)
    configure_jobs_parser(sub)
    configure_show_parser(sub)
    configure_cancel_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    try:
        code: int = asyncio.run(args.func(args))
        return code
    except (EmbeddedPostgresError, DatabaseUnavailable, asyncpg.PostgresError) as exc:
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
