"""Claiming queued jobs: best first, within quotas that every scheduler agrees on."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import msgspec

from ..domain.events import EventMeta
from ..domain.jobs import Command, Job, Start
from ..domain.specs import DEFAULT_MAX_RUNNING_JOBS
from ..projections.jobs import job_of, view_from_row
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


async def claim(service: JobService, worker_id: str, tags: Sequence[str], n: int) -> list[Claimed]:
    """Start up to `n` queued jobs on this worker: one transaction under the claim lock, so
    two schedulers never both take a job or both fill a project's last slot. Decides from
    the candidates' `jobs` rows: five round trips whatever `n` is."""
    if n <= 0:
        return []
    meta = EventMeta(actor=f"worker:{worker_id}")
    async with service.pool.acquire() as conn:
        # BEGIN and the lock in one round trip; each later statement sees what the previous
        # holder of the lock committed.
        await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({CLAIM_LOCK})")
        try:
            # More than n: some of a page may share a project or key with few slots left.
            rows = await conn.fetch(
                QUERIES["claim_candidates"], list(tags), DEFAULT_MAX_RUNNING_JOBS, 4 * n + 8
            )
            chosen = {r["id"]: r for r in pick(rows, n)}
            if not chosen:
                await conn.execute("COMMIT")
                return []
            known = {i: job_of(view_from_row(r)) for i, r in chosen.items()}
            commands: dict[uuid.UUID, Command] = {i: Start(worker_id=worker_id) for i in chosen}
            jobs = await service.execute_batch(commands, meta, conn, known)
            await conn.execute("COMMIT")
        except BaseException:
            # If this fails too, the pool's reset closes the connection.
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
    return [Claimed(j, chosen[j.id]["project_log_limit"]) for j in jobs]
