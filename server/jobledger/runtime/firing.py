"""Firing schedules: every scheduler process runs one `Firing` beside its `Scheduler`. It
sleeps until the next schedule is due (by the database's clock), wakes early when a
schedule changes (the NOTIFY of its append) and at the poll interval at the latest, then
fires what is due through `ScheduleService.fire` (a tick is decided once among all
processes: see there). At start, after every reconnection and every poll interval it also
creates the jobs (or workflow runs) of fired occurrences that have none (a process killed
between the ScheduleFired and their creation)."""

from __future__ import annotations

import asyncio
import time

import structlog

from ..scheduleservice import SCHEDULE_CHANGE, ScheduleService
from ..store.db import DB_ERRORS
from ..store.eventstore import Notification
from .rounds import run_rounds

log = structlog.get_logger(__name__)


class Firing:
    """Fires due schedules until stopped; see the module docstring."""

    def __init__(
        self, schedules: ScheduleService, dsn: str, actor: str, poll_interval: float = 2.0
    ) -> None:
        self.schedules = schedules
        self.dsn = dsn
        self.actor = actor
        self.poll_interval = poll_interval
        self.wake = asyncio.Event()
        self._repair_due = True
        self._next_repair = 0.0
        #: Occurrences this process fired (a test's and the bench's count).
        self.fired = 0

    def _on_notification(self, note: Notification) -> None:
        if note.more or any(c.state == SCHEDULE_CHANGE for c in note.changes):
            self.wake.set()

    def _on_connect(self) -> None:
        self._repair_due = True
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Fire schedules until `stop` is set."""
        await run_rounds(
            stop, self.wake, dsn=self.dsn, channel=self.schedules.store.channel,
            name="jobledger-firing", on_notification=self._on_notification,
            on_connect=self._on_connect, round=self.round,
        )  # fmt: skip

    async def round(self) -> float:
        """Repair, fire what is due; return how long to sleep."""
        self.wake.clear()
        try:
            if self._repair_due or time.monotonic() >= self._next_repair:
                self._repair_due = False
                self._next_repair = time.monotonic() + self.poll_interval
                await self._repair()
            stuck = False
            for sid in await self.schedules.due():
                fired = await self.schedules.fire(sid, self.actor)
                self.fired += len(fired)
                for ref in fired:
                    log.debug("schedule fired", stream_id=str(sid), job_id=str(ref.job_id),
                              workflow_run=str(ref.workflow_run),
                              occurrence=ref.occurrence.isoformat())  # fmt: skip
                if not fired:
                    # Another process fired it, or it was paused meanwhile: it moved on,
                    # unless something keeps it due; never spin on that.
                    stuck = True
            wait = await self.schedules.next_due_in()
        except DB_ERRORS as exc:
            log.warning("firing round failed", error=str(exc))
            return self.poll_interval
        if wait is None:
            return self.poll_interval
        if wait <= 0 and stuck:
            return min(0.05, self.poll_interval)
        return max(0.0, min(self.poll_interval, wait))

    async def _repair(self) -> None:
        for sid in await self.schedules.unsubmitted():
            state, _ = await self.schedules.streams.load("schedule", sid)
            if state is not None:
                n = await self.schedules.ensure_jobs(sid, state, self.actor)
                if n:
                    log.info("created the jobs of fired occurrences", stream_id=str(sid), jobs=n)
