"""What the scheduler asks of an executor (Docker, local process, ...): run one attempt of a
job to its end, honouring timeout and cancel, and find what a previous life left running."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal, Protocol

import msgspec

from ..domain.events import FailureReason, Usage
from ..domain.jobs import Command, ConfirmCancelled, Fail, Finish
from ..domain.specs import JobSpec
from .output import LogSink
from .usage import UsageRecorder


class JobIO:
    """Where an attempt's output and CPU/memory samples go; a part left None is discarded.
    The scheduler owns both: it starts the sink before the run and closes it after."""

    def __init__(self, logs: LogSink | None = None, usage: UsageRecorder | None = None) -> None:
        self.logs = logs
        self.usage = usage


class RunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of one job, as handed to an executor."""

    job_id: uuid.UUID
    attempt: int
    worker_id: str
    spec: JobSpec


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How an attempt ended.

    - `cancelled`: the executor stopped it because `cancel` was set.
    - `failure`: it could not run or was stopped for a reason of ours (start_error, timeout,
      worker_lost), with a human `message`.
    - otherwise the command exited by itself with `exit_code` (`oom_killed` if the kernel
      killed it for memory).
    """

    exit_code: int | None = None
    oom_killed: bool = False
    cancelled: bool = False
    failure: FailureReason | None = None
    message: str | None = None
    usage: Usage = Usage()

    def command(self, attempt: int) -> Command:
        """The domain command that records this outcome of `attempt`."""
        if self.cancelled:
            return ConfirmCancelled(attempt=attempt, exit_code=self.exit_code, usage=self.usage)
        if self.failure is not None:
            return Fail(
                attempt=attempt,
                reason=self.failure,
                message=self.message,
                exit_code=self.exit_code,
                usage=self.usage,
            )
        assert self.exit_code is not None
        return Finish(
            attempt=attempt, exit_code=self.exit_code, oom_killed=self.oom_killed, usage=self.usage
        )


#: Why an executor stopped an attempt itself.
StopReason = Literal["cancel", "timeout"]


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


class Found(msgspec.Struct, frozen=True, kw_only=True):
    """Something a previous life of this worker left behind (e.g. a labelled container)."""

    job_id: uuid.UUID
    attempt: int
    ref: str  # the executor's own handle: a container id
    running: bool


class Executor(Protocol):
    """Runs attempts. Implementations: `DockerExecutor`, `ProcessExecutor`."""

    name: str

    async def run(self, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
        """Start the attempt and wait for its end, writing its output to `io.logs` (all of
        it, before returning) and samples to `io.usage`. Enforce `spec.timeout_seconds` (stop with
        `spec.stop_grace_seconds` of grace, then kill: failure=timeout). When `cancel` is set,
        stop the same way and return `cancelled=True`. Leave nothing behind (remove the
        container). Never raise for the job's own problems: report them in the Outcome."""
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

    async def close(self) -> None:
        """Release connections."""
        ...
