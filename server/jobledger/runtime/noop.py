"""An executor that finishes every job at once with exit code 0: it measures the engine
(claims, events, projections) without any container cost. For benchmarks and engine tests."""

from __future__ import annotations

import asyncio

from .executor import Found, JobIO, Outcome, RunRequest


class NoopExecutor:
    """Completes each attempt immediately; nothing to find, adopt or discard."""

    name = "noop"

    async def run(self, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
        return Outcome(cancelled=True) if cancel.is_set() else Outcome(exit_code=0)

    async def find(self, worker_id: str) -> list[Found]:
        return []

    async def adopt(
        self, found: Found, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None
    ) -> Outcome:
        raise NotImplementedError("the no-op executor leaves nothing to adopt")

    async def discard(self, found: Found) -> None:
        return None

    async def close(self) -> None:
        return None
