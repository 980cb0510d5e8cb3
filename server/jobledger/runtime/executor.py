"""What the scheduler asks of an executor (Docker, local process, ...): run one attempt of a
job to its end, honouring timeout and cancel, and find what a previous life left running."""

from __future__ import annotations

import abc
import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import msgspec
from structlog.typing import FilteringBoundLogger

from ..domain.events import FailureReason, Usage
from ..domain.jobs import Command, ConfirmCancelled, Fail, Finish, unstorable_path
from ..domain.specs import JobSpec
from ..domain.workflows import MAX_OUTPUT_BYTES
from .output import LogSink
from .usage import UsageRecorder


class JobIO:
    """Where an attempt's output and CPU/memory samples go; a part left None is discarded.
    The scheduler owns both: it starts the sink before the run and closes it after.
    `record`, if given, is called with the outcome before what is left of the attempt (its
    container) is removed: a worker that dies in between leaves an outcome recorded, not an
    exit code lost."""

    def __init__(
        self,
        logs: LogSink | None = None,
        usage: UsageRecorder | None = None,
        record: Callable[[Outcome], Awaitable[None]] | None = None,
    ) -> None:
        self.logs = logs
        self.usage = usage
        self.record = record


class EngineUnavailable(Exception):
    """The engine the executor drives (e.g. the Docker daemon) does not answer: not the job's
    fault, so it is not charged to the job. Try again once `available` says it answers."""


class RunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of one job, as handed to an executor."""

    job_id: uuid.UUID
    attempt: int
    worker_id: str
    spec: JobSpec
    #: The environment the container gets: the spec's, with each secret reference resolved
    #: to its value (None: the spec's plain values). Never printed (see `__repr__`).
    env: dict[str, str] | None = None
    #: The job's inputs: copied where the attempt can read them before it starts, at the
    #: path the `INPUTS_ENV` variable names (empty: nothing is copied, no variable set).
    inputs: dict[str, Any] = {}
    #: Whether the attempt is expected to write an output (a workflow step's): its output
    #: directory is made before it starts even without inputs.
    writes_output: bool = False

    def environment(self) -> dict[str, str]:
        """The variables to start the attempt with."""
        if self.env is not None:
            return self.env
        return {k: v for k, v in self.spec.env.items() if isinstance(v, str)}

    def __repr__(self) -> str:
        # The environment may hold secret values: a repr (in a log, a traceback) names
        # the variables only.
        return (
            f"RunRequest(job_id={self.job_id}, attempt={self.attempt}, "
            f"worker_id={self.worker_id!r}, env={sorted(self.environment())})"
        )


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How an attempt ended.

    - `cancelled`: the executor stopped it because `cancel` was set.
    - `failure`: it could not run or was stopped for a reason of ours (start_error, timeout,
      worker_lost), with a human `message`.
    - otherwise the command exited by itself with `exit_code` (`oom_killed` if the kernel
      killed it for memory).

    `output`: what the attempt wrote at its output path, as it is recorded: secrets masked,
    valid JSON the database can store, at most `MAX_OUTPUT_BYTES` (see `checked_output`).
    """

    exit_code: int | None = None
    oom_killed: bool = False
    cancelled: bool = False
    failure: FailureReason | None = None
    message: str | None = None
    usage: Usage = Usage()
    output: bytes | None = None

    def command(self, attempt: int) -> Command:
        """The domain command that records this outcome of `attempt` (with its output
        parsed, and the SHA-256 of its bytes as stored)."""
        if self.cancelled:
            return ConfirmCancelled(attempt=attempt, exit_code=self.exit_code, usage=self.usage)
        output: Any = None
        sha256 = None
        if self.output is not None:
            output = msgspec.json.decode(self.output)
            sha256 = hashlib.sha256(self.output).hexdigest()
        if self.failure is not None:
            return Fail(
                attempt=attempt,
                reason=self.failure,
                message=self.message,
                exit_code=self.exit_code,
                usage=self.usage,
                output=output,
                output_sha256=sha256,
            )
        assert self.exit_code is not None
        return Finish(
            attempt=attempt,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            usage=self.usage,
            output=output,
            output_sha256=sha256,
        )


class FoundOutput(msgspec.Struct, frozen=True):
    """What an attempt left at its output path: its size, and its bytes unless it is larger
    than `MAX_OUTPUT_BYTES` (then they are not read at all)."""

    size: int
    data: bytes | None


