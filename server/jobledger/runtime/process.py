"""Runs attempts as local processes, for machines without Docker.

`spec.image` is ignored and `resources.cpu` / `resources.memory_mb` are NOT enforced: the
command runs with the worker's own rights and limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import structlog
from structlog.typing import FilteringBoundLogger

from ..domain.events import Usage
from ..domain.specs import JobSpec
from ..store.logs import Stream
from .executor import (
    Attempt,
    BaseExecutor,
    JobIO,
    Outcome,
    RunRequest,
    StopReason,
    ended,
    start_error,
)
from .output import LogSink

log = structlog.get_logger(__name__)


class ProcessExecutor(BaseExecutor):
    """Runs each attempt as a subprocess in a session of its own, so that stopping it
    reaches everything it started. Nothing outlives its worker: there is nothing to find,
    adopt or discard."""

    name = "process"

    async def start(self, req: RunRequest, io: JobIO | None) -> Attempt | Outcome:
        """Start the command; see `Executor.run`.

        Exit codes follow the shell: a process killed by signal N reports 128 + N."""
        spec = req.spec
        bound = log.bind(job_id=str(req.job_id), attempt=req.attempt)
        began = time.monotonic()
        if not spec.command:
            return start_error("the process executor needs a command (the image is ignored)")
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/")}
        env.update(spec.env)
        sink = io.logs if io is not None else None
        # Without a sink the output goes nowhere: pipes nobody reads would block the command.
        out = asyncio.subprocess.PIPE if sink is not None else asyncio.subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.command,
                env=env,
                cwd=spec.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        except OSError as e:
            # filename tells whether the executable or the workdir is the problem.
            what = e.filename if e.filename is not None else spec.command[0]
            bound.warning("process start failed", error=str(e))
            return start_error(f"cannot start {spec.command[0]!r}: {e.strerror}: {what}")
        bound.info("process started", pid=proc.pid)
        return _Process(proc, spec, bound.bind(pid=proc.pid), began, sink)


class _Process(Attempt):
    """A started process group."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        spec: JobSpec,
        bound: FilteringBoundLogger,
        began: float,
        sink: LogSink | None,
    ) -> None:
        super().__init__(spec, bound, began)
        self.proc = proc
        if sink is not None:
            assert proc.stdout is not None and proc.stderr is not None
            self.pumps = [
                asyncio.create_task(_pump(proc.stdout, "stdout", sink)),
                asyncio.create_task(_pump(proc.stderr, "stderr", sink)),
            ]

    async def wait(self) -> int:
        returncode = await self.proc.wait()
        return returncode if returncode >= 0 else 128 - returncode

    async def stop(self, grace: int) -> None:
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            _signal_group(self.proc.pid, signal.SIGKILL)

    async def exited(self) -> None:
        # Whatever the command left behind in its group dies with it, as in a container;
        # then the pipes close and the pumps end with all the output read.
        _signal_group(self.proc.pid, signal.SIGKILL)

    def abandon(self) -> None:
        # Unlike a container, a process cannot be adopted by a restarted worker: do not
        # leave it running unwatched.
        _signal_group(self.proc.pid, signal.SIGKILL)

    async def outcome(self, stopped_for: StopReason | None, exit_code: int | None) -> Outcome:
        assert exit_code is not None  # a process always has one
        usage = Usage(wall_seconds=time.monotonic() - self.began)
        self.log.info("process ended", exit_code=exit_code, stopped_for=stopped_for)
        return ended(stopped_for, self.spec, exit_code, usage)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, sig)


async def _pump(pipe: asyncio.StreamReader, stream: Stream, sink: LogSink) -> None:
    """Copy a pipe into the sink until it closes."""
    while chunk := await pipe.read(64 * 1024):
        await sink.write(stream, chunk)
