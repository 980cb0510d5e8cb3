"""Runs attempts as local processes, for machines without Docker.

`spec.image` is ignored and `resources.cpu` / `resources.memory_mb` are NOT enforced: the
command runs with the worker's own rights and limits. Output goes nowhere for now."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import structlog

from ..domain.events import FailureReason, Usage
from ..store.logs import Stream
from .executor import Found, JobIO, Outcome, RunRequest, ended, race_end
from .output import LogSink

log = structlog.get_logger(__name__)


class ProcessExecutor:
    """Runs each attempt as a subprocess in a session of its own, so that stopping it
    reaches everything it started."""

    name = "process"

    async def run(self, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
        """Start the command and follow it to its end; see `Executor.run`.

        Exit codes follow the shell: a process killed by signal N reports 128 + N."""
        spec = req.spec
        bound = log.bind(job_id=str(req.job_id), attempt=req.attempt)
        began = time.monotonic()
        if cancel.is_set():
            return Outcome(cancelled=True)
        if not spec.command:
            return _start_error("the process executor needs a command (the image is ignored)")
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
            return _start_error(f"cannot start {spec.command[0]!r}: {e.strerror}: {what}")
        bound.info("process started", pid=proc.pid)
        pumps = []
        if sink is not None:
            assert proc.stdout is not None and proc.stderr is not None
            pumps = [
                asyncio.create_task(_pump(proc.stdout, "stdout", sink)),
                asyncio.create_task(_pump(proc.stderr, "stderr", sink)),
            ]

        exited = asyncio.ensure_future(proc.wait())
        try:
            stopped_for = await race_end(exited, cancel, spec.timeout_seconds)
            if stopped_for is not None:
                bound.info("stopping process", reason=stopped_for, pid=proc.pid)
                _signal_group(proc.pid, signal.SIGTERM)
                done, _ = await asyncio.wait({exited}, timeout=spec.stop_grace_seconds)
                if not done:
                    _signal_group(proc.pid, signal.SIGKILL)
            returncode = await exited
            # Whatever the command left behind in its group dies with it, as in a container;
            # then the pipes close and the pumps end with all the output read.
            _signal_group(proc.pid, signal.SIGKILL)
            await asyncio.gather(*pumps)
        except asyncio.CancelledError:
            # Unlike a container, a process cannot be adopted by a restarted worker: do not
            # leave it running unwatched.
            _signal_group(proc.pid, signal.SIGKILL)
            exited.cancel()
            for pump in pumps:
                pump.cancel()
            raise

        exit_code = returncode if returncode >= 0 else 128 - returncode
        usage = Usage(wall_seconds=time.monotonic() - began)
        bound.info("process ended", exit_code=exit_code, stopped_for=stopped_for)
        return ended(stopped_for, spec, exit_code, usage)

    async def find(self, worker_id: str) -> list[Found]:
        """Nothing: processes die with their worker (see `run`), there is nothing to adopt."""
        return []

    async def adopt(
        self, found: Found, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None
    ) -> Outcome:
        """Unreachable: `find` never returns anything."""
        raise NotImplementedError("the process executor has nothing to adopt")

    async def discard(self, found: Found) -> None:
        """Nothing to discard."""

    async def close(self) -> None:
        """No connections to release."""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, sig)


def _start_error(message: str) -> Outcome:
    return Outcome(failure=FailureReason.START_ERROR, message=message)


async def _pump(pipe: asyncio.StreamReader, stream: Stream, sink: LogSink) -> None:
    """Copy a pipe into the sink until it closes."""
    while chunk := await pipe.read(64 * 1024):
        await sink.write(stream, chunk)
