"""Queue views: project limits and usage, and why a queued job is still waiting.

The waiting reason is worked out when asked, from the current running counts, limits and
live workers: it describes the present, so it is not an event and not a projection column."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import asyncpg
import msgspec

from ..domain.jobs import JobState
from ..domain.specs import DEFAULT_MAX_RUNNING_JOBS
from ..store.eventstore import EVENTS_CHANNEL, Notification
from ..store.queries import load_queries
from ..wire import ProjectView
from .jobs import JobView

QUERIES = load_queries(Path(__file__).with_name("queue.sql"))
_LOOK_AGAIN = msgspec.json.encode(Notification(changes=[], more=True)).decode()


async def project_view(pool: asyncpg.Pool, name: str) -> ProjectView:
    row = await pool.fetchrow(QUERIES["project_usage"], name, DEFAULT_MAX_RUNNING_JOBS)
    assert row is not None
    return ProjectView(name=name, **dict(row))


async def set_project_limit(
    pool: asyncpg.Pool,
    name: str,
    max_running_jobs: int | None,
    log_limit_bytes: int | None = None,
    submit_rate: float | None = None,
    submit_burst: int | None = None,
) -> ProjectView:
    """Set how many of a project's jobs may run at once (0 pauses the project) and how much
    output each may store; None leaves a limit as it is."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            QUERIES["set_project_limit"], name, max_running_jobs, log_limit_bytes,
            DEFAULT_MAX_RUNNING_JOBS, submit_rate, submit_burst,
        )  # fmt: skip
        # A raised limit frees slots: have every scheduler look again.
        await conn.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, _LOOK_AGAIN)
    return await project_view(pool, name)


class QueueFacts(msgspec.Struct):
    """What explains why jobs wait, read at one moment."""

    running: list[tuple[str, str | None, int]]
    #: Limits of the projects asked about that have a row.
    limits: list[tuple[str, int]]
    live_tags: list[list[str]]
    now: datetime | None = None


_facts_decoder = msgspec.json.Decoder(QueueFacts)


def projects_waiting(views: Sequence[JobView]) -> set[str]:
    """The projects of the queued jobs among `views`: what `queue_facts` needs."""
    return {v.project for v in views if v.state is JobState.QUEUED}


async def queue_facts(pool: asyncpg.Pool, projects: Iterable[str]) -> QueueFacts:
    """One round trip: the time, running counts, the named projects' limits, live tags."""
    row = await pool.fetchrow(QUERIES["queue_facts"], sorted(projects))
    assert row is not None
    return msgspec.structs.replace(_facts_decoder.decode(row["facts"]), now=row["now"])


async def waiting_reasons(pool: asyncpg.Pool, views: Sequence[JobView]) -> dict[uuid.UUID, str]:
    """For each queued job among `views`, the first thing that keeps it from starting."""
    projects = projects_waiting(views)
    return reasons(await queue_facts(pool, projects), views) if projects else {}


def reasons(facts: QueueFacts, views: Sequence[JobView]) -> dict[uuid.UUID, str]:
    """`waiting_reasons` from facts already read (they must cover the views' projects)."""
    queued = [v for v in views if v.state is JobState.QUEUED]
    now = facts.now
    assert now is not None
    limits = dict(facts.limits)
    live_tags = [set(tags) for tags in facts.live_tags]
    by_project: Counter[str] = Counter()
    by_key: Counter[str] = Counter()
    for project, key, n in facts.running:
        by_project[project] += n
        if key is not None:
            by_key[key] += n
    reasons: dict[uuid.UUID, str] = {}
    for v in queued:
        limit = limits.get(v.project, DEFAULT_MAX_RUNNING_JOBS)
        retry = f"{v.queue_reason}; " if v.queue_reason else ""
        if v.scheduled_for is not None and v.scheduled_for > now:
            reasons[v.id] = f"{retry}scheduled for {v.scheduled_for.isoformat()}"
        elif not any(set(v.tags) <= tags for tags in live_tags):
            wanted = f" with tags {', '.join(v.tags)}" if v.tags else ""
            reasons[v.id] = f"no live worker{wanted}"
        elif by_project[v.project] >= limit:
            running = by_project[v.project]
            reasons[v.id] = f"project {v.project} has {running} running jobs, its limit is {limit}"
        elif v.concurrency_key is not None and by_key[v.concurrency_key] >= v.concurrency_limit:
            reasons[v.id] = (
                f"concurrency key {v.concurrency_key!r} has {by_key[v.concurrency_key]} running "
                f"jobs, its limit is {v.concurrency_limit}"
            )
        else:
            reasons[v.id] = f"{retry}waiting for a free worker slot"
    return reasons
