"""The read side the API asks: jobs, their events, timeline, usage and output, audit pages
and project views. Every query behind a handler is here or in the store, so handlers parse,
call and encode, and never hold a connection or a row."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import asyncpg

from ..domain.events import Recorded
from ..domain.specs import DEFAULT_MAX_RUNNING_JOBS
from ..domain.timeline import Timeline, timeline
from ..store import audit as audit_store
from ..store import logs as logs_store
from ..store.audit import AuditFilter, AuditRecord
from ..store.eventstore import EventStore
from ..store.logs import LogLine, UsageSample
from ..store.queries import load_queries
from ..wire import ProjectView
from . import jobs as jobs_projection
from . import queue
from .jobs import Cursor, JobFilter, JobView

QUERIES = load_queries(Path(__file__).with_name("reads.sql"))


class JobReads:
    """Queries of the read models and the log, through one pool."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.pool: asyncpg.Pool = store.pool

    async def now(self) -> datetime:
        """The database's clock (also: whether the database answers)."""
        now: datetime = await self.pool.fetchval("SELECT clock_timestamp()")
        return now

    async def job(self, job_id: uuid.UUID) -> JobView | None:
        return await jobs_projection.get(self.pool, job_id)

    async def jobs(
        self, filt: JobFilter, *, after: Cursor | None, limit: int
    ) -> tuple[list[JobView], Cursor | None]:
        """A page of the job list, newest first, and the next page's cursor."""
        return await jobs_projection.list_jobs(self.pool, filt, after=after, limit=limit)

    async def events(self, job_id: uuid.UUID) -> list[Recorded]:
        """A job's events, oldest first."""
        return await self.store.read_stream(job_id)

    async def timeline(self, job_id: uuid.UUID) -> Timeline | None:
        """A job's transitions and time per state, a job still going counted until now;
        None for a job with no events in the log (archived, issue 19)."""
        records = await self.store.read_stream(job_id)
        return timeline(records, await self.now()) if records else None

    async def usage_samples(self, job_id: uuid.UUID) -> list[UsageSample]:
        return await logs_store.read_usage_samples(self.pool, job_id)

    async def logs(
        self, job_id: uuid.UUID, after: int, limit: int, max_bytes: int | None = None
    ) -> list[LogLine]:
        """Up to `limit` lines (and about `max_bytes` of text) of a job's output after seq
        `after`."""
        return await logs_store.read_logs(self.pool, job_id, after, limit, max_bytes)

    async def last_log_seq(self, job_id: uuid.UUID) -> int:
        return await logs_store.last_log_seq(self.pool, job_id)

    async def audit(self, filt: AuditFilter, limit: int) -> list[AuditRecord]:
        """A page of events matching the filter, newest first."""
        return await audit_store.audit(self.pool, filt, limit)

    async def queue_facts(self, projects: Iterable[str]) -> queue.QueueFacts:
        """What explains why the named projects' jobs wait, read at one moment."""
        return await queue.queue_facts(self.pool, projects)

    async def project(self, name: str) -> ProjectView:
        """A project's limits and counts (the defaults for a project without settings)."""
        row = await self.pool.fetchrow(QUERIES["project_usage"], name, DEFAULT_MAX_RUNNING_JOBS)
        assert row is not None
        return ProjectView(name=name, **dict(row))

    async def projects(self, only: str | None = None) -> list[ProjectView]:
        """Every created project (or just `only`), by name, in one query."""
        rows = await self.pool.fetch(QUERIES["project_views"], only)
        return [ProjectView(**dict(r)) for r in rows]
