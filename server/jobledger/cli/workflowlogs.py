"""`jobledger workflows logs [-f] RUN`: every step's output, each line prefixed by its step
(`extract   | line`, like `docker compose logs`). Stdout lines go to stdout, stderr and
jobledger's own system lines to stderr, as `jobledger logs` prints them.

Without -f: the lines stored so far, step after step in the order the steps started. With
-f: the run is watched by long-poll (`GET /api/v1/workflows/{id}?after_version=&wait=`,
answered when the run changes, so a step's child job is picked up as soon as it exists,
without polling at an interval), and each step's job is followed over its log WebSocket
(which resumes after a dropped connection from its last line); lines of different steps
interleave as they arrive. It ends when the run has ended and every step's log is drained."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

import msgspec

from ..client import Client, ClientError
from ..domain.events import FailureReason
from ..domain.workflows import STEP_TERMINAL, RunState, StepState
from ..exitcodes import EXIT_ERROR, EXIT_OK
from ..wire import LinesMessage, LogLine, WorkflowRunOut, WorkflowStepOut
from .clientverbs import with_client


class StepLine(msgspec.Struct, kw_only=True):
    """One line of a step's output, as `workflows logs --json` prints it (one a line)."""

    step: str
    job_id: uuid.UUID
    #: The line's number in its job's log (the API's `after` cursor).
    seq: int
    stream: str
    ts: datetime
    text: str


_encoder = msgspec.json.Encoder()


class Printer:
    """Writes a step's lines, prefixed by the step's name padded to the widest one, or as
    JSON; flushed per batch so a follower sees lines as they come."""

    def __init__(self, run: WorkflowRunOut, as_json: bool) -> None:
        self.width = max(len(s.name) for s in run.steps)
        self.as_json = as_json

    def lines(self, step: WorkflowStepOut, job_id: uuid.UUID, lines: Sequence[LogLine]) -> None:
        if self.as_json:
            text = "".join(
                _encoder.encode(StepLine(step=step.name, job_id=job_id, seq=ln.seq,
                                         stream=ln.stream, ts=ln.ts, text=ln.text)).decode()
                + "\n" for ln in lines
            )  # fmt: skip
            _write(sys.stdout, text)
            return
        prefix = f"{step.name:<{self.width}} | "
        _write(sys.stdout, "".join(f"{prefix}{ln.text}\n" for ln in lines if ln.stream == "stdout"))
        _write(sys.stderr, "".join(f"{prefix}{ln.text}\n" for ln in lines if ln.stream != "stdout"))


def _write(to: TextIO, text: str) -> None:
    if text:
        to.write(text)
        to.flush()


def _started(run: WorkflowRunOut) -> list[WorkflowStepOut]:
    """The steps that have a child job, in the order they started (then spec order)."""
    never = datetime.max.replace(tzinfo=UTC)
    with_jobs = [(s.started_at or never, i, s) for i, s in enumerate(run.steps) if s.job_id]
    return [s for _, _, s in sorted(with_jobs, key=lambda t: t[:2])]


async def print_stored(client: Client, run: WorkflowRunOut, printer: Printer) -> None:
    """Every started step's lines stored so far, step by step in start order."""
    for step in _started(run):
        assert step.job_id is not None
        try:
            async for lines in client.read_logs(str(step.job_id)):
                printer.lines(step, step.job_id, lines)
        except ClientError as exc:
            if exc.status != 404:
                raise
            # The step's job is made just after the step is recorded as started: it has
            # printed nothing yet.


#: Pauses between looks for a started step's job that does not exist yet (its creation is
#: the transaction after the step's start), seconds: the first, and the longest.
JOB_PAUSE = (0.05, 1.0)


async def follow(client: Client, run_id: str, as_json: bool) -> WorkflowRunOut:
    """Print every step's lines live until the run has ended and every step's log is
    drained; the run at its end."""
    followed: set[uuid.UUID] = set()
    run: WorkflowRunOut | None = None
    printer: Printer | None = None

    def ended(name: str) -> bool:
        assert run is not None
        return any(s.name == name and s.state in STEP_TERMINAL for s in run.steps)

    async def one(step: WorkflowStepOut, job_id: uuid.UUID) -> None:
        assert printer is not None
        pause = JOB_PAUSE[0]
        last_look = False
        while True:
            try:
                async for message in client.follow_logs(str(job_id)):
                    if isinstance(message, LinesMessage):
                        printer.lines(step, job_id, message.lines)
                return
            except ClientError as exc:
                if exc.status != 404:
                    raise
                # No job yet: it is being made, or never will be (the step was cancelled
                # first, which the run tells). A step seen ended may also have run its
                # whole job since the last look: one more look, made after the run said
                # so, finds the job if it was ever made.
                if last_look:
                    return
                if ended(step.name):
                    last_look = True
                    continue
            await asyncio.sleep(pause)
            pause = min(JOB_PAUSE[1], pause * 2)

    try:
        async with asyncio.TaskGroup() as group:
            async for run in client.watch_workflow(run_id):
                printer = printer or Printer(run, as_json)
                for step in _started(run):
                    if step.job_id is not None and step.job_id not in followed:
                        followed.add(step.job_id)
                        group.create_task(one(step, step.job_id), name=f"logs-{step.name}")
    except* ClientError as group_error:
        raise group_error.exceptions[0] from None
    assert run is not None
    return run


async def run_outcome(client: Client, run: WorkflowRunOut) -> tuple[int, str | None]:
    """The exit status of an ended run, and what to tell the user when it did not succeed:
    0 when it succeeded, 1 when it failed or was cancelled (as `submit --wait` exits 1 for a
    cancelled job; a run has no single exit code of its own). The message names the steps
    that failed and why (a step's command's exit code, read from its job)."""
    if run.state is RunState.SUCCEEDED:
        return EXIT_OK, None
    failed = []
    for step in run.steps:
        if step.state is StepState.CANCELLED:
            failed.append(f"{step.name} was cancelled")
        elif step.state is StepState.FAILED:
            why = step.reason or "failed"
            if step.job_id is not None:
                job = await client.get_job(str(step.job_id))
                if job.failure_reason is FailureReason.EXIT_CODE and job.exit_code is not None:
                    why = f"exit code {job.exit_code}"
            failed.append(f"{step.name} failed ({why})")
    return EXIT_ERROR, f"workflow run {run.id} {run.state.value}" + (
        f": {'; '.join(failed)}" if failed else ""
    )


async def cmd_workflow_logs(args: argparse.Namespace) -> int:
    async def act(client: Client) -> int:
        if args.follow:
            run = await follow(client, args.run, args.json)
            code, message = await run_outcome(client, run)
            if message:
                print(f"jobledger: {message}", file=sys.stderr)
            return code
        run = await client.get_workflow(args.run)
        await print_stored(client, run, Printer(run, args.json))
        return EXIT_OK

    return await with_client(args, act)