def checked_output(
    found: FoundOutput | None, io: JobIO | None, bound: FilteringBoundLogger
) -> bytes | None:
    """The output to record, from what the attempt left (None: it wrote none): at most
    `MAX_OUTPUT_BYTES`, UTF-8, masked as its log lines are (`io.logs.masker`, the job's
    secret values), then valid JSON the database can store. Anything else is left out, and a
    system line of the job's log says why: the job ends as it would have without it."""
    if found is None:
        return None
    why: str
    if found.data is None or found.size > MAX_OUTPUT_BYTES:
        why = f"{found.size} bytes, more than the {MAX_OUTPUT_BYTES} allowed"
    else:
        try:
            text = found.data.decode()
        except UnicodeDecodeError:
            why = "not UTF-8"
        else:
            masker = io.logs.masker if io is not None and io.logs is not None else None
            data = masker(text).encode() if masker is not None else found.data
            try:
                value = msgspec.json.decode(data)
            except msgspec.DecodeError as exc:
                why = f"not valid JSON ({exc})"
            else:
                if (path := unstorable_path(value, "$")) is None:
                    return data
                why = f"text at {path} holds NUL (\\u0000) or a lone surrogate"
    bound.warning("output left out", why=why)
    if io is not None and io.logs is not None:
        io.logs.system(f"[jobledger: the output at its path was left out: {why}]")
    return None


#: Why an executor stopped an attempt itself.
StopReason = Literal["cancel", "timeout"]

#: How long an attempt's output may lag behind its exit before we stop waiting for it.
OUTPUT_DRAIN_SECONDS = 30.0
_MESSAGE_MAX = 1000


