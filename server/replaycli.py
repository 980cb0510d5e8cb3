"""`jobledger replay VERB`: tools that read the event log straight from the database."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

import msgspec

from .exitcodes import EXIT_ERROR, EXIT_OK
from .opendb import add_database_args, service_for
from .replay.rebuild import PROJECTION, rebuild
from .replay.verify import Verifier

_json = msgspec.json.Encoder()


def emit(obj: object, out: TextIO | None = None) -> None:
    """One JSON document on a line of stdout."""
    (out or sys.stdout).write(_json.encode(obj).decode() + "\n")


class ProgressLine:
    """Progress on stderr: a bar redrawn in place on a terminal, else a line every few
    seconds (so logs of a long rebuild show it moving)."""

    def __init__(self, what: str, stream: TextIO | None = None, every: float = 5.0) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.1 if self.tty else every
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every and done < total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        text = f"{self.what} [{bar:<30}] {done:,}/{total:,} events, {rate:,.0f} events/s"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done >= total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def configure_replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="tools that read the event log")
    add_database_args(p)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    rb = verbs.add_parser(
        "rebuild",
        help="rebuild projections from the log (safe while serving; resumes if interrupted)",
    )
    rb.add_argument("--projection", choices=[PROJECTION], default=PROJECTION)
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
    vf.set_defaults(func=cmd_verify)


async def cmd_rebuild(args: argparse.Namespace) -> int:
    bar = ProgressLine("rebuild")
    async with service_for(args, min_size=1, max_size=2) as (service, _):
        report = await rebuild(
            service.pool,
            batch=args.batch,
            restart=args.restart,
            progress=bar,
        )
    emit(report)
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace) -> int:
    bar = ProgressLine("verify")
    async with service_for(args, min_size=1, max_size=2) as (service, _):
        verifier = Verifier(service.pool, progress=bar)
        async for problem in verifier.problems():
            if args.json:
                emit(problem)
            else:
                where = (
                    f" v{problem.version} (position {problem.position})" if problem.version else ""
                )
                print(f"{problem.kind}: job {problem.job_id}{where}: {problem.detail}")
    report = verifier.report
    if args.json:
        emit(report)
    else:
        print(
            f"verified {report.events:,} events in {report.streams:,} streams "
            f"({report.events_per_second:,} events/s): {report.problems} problem(s)"
        )
    return EXIT_ERROR if report.problems else EXIT_OK
