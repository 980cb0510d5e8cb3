"""Claiming queued jobs: best first, within quotas that every scheduler agrees on."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg
import msgspec

from ..domain.errors import DomainError
from ..domain.events import EventMeta
from ..domain.jobs import ACTIVE_STATES, Command, Job, Start, decide
from ..domain.specs import DEFAULT_MAX_RUNNING_JOBS
from ..projections.jobs import get_many, job_of, view_from_row
from ..service import JobService
from ..store.queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("scheduler.sql"))

#: Advisory lock taken for the length of a claim transaction: quota counts and the
#: JobStarted events that change them commit before the next scheduler counts.
CLAIM_LOCK = 0x6A6C_636C  # "jlcl"


class Claimed(msgspec.Struct, frozen=True):
    """A job this worker started, and the output limit its project set (None: default)."""

    job: Job
    log_limit_bytes: int | None


class Cycle(msgspec.Struct, frozen=True):
    """What one claim transaction did: the jobs it started, and the outcomes it recorded
    (a job's new state, or None if its outcome was refused: ask again on its own)."""

    claimed: list[Claimed]
    recorded: dict[uuid.UUID, Job | None]


def pick(rows: Sequence[asyncpg.Record], n: int) -> list[asyncpg.Record]:
    """Take up to `n` candidates in order, counting each one taken against its project's
    and its concurrency key's remaining slots."""
    project_running: dict[str, int] = {}
    key_running: dict[str, int] = {}
    taken: list[asyncpg.Record] = []
    for r in rows:
        project = r["project"]
        running = project_running.setdefault(project, r["project_running"])
        if running >= r["project_limit"]:
            continue
        key = r["concurrency_key"]
        if key is not None:
            if key_running.setdefault(key, r["key_running"]) >= r["concurrency_limit"]:
                continue
            key_running[key] += 1
        project_running[project] = running + 1
        taken.append(r)
        if len(taken) == n:
            break
    return taken


def _ends(job: Job, outcome: Command) -> bool:
    """Whether an outcome takes a running job out of the running states (an accepted one
    always does: it ends the job or queues a retry)."""
    try:
        return job.state in ACTIVE_STATES and bool(decide(job, outcome))
    except DomainError:
        return False


async def claim(
    service: JobService,
    worker_id: str,
    tags: Sequence[str],
    n: int,
    outcomes: Mapping[uuid.UUID, Command] | None = None,
) -> Cycle:
    """Record the outcomes of this worker's jobs that ended and start up to `n` queued jobs,
    in one transaction under the claim lock, so two schedulers never both take a job or both
    fill a project's last slot. Decides from `jobs` rows (the candidates', the ending jobs'):
    six round trips whatever the numbers. A concurrent append to any of these jobs (e.g. a
    cancel request) raises `ConcurrencyError` and nothing is written."""
    outcomes = outcomes or {}
    meta = EventMeta(actor=f"worker:{worker_id}")
    async with service.pool.acquire() as conn:
        # BEGIN and the lock in one round trip; each later statement sees what the previous
        # holder of the lock committed.
        await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({CLAIM_LOCK})")
        try:
            known = {v.id: job_of(v) for v in await get_many(conn, outcomes)} if outcomes else {}
            # The slots of the jobs that end here are free for the candidates' quotas.
            ending = [i for i, j in known.items() if _ends(j, outcomes[i])]
            chosen: dict[uuid.UUID, asyncpg.Record] = {}
            if n > 0:
                # More than n: some of a page may share a project or key with few slots.
                rows = await conn.fetch(
                    QUERIES["claim_candidates"],
                    list(tags), DEFAULT_MAX_RUNNING_JOBS, 4 * n + 8, ending,
                )  # fmt: skip
                chosen = {r["id"]: r for r in pick(rows, n)}
            known |= {i: job_of(view_from_row(r)) for i, r in chosen.items()}
            commands: dict[uuid.UUID, Command] = {
                **outcomes,
                **{i: Start(worker_id=worker_id) for i in chosen},
            }
            jobs = await service.execute_batch(commands, meta, conn, known) if commands else []
            await conn.execute("COMMIT")
        except BaseException:
            # If this fails too, the pool's reset closes the connection.
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
    by_id = {j.id: j for j in jobs}
    return Cycle(
        claimed=[
            Claimed(by_id[i], r["project_log_limit"]) for i, r in chosen.items() if i in by_id
        ],
        recorded={i: by_id.get(i) for i in outcomes},
    )
