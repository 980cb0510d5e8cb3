"""Runs attempts as local processes, for machines without Docker.

`spec.image` is ignored and `resources.cpu` / `resources.memory_mb` are NOT enforced: the
command runs with the worker's own rights and limits.

A command must never run twice because its worker died. So an attempt's processes die with
their worker: the command's first process gets PR_SET_PDEATHSIG (SIGKILL when the worker's
event-loop thread, which forked it, ends), and a warden process (`procwatch.py`) kills
whatever that process started once the worker is gone. And each attempt leaves a record
(pid, start time, boot, and its exit code as soon as it is known) in the state directory
until its outcome is in the log: a restarted worker `find`s the records of its previous
life, kills and waits out any survivor, and records the real exit code of a command that
ended while nobody could record it. Survivors are killed, not adopted: a process whose
parent died cannot be waited for (its exit code would be unknown) and its pipes went
with the worker (its output would be lost), so following it would only guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import msgspec
import structlog
from structlog.typing import FilteringBoundLogger

from ..domain.events import FailureReason, Usage
from ..domain.specs import JobSpec
from ..domain.workflows import INPUTS_ENV, MAX_OUTPUT_BYTES, OUTPUT_ENV
from ..store.logs import Stream
from . import procwatch
from .executor import (
    Attempt,
    BaseExecutor,
    Found,
    FoundOutput,
    JobIO,
    Outcome,
    RunRequest,
    StopReason,
    checked_output,
    ended,
    start_error,
)
from .output import LogSink

log = structlog.get_logger(__name__)

#: How long `abandon` (which cannot await) waits for the processes it killed to be gone.
_ABANDON_WAIT_SECONDS = 1.0
#: How often waiting for killed processes says it is still waiting.
_KILL_WARN_SECONDS = 10.0


def default_state_dir() -> Path:
    """Where attempt records live unless JOBLEDGER_STATE_DIR says."""
    if explicit := os.environ.get("JOBLEDGER_STATE_DIR"):
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/jobledger/state")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jobledger"


class _Record(msgspec.Struct, kw_only=True):
    """What a next life of the worker needs to know of one attempt."""

    job_id: uuid.UUID
    attempt: int
    #: The command's first process: the leader of the attempt's session.
    pid: int
    start_ticks: int
    boot_id: str
    #: The worker process that started it (pid, start ticks): a live owner is not a past life.
    owner_pid: int
    owner_start_ticks: int
    exit_code: int | None = None
    wall_seconds: float = 0.0


def _die_with_parent_fn() -> object:
    """A preexec_fn that makes the child get SIGKILL when the thread that forks it ends;
    None where prctl is missing (not Linux). libc is looked up here, in the parent: the
    child, forked from a threaded process, only makes the call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def die_with_parent() -> None:
        if prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the worker died before the call: die now
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent


class _Warden:
    """The worker's end of the warden process (see `procwatch`)."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.proc: subprocess.Popen[bytes] | None = None

    def _tell(self, line: str) -> None:
        if self.proc is None or self.proc.poll() is not None:
            # -I: no environment, no user site, no script directory: stdlib only, fast.
            self.proc = subprocess.Popen(
                [sys.executable, "-I", procwatch.__file__, "--worker-id", self.worker_id],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:  # it was killed: the death signal still covers the leader
            log.warning("the process warden is gone", worker_id=self.worker_id)
            self.proc = None

    def watch(self, pid: int, started: int) -> None:
        self._tell(f"+ {pid} {started}\n")

    def unwatch(self, pid: int, started: int) -> None:
        if self.proc is not None:
            self._tell(f"- {pid} {started}\n")

    async def close(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        await asyncio.to_thread(proc.wait)


class ProcessExecutor(BaseExecutor):
    """Runs each attempt as a subprocess in a session of its own, so that stopping it
    reaches everything it started; see the module docstring for what a dying worker leaves
    and how its next life deals with it."""

    name = "process"

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir if state_dir is not None else default_state_dir()
        self._wardens: dict[str, _Warden] = {}
        self._boot_id = procwatch.boot_id()
        self._owner = (os.getpid(), procwatch.start_ticks(os.getpid()) or 0)
        self._die_with_parent = _die_with_parent_fn()

    def _dir(self, worker_id: str) -> Path:
        return self.state_dir / "processes" / urllib.parse.quote(worker_id, safe="")

    def _path(self, worker_id: str, job_id: uuid.UUID, attempt: int) -> Path:
        return self._dir(worker_id) / f"{job_id}.{attempt}.json"

    def _io_dir(self, worker_id: str, job_id: uuid.UUID, attempt: int) -> Path:
        return _io_dir_of(self._path(worker_id, job_id, attempt))

    def _warden(self, worker_id: str) -> _Warden:
        if (w := self._wardens.get(worker_id)) is None:
            w = self._wardens[worker_id] = _Warden(worker_id)
        return w

    async def start(self, req: RunRequest, io: JobIO | None) -> Attempt | Outcome:
        """Start the command; see `Executor.run`.

        Exit codes follow the shell: a process killed by signal N reports 128 + N."""
        spec = req.spec
        bound = log.bind(job_id=str(req.job_id), attempt=req.attempt)
        began = time.monotonic()
        if not spec.command:
            return start_error("the process executor needs a command (the image is ignored)")
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/")}
        env.update(req.environment())
        # The attempt's inputs and output are files of its own beside its record (the
        # container's fixed paths have no meaning here): the variables name them.
        io_dir = self._io_dir(req.worker_id, req.job_id, req.attempt)
        io_dir.mkdir(parents=True, exist_ok=True)
        (io_dir / _OUTPUT).unlink(missing_ok=True)  # an earlier try's is not this one's
        env[OUTPUT_ENV] = str(io_dir / _OUTPUT)
        if req.inputs:
            (io_dir / _INPUTS).write_bytes(msgspec.json.encode(req.inputs))
            env[INPUTS_ENV] = str(io_dir / _INPUTS)
        sink = io.logs if io is not None else None
        # Without a sink the output goes nowhere: pipes nobody reads would block the command.
        out = asyncio.subprocess.PIPE if sink is not None else asyncio.subprocess.DEVNULL
        record_dir = self._dir(req.worker_id)
        record_dir.mkdir(parents=True, exist_ok=True)
        try:
            # Forked by the event loop's thread, which lives as long as the worker does.
            proc = await asyncio.create_subprocess_exec(
                *spec.command,
                env=env,
                cwd=spec.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=self._die_with_parent,  # type: ignore[arg-type]
            )
        except OSError as e:
            # filename tells whether the executable or the workdir is the problem.
            what = e.filename if e.filename is not None else spec.command[0]
            bound.warning("process start failed", error=str(e))
            return start_error(f"cannot start {spec.command[0]!r}: {e.strerror}: {what}")
        # A zombie still has its stat: the start time is there until we reap it.
        started = procwatch.start_ticks(proc.pid) or 0
        record = _Record(
            job_id=req.job_id,
            attempt=req.attempt,
            pid=proc.pid,
            start_ticks=started,
            boot_id=self._boot_id,
            owner_pid=self._owner[0],
            owner_start_ticks=self._owner[1],
        )
        path = self._path(req.worker_id, req.job_id, req.attempt)
        _write(path, record)
        self._warden(req.worker_id).watch(proc.pid, started)
        bound.info("process started", pid=proc.pid)
        return _Process(
            proc, spec, bound.bind(pid=proc.pid), began, sink, record, path,
            self._warden(req.worker_id), io_dir,
        )  # fmt: skip

    async def find(self, worker_id: str) -> list[Found]:
        """The attempts a previous life of this worker started and whose outcome it did not
        record; `running` if any of their processes is still there."""
        found = []
        # Files of an attempt whose record was never written (the worker died starting it)
        # belong to nobody: a record is written before the command runs.
        for io_dir in self._dir(worker_id).glob("*.io"):
            if not io_dir.with_suffix(".json").exists():
                shutil.rmtree(io_dir, ignore_errors=True)
        for path in sorted(self._dir(worker_id).glob("*.json")):
            record = _read(path)
            if record is None:
                continue
            if record.boot_id == self._boot_id and procwatch.alive(
                record.owner_pid, record.owner_start_ticks
            ):
                continue  # a live worker's, maybe this one's: not left behind
            running = record.boot_id == self._boot_id and bool(
                procwatch.members(record.pid, record.start_ticks)
            )
            found.append(
                Found(job_id=record.job_id, attempt=record.attempt, ref=str(path), running=running)
            )
        return found

    async def adopt(
        self, found: Found, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None
    ) -> Outcome:
        """Settle an attempt a previous life started: kill and wait out what is left of it,
        then report its exit code if that life learned it, else that it died with the
        worker (so a retry starts only once nothing of it runs)."""
        bound = log.bind(job_id=str(req.job_id), attempt=req.attempt)
        record = _read(Path(found.ref))
        if record is None:
            return Outcome(
                failure=FailureReason.WORKER_LOST,
                message="the worker restarted and the record of its process was gone",
            )
        killed = await self._kill(record, bound)
        if record.exit_code is not None:
            bound.info("process ended while its worker was away", exit_code=record.exit_code)
            usage = Usage(wall_seconds=record.wall_seconds)
            outcome = ended(None, req.spec, record.exit_code, usage)
            output = checked_output(_read_output(_io_dir_of(Path(found.ref))), io, bound)
            return msgspec.structs.replace(outcome, output=output)
        what = "killed it" if killed else "found it gone"
        bound.warning("process lost with its worker", pid=record.pid, killed=killed)
        return Outcome(
            failure=FailureReason.WORKER_LOST,
            message=f"the worker died while the command ran (pid {record.pid}); "
            f"its next life {what}",
        )

    async def discard(self, found: Found) -> None:
        """Kill and wait out what is left of an attempt no live job owns; forget it."""
        path = Path(found.ref)
        if (record := _read(path)) is not None:
            await self._kill(record, log.bind(job_id=str(found.job_id)))
        _forget(path)

    async def settled(self, req: RunRequest) -> None:
        """The attempt's outcome is in the log: forget its record and its files."""
        _forget(self._path(req.worker_id, req.job_id, req.attempt))

    async def _kill(self, record: _Record, bound: FilteringBoundLogger) -> bool:
        """SIGKILL the attempt's processes until none is left; whether there were any."""
        if record.boot_id != self._boot_id:
            return False  # the machine restarted since: nothing of it runs
        return await _kill_until_gone(record, bound)

    async def close(self) -> None:
        """Stop the wardens (they kill nothing: every attempt has been let go of)."""
        for warden in self._wardens.values():
            await warden.close()
        self._wardens.clear()


