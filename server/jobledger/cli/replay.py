"""`jobledger replay VERB`: tools that read the event log straight from the database. The
replay and store modules are imported when a verb runs, not to build the parser."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TextIO

import msgspec

from ..domain.registry import KINDS
from ..domain.specs import DEFAULT_PROJECT
from ..exitcodes import EXIT_ERROR, EXIT_OK
from .options import add_database_args, iso_time

#: The projections `rebuild --projection` takes (replay.rebuild.PROJECTION, named here so
#: the parser does not import the replay tools; a test keeps the two equal).
PROJECTIONS = ("jobs",)
#: The kinds of streams `show` takes (the domain's registry: pure, cheap to import).
STREAM_KINDS = tuple(KINDS.names())

_json = msgspec.json.Encoder()


def emit(obj: object, out: TextIO | None = None) -> None:
    """One JSON document on a line of stdout."""
    (out or sys.stdout).write(_json.encode(obj).decode() + "\n")


class ProgressLine:
    """Progress on stderr: a bar redrawn in place on a terminal, else a line every few
    seconds (so logs of a long rebuild show it moving).

    The rate counts from `start()`, or else the first report (verify makes one, of nothing
    done, when it starts reading), as the tools' summaries do: not from the process's start,
    which includes the embedded database's."""

    def __init__(
        self,
        what: str,
        stream: TextIO | None = None,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.1 if self.tty else every
        self.clock = clock
        self.started: float | None = None
        self.first_done = 0
        self.last = 0.0

    def start(self, done: int = 0) -> None:
        """The work begins now, with `done` events done already."""
        self.started = self.last = self.clock()
        self.first_done = done

    def __call__(self, done: int, total: int) -> None:
        if self.started is None:
            self.start(done)
            return
        now = self.clock()
        if now - self.last < self.every and done < total:
            return
        self.last = now
        rate = (done - self.first_done) / max(now - self.started, 1e-9)
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        text = f"{self.what} [{bar:<30}] {done:,}/{total:,} events, {rate:,.0f} events/s"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done >= total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def point_in_log(text: str) -> int | datetime:
    """A log position (a positive integer) or an ISO 8601 time."""
    if text.isdigit():
        return int(text)
    return iso_time(text)


def configure_replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="tools that read the event log")
    add_database_args(p)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    rb = verbs.add_parser(
        "rebuild",
        help="rebuild projections from the log (safe while serving; resumes if interrupted)",
    )
    rb.add_argument("--projection", choices=PROJECTIONS, default=PROJECTIONS[0])
    rb.add_argument(
        "--restart", action="store_true", help="discard an interrupted rebuild's progress"
    )
    rb.add_argument("--batch", type=int, default=2000, help="streams per committed batch")
    rb.set_defaults(func=cmd_rebuild)

    vf = verbs.add_parser(
        "verify",
        help="check versions, decoding and hash chains of every stream and compare the "
        "projection with the fold of the log; exit 1 on any problem",
    )
    vf.add_argument("--json", action="store_true", help="problems as JSON lines")
    vf.add_argument("--archive", type=Path, metavar="PATH",
                    help="also check `replay archive` files (a file or directory) against "
                    "their checkpoints: digest, chains, states")  # fmt: skip
    vf.set_defaults(func=cmd_verify)

    sh = verbs.add_parser(
        "show", help="one stream of any kind as it stood at a point in the log (time travel)"
    )
    sh.add_argument("kind", choices=STREAM_KINDS, metavar="KIND", help=", ".join(STREAM_KINDS))
    sh.add_argument(
        "stream_id",
        metavar="ID",
        help="the stream's id; for a named kind also PROJECT/NAME (or NAME in the default project)",
    )
    _add_at(sh)
    sh.set_defaults(func=cmd_show)
    jb = verbs.add_parser("job", help="one job as it stood at a point in the log (show job)")
    jb.add_argument("stream_id", type=uuid.UUID, metavar="JOB")
    _add_at(jb)
    jb.set_defaults(func=cmd_show, kind="job")

    ex = verbs.add_parser("export", help="write the log as NDJSON, one event per line")
    ex.add_argument("--project", help="only this project's jobs")
    ex.add_argument("--since", type=iso_time, help="events recorded at or after (ISO 8601)")
    ex.add_argument("--until", type=iso_time, help="events recorded before (ISO 8601)")
    ex.add_argument("--output", "-o", type=argparse.FileType("wb"), default="-",
                    help="file to write (default: stdout)")  # fmt: skip
    ex.set_defaults(func=cmd_export)

    im = verbs.add_parser(
        "import", help="load an export into a database with an empty log, then rebuild"
    )
    im.add_argument("input", nargs="+", metavar="FILE",
                    help="NDJSON export, or - for stdin; several, or a directory of "
                    "`replay archive` files, are imported as one")  # fmt: skip
    im.set_defaults(func=cmd_import)

    ar = verbs.add_parser(
        "archive",
        help="move the event streams of jobs finished before a time to NDJSON files, keeping "
        "a checkpoint (and the jobs rows) in the database",
    )
    ar.add_argument("--before", type=iso_time, required=True, metavar="TIME",
                    help="archive jobs that finished before this time (ISO 8601)")  # fmt: skip
    ar.add_argument("--to", type=Path, required=True, metavar="DIR",
                    help="directory to write the archive files to (made if missing)")  # fmt: skip
    ar.add_argument("--dry-run", action="store_true", help="count, write and remove nothing")
    ar.add_argument("--batch", type=int, default=1000, help="streams per file and transaction")
    ar.set_defaults(func=cmd_archive)

    tl = verbs.add_parser("tail", help="follow the log live, one event per line (NDJSON)")
    tl.add_argument("--from-start", action="store_true", help="print the whole log first")
    tl.set_defaults(func=cmd_tail)