async def race_end(
    exited: asyncio.Future[Any], cancel: asyncio.Event, limit: float | None
) -> StopReason | None:
    """Wait for the attempt's end, a cancel, or `limit` seconds, whichever comes first;
    return why the caller must stop it (None: it ended by itself)."""
    cancelled = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({exited, cancelled}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cancelled.cancel()
    if exited.done():
        return None
    return "cancel" if cancel.is_set() else "timeout"


def ended(
    stopped_for: StopReason | None,
    spec: JobSpec,
    exit_code: int,
    usage: Usage,
    *,
    oom_killed: bool = False,
) -> Outcome:
    """The outcome of an attempt that ran, by why it stopped."""
    if stopped_for == "cancel":
        return Outcome(cancelled=True, exit_code=exit_code, usage=usage)
    if stopped_for == "timeout":
        return Outcome(
            failure=FailureReason.TIMEOUT,
            exit_code=exit_code,
            message=f"timed out after {spec.timeout_seconds}s",
            usage=usage,
        )
    return Outcome(exit_code=exit_code, oom_killed=oom_killed, usage=usage)


def start_error(message: str, wall_seconds: float = 0.0) -> Outcome:
    """The outcome of an attempt that could not start, its message cut to a readable size."""
    message = message.strip()
    if len(message) > _MESSAGE_MAX:
        message = message[: _MESSAGE_MAX - 1] + "…"
    return Outcome(
        failure=FailureReason.START_ERROR,
        message=message,
        usage=Usage(wall_seconds=wall_seconds),
    )


class Found(msgspec.Struct, frozen=True, kw_only=True):
    """Something a previous life of this worker left behind (e.g. a labelled container)."""

    job_id: uuid.UUID
    attempt: int
    ref: str  # the executor's own handle: a container id, a process record's path
    running: bool


class Executor(Protocol):
    """Runs attempts. Implementations (on `BaseExecutor`): `DockerExecutor`, `ProcessExecutor`,
    `NoopExecutor`."""

    name: str

    async def run(self, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
        """Start the attempt and wait for its end, writing its output to `io.logs` (all of
        it, before returning) and samples to `io.usage`. Enforce `spec.timeout_seconds` (stop with
        `spec.stop_grace_seconds` of grace, then kill: failure=timeout). When `cancel` is set,
        stop the same way and return `cancelled=True`. Leave nothing behind (remove the
        container). Never raise for the job's own problems: report them in the Outcome.
        Raise `EngineUnavailable` if the engine does not answer before the attempt started
        (the caller tries again once it answers)."""
        ...

    async def find(self, worker_id: str) -> list[Found]:
        """What a previous process with this worker id left (running or exited)."""
        ...

    async def adopt(
        self, found: Found, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None
    ) -> Outcome:
        """Follow a found attempt to its end as `run` would (timeout counted from now),
        recording its real exit code; then remove it."""
        ...

    async def discard(self, found: Found) -> None:
        """Kill and remove something found that no longer belongs to a live job."""
        ...

    async def settled(self, req: RunRequest) -> None:
        """The attempt's outcome is in the log: forget what would let a next life of the
        worker find it (until then, a worker that dies must not lose how it ended)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def available(self) -> bool:
        """Whether the engine it drives answers now (a worker claims nothing while not)."""
        ...

    async def describe(self) -> dict[str, str]:
        """What it runs on, for the startup log (e.g. the Docker engine's version)."""
        ...

    async def find_any(self) -> list[Found]:
        """What the engine holds of any worker's attempts (for the reconcile loop)."""
        ...


class Attempt(abc.ABC):
    """A started attempt as its executor drives it; `follow` takes it from there to its end.
    A subclass says how to wait for, stop and report it, and puts the tasks that copy its
    output into the sink in `pumps` (they end when its output does)."""

    def __init__(self, spec: JobSpec, bound: FilteringBoundLogger, began: float) -> None:
        self.spec = spec
        self.log = bound
        self.began = began
        self.pumps: list[asyncio.Task[None]] = []

    @abc.abstractmethod
    async def wait(self) -> int | None:
        """Its exit code once it has exited (None: no longer known)."""

    @abc.abstractmethod
    async def stop(self, grace: int) -> None:
        """Ask it to end (SIGTERM), and kill it if it has not after `grace` seconds."""

    @abc.abstractmethod
    async def outcome(self, stopped_for: StopReason | None, exit_code: int | None) -> Outcome:
        """How it ended, told once its output is all in the sink."""

    async def remove(self) -> None:
        """Remove what is left of it, once its outcome is recorded."""
        return None

    async def read_output(self) -> FoundOutput | None:
        """What it wrote at its output path, once it has exited (None: nothing)."""
        return None

    async def exited(self) -> None:
        """Called once it has exited, before its output is drained."""
        return None

    def abandon(self) -> None:
        """The task following it is cancelled (the worker is going away)."""
        return None

    async def release(self) -> None:
        """Let go of what following it held; called however the following ends."""
        return None

    async def drain(self) -> None:
        """Wait, a bounded time, for the pumps to copy the last of its output."""
        if not self.pumps:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*self.pumps), OUTPUT_DRAIN_SECONDS)
        except TimeoutError:
            self.log.warning("output stream did not end after the attempt exited")


async def follow(attempt: Attempt, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
    """Follow a started attempt to its end: its exit, a cancel or its timeout (counted from
    now), whichever comes first; stop it with grace if we must, drain its output, report
    (to `io.record` too, before removing what is left of it).
    If the task running this is cancelled, the attempt's `abandon` says what becomes of it."""
    spec = attempt.spec
    exited = asyncio.ensure_future(attempt.wait())
    try:
        try:
            stopped_for = await race_end(exited, cancel, spec.timeout_seconds)
            if stopped_for is not None:
                attempt.log.info("stopping attempt", reason=stopped_for)
                await attempt.stop(spec.stop_grace_seconds)
            exit_code = await exited
        finally:
            # A cancelled Docker wait() closes its response when collected (measured: no
            # pooled connection leaks), so cancelling it is safe even when we are cancelled.
            exited.cancel()
        await attempt.exited()
        await attempt.drain()
    except asyncio.CancelledError:
        attempt.abandon()
        raise
    finally:
        for pump in attempt.pumps:
            pump.cancel()
        await attempt.release()
    outcome = await attempt.outcome(stopped_for, exit_code)
    if not outcome.cancelled and outcome.failure is not FailureReason.START_ERROR:
        # Before the outcome is recorded and the attempt removed: an adopted one too.
        output = checked_output(await attempt.read_output(), io, attempt.log)
        if output is not None:
            outcome = msgspec.structs.replace(outcome, output=output)
    if io is not None and io.record is not None:
        await io.record(outcome)
    await attempt.remove()
    return outcome


class BaseExecutor(abc.ABC):
    """What executors share: `run` as cancel-before-start, `start`, then `follow`; and, for
    one that leaves nothing behind a dying worker, nothing to find, adopt or discard."""

    name: str

    async def run(self, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
        """See `Executor.run`."""
        if cancel.is_set():
            return Outcome(cancelled=True)
        started = await self.start(req, io)
        if isinstance(started, Outcome):  # it could not start, or has already ended
            return started
        return await follow(started, cancel, io)

    @abc.abstractmethod
    async def start(self, req: RunRequest, io: JobIO | None) -> Attempt | Outcome:
        """Start the attempt with its output going to `io.logs`, or say why it could not
        (`start_error`)."""

    async def find(self, worker_id: str) -> list[Found]:
        """Nothing: what it runs does not outlive its worker."""
        return []

    async def adopt(
        self, found: Found, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None
    ) -> Outcome:
        """Unreachable: `find` never returns anything."""
        raise NotImplementedError(f"the {self.name} executor leaves nothing to adopt")

    async def discard(self, found: Found) -> None:
        """Nothing to discard."""
        return None

    async def settled(self, req: RunRequest) -> None:
        """Nothing kept for a next life."""
        return None

    async def close(self) -> None:
        """No connections to release."""
        return None

    async def available(self) -> bool:
        """Always: it needs no engine."""
        return True

    async def describe(self) -> dict[str, str]:
        """Its name only."""
        return {"executor": self.name}

    async def find_any(self) -> list[Found]:
        """Nothing: what it runs does not outlive its worker."""
        return []
