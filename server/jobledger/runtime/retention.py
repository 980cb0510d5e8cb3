"""The background prune of finished jobs' output (store/retention.py): every scheduler
process (`serve`, `worker`) runs one `Retention` beside its `Scheduler`. Each round walks
every project in batches until none is due, then sleeps `interval`. Processes share the
work without waiting on each other: a project's cursor is taken with SKIP LOCKED."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import asyncpg
import structlog

from ..store.db import DB_ERRORS
from ..store.retention import DEFAULT_BATCH, PruneReport, prune_batch, retention_projects

log = structlog.get_logger(__name__)


class Retention:
    """Prunes output past retention until stopped; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        default_days: int,
        *,
        interval: float = 300.0,
        batch: int = DEFAULT_BATCH,
        pause: float = 0.05,
    ) -> None:
        self.pool = pool
        self.default_days = default_days
        self.interval = interval
        self.batch = batch
        #: Seconds between two batches: other writers get the disk between them.
        self.pause = pause
        #: Everything this process pruned (a test's and the bench's count).
        self.pruned = PruneReport()

    async def run(self, stop: asyncio.Event) -> None:
        """Prune a round, sleep `interval`, until `stop` is set."""
        while not stop.is_set():
            try:
                await self.round(stop)
            except DB_ERRORS as exc:
                log.warning("retention round failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def round(
        self, stop: asyncio.Event | None = None, *, as_of: datetime | None = None
    ) -> PruneReport:
        """Prune every project's due jobs, batch by batch (as if the time were `as_of`;
        default: the database's clock); what it removed."""
        done = PruneReport()
        for project, days in await retention_projects(self.pool, self.default_days):
            if days <= 0:
                continue
            while stop is None or not stop.is_set():
                report = await prune_batch(self.pool, project, days, batch=self.batch, as_of=as_of)
                if report is None:  # another process is pruning this project
                    break
                done += report
                if report.jobs < self.batch:
                    break
                await asyncio.sleep(self.pause)
        if done.jobs:
            self.pruned += done
            log.info("output pruned", jobs=done.jobs, lines=done.lines, bytes=done.bytes,
                     samples=done.samples)  # fmt: skip
        return done
