"""Claiming queued jobs: best first, within quotas that every scheduler agrees on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from ..domain.events import EventMeta
from ..domain.jobs import Command, Job, Start
from ..domain.specs import DEFAULT_MAX_RUNNING_JOBS
from ..service import JobService
from ..store.queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("scheduler.sql"))

#: Advisory lock taken for the length of a claim transaction: quota counts and the
#: JobStarted events that change them commit before the next scheduler counts.
CLAIM_LOCK = 0x6A6C_636C  # "jlcl"


def pick(rows: Sequence[asyncpg.Record], n: int) -> list[uuid.UUID]:
    """Take up to `n` candidates in order, counting each one taken against its project's
    and its concurrency key's remaining slots."""
    project_running: dict[str, int] = {}
    key_running: dict[str, int] = {}
    taken: list[uuid.UUID] = []
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
        taken.append(r["id"])
        if len(taken) == n:
            break
    return taken


async def claim(service: JobService, worker_id: str, tags: Sequence[str], n: int) -> list[Job]:
    """Start up to `n` queued jobs on this worker: one transaction under the claim lock, so
    two schedulers never both take a job or both fill a project's last slot."""
    if n <= 0:
        return []
    meta = EventMeta(actor=f"worker:{worker_id}")
    async with service.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
        # Fetch more than n: some of a page may share a project or key with few slots left.
        rows = await conn.fetch(
            QUERIES["claim_candidates"], list(tags), DEFAULT_MAX_RUNNING_JOBS, 4 * n + 8
        )
        chosen = pick(rows, n)
        if not chosen:
            return []
        commands: dict[uuid.UUID, Command] = {
            job_id: Start(worker_id=worker_id) for job_id in chosen
        }
        return await service.execute_batch(commands, meta, conn)
