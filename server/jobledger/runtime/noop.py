"""An executor that finishes every job at once with exit code 0: it measures the engine
(claims, events, projections) without any container cost. For benchmarks and engine tests."""

from __future__ import annotations

from .executor import Attempt, BaseExecutor, JobIO, Outcome, RunRequest


class NoopExecutor(BaseExecutor):
    """Completes each attempt as soon as it starts; nothing to find, adopt or discard."""

    name = "noop"

    async def start(self, req: RunRequest, io: JobIO | None) -> Attempt | Outcome:
        return Outcome(exit_code=0)
