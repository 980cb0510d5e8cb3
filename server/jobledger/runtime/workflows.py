"""Moving workflow runs: every scheduler process runs one `WorkflowRuntime` beside its
`Scheduler` and `Firing`. It wakes when a run changes or a job ends (the NOTIFY of their
appends, which names changed streams and job states), at start, after every reconnection
and at the poll interval at the latest, and reacts to every unfinished run that asks for
something (`WorkflowService.pending`, `react`): ready steps get their child jobs, ended
child jobs end their steps, a cancelled run's running jobs are cancelled. Several
processes may do this at once: each decision is taken once on the run's stream (OCC)."""

from __future__ import annotations

import asyncio

import structlog

from ..domain.errors import DomainError
from ..domain.jobs import TERMINAL_STATES
from ..store.db import DB_ERRORS
from ..store.eventstore import Notification
from ..workflowservice import WORKFLOW_CHANGE, WorkflowService
from .rounds import run_rounds

log = structlog.get_logger(__name__)

_WAKING = {WORKFLOW_CHANGE, *(s.value for s in TERMINAL_STATES)}


class WorkflowRuntime:
    """Reacts to workflow runs until stopped; see the module docstring."""

    def __init__(
        self, workflows: WorkflowService, dsn: str, actor: str, poll_interval: float = 2.0
    ) -> None:
        self.workflows = workflows
        self.dsn = dsn
        self.actor = actor
        self.poll_interval = poll_interval
        self.wake = asyncio.Event()
        #: Events recorded and jobs created by this process (a test's count).
        self.reacted = 0

    def _on_notification(self, note: Notification) -> None:
        if note.more or any(c.state in _WAKING for c in note.changes):
            self.wake.set()

    def _on_connect(self) -> None:
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """React until `stop` is set."""

        async def round_then_poll() -> float:
            await self.round()
            return self.poll_interval

        await run_rounds(
            stop, self.wake, dsn=self.dsn, channel=self.workflows.store.channel,
            name="jobledger-workflows", on_notification=self._on_notification,
            on_connect=self._on_connect, round=round_then_poll,
        )  # fmt: skip

    async def round(self) -> None:
        """React to every run that asks for something now."""
        self.wake.clear()
        try:
            for run_id in await self.workflows.pending():
                try:
                    self.reacted += await self.workflows.react(run_id, self.actor)
                except DomainError as exc:
                    log.warning("workflow reaction refused", run_id=str(run_id),
                                error=exc.message)  # fmt: skip
        except DB_ERRORS as exc:
            log.warning("workflow round failed", error=str(exc))
