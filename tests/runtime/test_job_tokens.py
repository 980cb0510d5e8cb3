"""Issue 16: a job's own token dies with the job, through every way a job ends, even the
lease reaper's failing of a lost worker's job (tests/e2e/test_job_tokens.py has the token
in a real container)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from jobledger.administration import JOB_ACCOUNT, AccessService
from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import Fail, Start
from jobledger.service import JobService
from jobledger.store.access import Role
from tests.factories import spec
from tests.runtime.conftest import StartScheduler
from tests.watching import JobWatcher

META = EventMeta(actor="admin")
GHOST = EventMeta(actor="worker:ghost")


async def running_job(service: JobService, worker: str) -> uuid.UUID:
    view, _ = await service.submit(spec(command=["true"]), META)
    await service.execute(view.id, Start(worker_id=worker), GHOST)
    return view.id


async def test_a_jobs_token_stops_working_when_the_job_ends_even_unrevoked(
    service: JobService, pool: asyncpg.Pool
) -> None:
    access = AccessService(pool, service.streams)
    job = await running_job(service, "ghost")
    token, info = await access.issue_job_token(job, "default", "admin", meta=GHOST)
    # Submitted by the server admin: the project's own account for jobs, role operator.
    [who] = await access.authenticate_many([token])
    assert who is not None and who.job_id == job
    assert (who.project, who.service_account, who.role) == ("default", JOB_ACCOUNT, Role.OPERATOR)

    await service.execute(job, Fail(reason=FailureReason.WORKER_LOST), GHOST)
    assert await access.authenticate_many([token]) == [None]
    assert await pool.fetchval("SELECT revoked_at FROM api_tokens WHERE id = $1", info.id) is None


async def test_the_lease_reaper_revokes_the_token_of_the_job_it_fails(
    service: JobService, pool: asyncpg.Pool, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await pool.execute(
        "INSERT INTO workers (id, tags, capacity, lease_seconds, executor, hostname, pid,"
        " heartbeat_at) VALUES ('ghost', '{}', 1, 1, 'docker', 'gone', 1, now() - '1 min'::interval)"  # noqa: E501
    )
    access = AccessService(pool, service.streams)
    job = await running_job(service, "ghost")
    token, info = await access.issue_job_token(job, "default", "admin", meta=GHOST)
    live = await start_scheduler()
    failed = await watcher.until(job, {"failed"})
    assert failed.failure_reason is FailureReason.WORKER_LOST
    for _ in range(100):
        revoked = await pool.fetchval("SELECT revoked_at FROM api_tokens WHERE id = $1", info.id)
        if revoked is not None:
            break
        await asyncio.sleep(0.1)
    assert revoked is not None
    [rec] = [r for r in await service.store.read_stream(info.id) if r.version == 2]
    assert type(rec.event).__name__ == "TokenRevoked"
    assert rec.meta.actor == f"worker:{live.config.worker_id}"
    assert await access.authenticate_many([token]) == [None]