class _Process(Attempt):
    """A started process group."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        spec: JobSpec,
        bound: FilteringBoundLogger,
        began: float,
        sink: LogSink | None,
        record: _Record,
        path: Path,
        warden: _Warden,
        io_dir: Path,
    ) -> None:
        super().__init__(spec, bound, began)
        self.io_dir = io_dir
        self.proc = proc
        self.record = record
        self.path = path
        self.warden = warden
        if sink is not None:
            assert proc.stdout is not None and proc.stderr is not None
            self.pumps = [
                asyncio.create_task(_pump(proc.stdout, "stdout", sink)),
                asyncio.create_task(_pump(proc.stderr, "stderr", sink)),
            ]

    async def wait(self) -> int:
        returncode = await self.proc.wait()
        exit_code = returncode if returncode >= 0 else 128 - returncode
        if self.record.exit_code is None:
            # Before anything else: a worker that dies from here on must not run it again.
            self.record.exit_code = exit_code
            self.record.wall_seconds = time.monotonic() - self.began
            _write(self.path, self.record)
        return exit_code

    async def stop(self, grace: int) -> None:
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            _signal_group(self.proc.pid, signal.SIGKILL)

    async def exited(self) -> None:
        # Whatever the command left behind in its session dies with it, as in a container;
        # then the pipes close and the pumps end with all the output read.
        await _kill_until_gone(self.record, self.log)
        self.warden.unwatch(self.record.pid, self.record.start_ticks)

    def abandon(self) -> None:
        # The worker is going away: kill the attempt rather than leave it unwatched, and
        # forget it once it is gone (its job is failed as lost, by us or by a reaper). One
        # that ended before keeps its record: its next life records the real exit code.
        deadline = time.monotonic() + _ABANDON_WAIT_SECONDS
        while procwatch.kill(self.record.pid, self.record.start_ticks):
            if time.monotonic() > deadline:
                return  # still there: the record stays, for the next life to wait it out
            time.sleep(0.01)
        self.warden.unwatch(self.record.pid, self.record.start_ticks)
        if self.record.exit_code is None:
            _forget(self.path)

    async def read_output(self) -> FoundOutput | None:
        return _read_output(self.io_dir)

    async def outcome(self, stopped_for: StopReason | None, exit_code: int | None) -> Outcome:
        assert exit_code is not None  # a process always has one
        usage = Usage(wall_seconds=time.monotonic() - self.began)
        self.log.info("process ended", exit_code=exit_code, stopped_for=stopped_for)
        return ended(stopped_for, self.spec, exit_code, usage)


async def _kill_until_gone(record: _Record, bound: FilteringBoundLogger) -> bool:
    """SIGKILL the attempt's processes until none is left; whether there were any. Nothing
    tells us when a process that is not our child ends: /proc is polled."""
    killed = False
    waited_since = time.monotonic()
    while procwatch.kill(record.pid, record.start_ticks):
        killed = True
        await asyncio.sleep(0.02)
        if time.monotonic() - waited_since > _KILL_WARN_SECONDS:
            # Nothing may start in its place while it runs: keep waiting, loudly.
            bound.warning("killed process still there", pid=record.pid)
            waited_since = time.monotonic()
    return killed


# Records are a few hundred bytes on a local disk: written and read in the loop's thread.
# So are inputs and outputs (at most MAX_OUTPUT_BYTES are read).

_INPUTS = "inputs.json"
_OUTPUT = "output.json"


def _io_dir_of(record_path: Path) -> Path:
    """The directory of an attempt's inputs and output, beside its record."""
    return record_path.with_suffix(".io")