async def cmd_rebuild(args: argparse.Namespace) -> int:
    from ..replay.rebuild import rebuild
    from .startup import service_for

    async with service_for(args, min_size=1, max_size=2) as (service, _):
        bar = ProgressLine("rebuild")
        bar.start()
        report = await rebuild(service.pool, batch=args.batch, restart=args.restart, progress=bar)
    emit(report)
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    from ..replay.verify import Verifier
    from .startup import service_for

    async with service_for(args, min_size=1, max_size=2) as (service, _):
        verifier = Verifier(service.pool, progress=ProgressLine("verify"), archive=args.archive)
        async for problem in verifier.problems():
            if args.json:
                emit(problem)
            else:
                where = (
                    f" v{problem.version} (position {problem.position})" if problem.version else ""
                )
                print(
                    f"{problem.kind}: {problem.stream_type} {problem.stream_id}{where}: "
                    f"{problem.detail}"
                )
    report = verifier.report
    if args.json:
        emit(report)
    else:
        print(
            f"verified {report.events:,} events in {report.streams:,} streams "
            f"({report.events_per_second:,} events/s): {report.problems} problem(s)"
        )
    return EXIT_ERROR if report.problems else EXIT_OK


def stream_of(kind: str, text: str) -> uuid.UUID:
    """A stream id as the user wrote it: a UUID, or for a named kind PROJECT/NAME or NAME."""
    try:
        return KINDS.get(kind).stream_of(text, DEFAULT_PROJECT)
    except ValueError as exc:
        raise SystemExit(f"jobledger replay show: {exc}") from None


def _add_at(p: argparse.ArgumentParser) -> None:
    p.add_argument("--at", type=point_in_log, metavar="POSITION|TIME",
                   help="a log position, or an ISO 8601 time (default: now)")  # fmt: skip


async def cmd_show(args: argparse.Namespace) -> int:
    from ..replay.archive import stream_at
    from .startup import service_for

    position = args.at if isinstance(args.at, int) else None
    at = args.at if isinstance(args.at, datetime) else None
    stream_id = stream_of(args.kind, str(args.stream_id))
    async with service_for(args, min_size=1, max_size=2) as (service, _):
        emit(await stream_at(service.pool, args.kind, stream_id, position=position, at=at))
    return EXIT_OK


async def cmd_export(args: argparse.Namespace) -> int:
    from ..replay.archive import export
    from .startup import service_for

    lines = 0
    with args.output as out:
        async with service_for(args, min_size=1, max_size=2) as (service, _):
            async for line in export(
                service.pool, project=args.project, since=args.since, until=args.until
            ):
                out.write(line)
                lines += 1
    print(f"exported {lines:,} events", file=sys.stderr)
    return EXIT_OK


async def cmd_import(args: argparse.Namespace) -> int:
    from ..replay.archive import import_lines
    from ..replay.rebuild import rebuild
    from .startup import service_for

    with contextlib.ExitStack() as files:
        source = itertools.chain.from_iterable(
            files.enter_context(f) for f in _import_sources(args.input)
        )
        async with service_for(args, min_size=1, max_size=2) as (service, _):
            count = await import_lines(service.pool, source)
            print(f"imported {count:,} events; rebuilding projections", file=sys.stderr)
            bar = ProgressLine("rebuild")
            bar.start()
            report = await rebuild(service.pool, restart=True, progress=bar)
    emit(report)
    return EXIT_OK


async def cmd_tail(args: argparse.Namespace) -> int:
    from ..replay.archive import tail, tail_start
    from .startup import service_for, stop_on_signals

    stop = stop_on_signals()
    async with service_for(args, min_size=2, max_size=3) as (service, _):
        after = await tail_start(service.pool, from_start=args.from_start)
        print("following the event log; Ctrl-C stops", file=sys.stderr, flush=True)

        async def follow() -> None:
            async for line in tail(service.pool, after):
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()

        task = asyncio.create_task(follow())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        for t in (task, waiter):
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return EXIT_OK


def _import_sources(names: list[str]) -> Iterator[BinaryIO]:
    """The files `import` reads, in order: - is stdin, a directory its archive files."""
    from ..replay.archiving import archive_files

    for name in names:
        if name == "-":
            yield sys.stdin.buffer
            continue
        for path in archive_files(Path(name)):
            yield open(path, "rb")  # noqa: SIM115 - closed by the caller's ExitStack


async def cmd_archive(args: argparse.Namespace) -> int:
    from ..replay.archiving import archive_before
    from .startup import service_for

    async with service_for(args, min_size=1, max_size=2) as (service, _):

        def progress(streams: int, events: int) -> None:
            print(f"archive: {streams:,} streams, {events:,} events", file=sys.stderr)

        report = await archive_before(
            service.pool, args.before, args.to, batch=args.batch, dry_run=args.dry_run,
            progress=progress,
        )  # fmt: skip
    emit(report)
    return EXIT_OK
