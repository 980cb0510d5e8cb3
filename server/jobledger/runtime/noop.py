"""An executor that finishes every job with exit code 0 without running anything: it
measures the engine (claims, events, projections) without any container cost. For
benchmarks and engine tests. `seconds` makes each attempt last that long (a job of fixed
length, e.g. the scale-out bench's 20 ms), still running nothing."""

from __future__ import annotations

import asyncio
import contextlib

from .executor import Attempt, BaseExecutor, JobIO, Outcome, RunRequest


class NoopExecutor(BaseExecutor):
    """Completes each attempt as soon as it starts (or after `seconds`, unless cancelled
    meanwhile); nothing to find, adopt or discard."""

    name = "noop"

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    async def run(self, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
        if self.seconds > 0 and not cancel.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), self.seconds)
        return await super().run(req, cancel, io)

    async def start(self, req: RunRequest, io: JobIO | None) -> Attempt | Outcome:
        return Outcome(exit_code=0)