def _read_output(io_dir: Path) -> FoundOutput | None:
    """The attempt's output file (None: it wrote none); one too large is not read."""
    try:
        # Never through a link (the command's rights are not the worker's), never blocking
        # on a FIFO: a regular file or nothing.
        fd = os.open(io_dir / _OUTPUT, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                log.warning("output path is not a file", path=str(io_dir / _OUTPUT))
                return None
            if st.st_size > MAX_OUTPUT_BYTES:
                return FoundOutput(st.st_size, None)
            data = f.read(MAX_OUTPUT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("reading the output failed", path=str(io_dir / _OUTPUT), error=str(e))
        return None
    return FoundOutput(len(data), data)


def _forget(path: Path) -> None:
    """Forget an attempt: its record and its files (inputs, output)."""
    path.unlink(missing_ok=True)
    shutil.rmtree(_io_dir_of(path), ignore_errors=True)


def _write(path: Path, record: _Record) -> None:
    """Replace the record at once (a reader sees the old or the new one, never half).
    No fsync: the page cache survives the worker; a machine crash changes the boot id."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(record))
    os.replace(tmp, path)


def _read(path: Path) -> _Record | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Record)
    except (OSError, msgspec.DecodeError):
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, sig)


async def _pump(pipe: asyncio.StreamReader, stream: Stream, sink: LogSink) -> None:
    """Copy a pipe into the sink until it closes."""
    while chunk := await pipe.read(64 * 1024):
        await sink.write(stream, chunk)
