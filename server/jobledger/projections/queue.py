"""Queue views: project limits and usage, and why a queued job is still waiting.

The waiting reason is worked out when asked, by the admission policy (`domain.admission`)
from the current running counts, limits and live workers: it describes the present, so it
is not an event and not a projection column."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import asyncpg
import msgspec

from ..domain import admission
from ..domain.jobs import JobState
from ..domain.specs import DEFAULT_MAX_RUNNING_JOBS
from ..store.db import Conn
from ..store.queries import load_queries
from ..store.secretvalues import uses_secrets
from .jobs import JobView

QUERIES = load_queries(Path(__file__).with_name("queue.sql"))


class QueueFacts(msgspec.Struct):
    """What explains why jobs wait, read at one moment."""

    running: list[tuple[str, str | None, int]]
    #: Limits of the projects asked about that have a row.
    limits: list[tuple[str, int]]
    live_tags: list[list[str]]
    #: Tags of live workers whose executor does not answer (they claim nothing).
    unavailable_tags: list[list[str]] = []
    #: Tags of live, answering workers that hold the secrets key.
    keyed_tags: list[list[str]] = []
    now: datetime | None = None


_facts_decoder = msgspec.json.Decoder(QueueFacts)


def projects_waiting(views: Sequence[JobView]) -> set[str]:
    """The projects of the queued jobs among `views`: what `queue_facts` needs."""
    return {v.project for v in views if v.state is JobState.QUEUED}


async def queue_facts(conn: Conn | asyncpg.Pool, projects: Iterable[str]) -> QueueFacts:
    """One round trip: the time, running counts, the named projects' limits, the tags of
    live workers (those whose executor answers, and those whose executor does not)."""
    row = await conn.fetchrow(QUERIES["queue_facts"], sorted(projects))
    assert row is not None
    return facts_of(row)


def facts_of(row: asyncpg.Record) -> QueueFacts:
    """Queue facts from a row with the `queue_facts` function's `facts` and the time `now`
    (`queue_facts`, or a submit's write of its rows: `jobs.inline`)."""
    return msgspec.structs.replace(_facts_decoder.decode(row["facts"]), now=row["now"])


async def waiting_reasons(pool: asyncpg.Pool, views: Sequence[JobView]) -> dict[uuid.UUID, str]:
    """For each queued job among `views`, the first thing that keeps it from starting."""
    projects = projects_waiting(views)
    return reasons(await queue_facts(pool, projects), views) if projects else {}


def admission_facts(facts: QueueFacts) -> admission.Facts:
    """The policy's facts from queue facts: the live workers' tags are the ones that count."""
    assert facts.now is not None
    by_project: Counter[str] = Counter()
    by_key: Counter[str] = Counter()
    for project, key, n in facts.running:
        by_project[project] += n
        if key is not None:
            by_key[key] += n
    return admission.Facts(
        now=facts.now,
        project_running=dict(by_project),
        key_running=dict(by_key),
        project_limits=dict(facts.limits),
        default_project_limit=DEFAULT_MAX_RUNNING_JOBS,
        worker_tags=[frozenset(tags) for tags in facts.live_tags],
        unavailable_worker_tags=[frozenset(tags) for tags in facts.unavailable_tags],
        keyed_worker_tags=[frozenset(tags) for tags in facts.keyed_tags],
    )


def candidate_of(view: JobView) -> admission.Candidate:
    """A job as admission sees it."""
    return admission.Candidate(
        id=view.id,
        project=view.project,
        tags=view.tags,
        concurrency_key=view.concurrency_key,
        concurrency_limit=view.concurrency_limit,
        scheduled_for=view.scheduled_for,
        requeue_reason=view.requeue_reason,
        uses_secrets=uses_secrets(view.spec),
    )


def reasons(facts: QueueFacts, views: Sequence[JobView]) -> dict[uuid.UUID, str]:
    """`waiting_reasons` from facts already read (they must cover the views' projects): what
    the admission policy says of each queued job."""
    policy_facts = admission_facts(facts)
    return {
        v.id: admission.admit(candidate_of(v), policy_facts).message
        for v in views
        if v.state is JobState.QUEUED
    }


async def queue_depths(conn: Conn | asyncpg.Pool) -> list[tuple[str, int, int, float | None]]:
    """Per project: queued jobs whose time has come, those waiting for a later time, and the
    longest wait of a due one in seconds (None: none is due). Every project is listed."""
    rows = await conn.fetch(QUERIES["queue_depths"])
    return [(r["project"], r["due"], r["later"], r["oldest_seconds"]) for r in rows]
