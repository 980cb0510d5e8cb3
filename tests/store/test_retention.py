"""Retention (issue 19): finished jobs' output lines and usage samples are pruned after their
project's retention period, in batches, each pruned job keeping one `system` line; new,
running and waiting jobs are untouched, and so are the job list, a running job's output and
the event log while a prune runs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from jobledger.administration import AccessService
from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import Finish, Start
from jobledger.projections.jobs import JobFilter, list_jobs
from jobledger.runtime.retention import Retention
from jobledger.service import JobService
from jobledger.store.logs import (
    LogLine,
    UsageSample,
    append_log_batch,
    append_usage_samples,
    read_logs,
    read_usage_samples,
)
from jobledger.store.retention import prune_batch
from tests.factories import spec

META = EventMeta(actor="test")
T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAYS = 30


async def job_with_output(
    service: JobService,
    *,
    lines: int = 5,
    samples: int = 3,
    finish: bool = True,
    project: str = "default",
) -> uuid.UUID:
    view, _ = await service.submit(spec(project=project), META)
    await service.execute(view.id, Start(worker_id="w1"), META)
    for first in range(1, lines + 1, 2):
        batch = [
            LogLine(seq=s, stream="stdout", ts=T0, text=f"line {s}")
            for s in range(first, min(first + 1, lines) + 1)
        ]
        await append_log_batch(service.pool, view.id, 1, batch)
    await append_usage_samples(
        service.pool, view.id, 1,
        [UsageSample(sampled_at=T0 + timedelta(seconds=i), cpu_percent=1.0, memory_bytes=10)
         for i in range(samples)],
    )  # fmt: skip
    if finish:
        await service.execute(view.id, Finish(exit_code=0), META)
    return view.id


async def finished_at(pool: asyncpg.Pool, job: uuid.UUID) -> datetime:
    value: datetime = await pool.fetchval("SELECT finished_at FROM jobs WHERE id = $1", job)
    return value


def between(a: datetime, b: datetime, days: int = DAYS) -> datetime:
    """A time at which a job finished at `a` is past `days` of retention and one at `b` not."""
    return a + (b - a) / 2 + timedelta(days=days)


async def texts(pool: asyncpg.Pool, job: uuid.UUID) -> list[tuple[int, str, str]]:
    return [(ln.seq, ln.stream, ln.text) for ln in await read_logs(pool, job)]


async def test_old_finished_jobs_are_pruned_and_keep_a_line(service: JobService) -> None:
    pool = service.pool
    old = [await job_with_output(service) for _ in range(3)]
    new = await job_with_output(service)
    running = await job_with_output(service, finish=False)
    queued, _ = await service.submit(spec(), META)
    events_before = await pool.fetch("SELECT * FROM events ORDER BY position")
    jobs_before = await pool.fetch("SELECT * FROM jobs ORDER BY id")
    as_of = between(await finished_at(pool, old[-1]), await finished_at(pool, new))

    report = await Retention(pool, DAYS, batch=2).round(as_of=as_of)

    assert (report.jobs, report.lines, report.samples) == (3, 15, 9)
    for job in old:
        lines = await texts(pool, job)
        assert len(lines) == 1, lines
        seq, stream, text = lines[0]
        assert (seq, stream) == (6, "system")  # after the last line it had
        assert text.startswith("output pruned at ")
        assert "5 lines (" in text and "3 usage samples removed, kept 30 days" in text
        assert await read_usage_samples(pool, job) == []
    for job in (new, running):
        assert [t for _, _, t in await texts(pool, job)] == [f"line {s}" for s in range(1, 6)]
        assert len(await read_usage_samples(pool, job)) == 3
    assert await texts(pool, queued.id) == []
    # The log and the projection are not touched: a prune is not a fact of the job's stream.
    assert await pool.fetch("SELECT * FROM events ORDER BY position") == events_before
    assert await pool.fetch("SELECT * FROM jobs ORDER BY id") == jobs_before

    # A second pass prunes nothing more (the marker stays as it is).
    again = await Retention(pool, DAYS).round(as_of=as_of)
    assert again.jobs == 0
    assert len(await texts(pool, old[0])) == 1
    # Later, the newer job is due too; the running one never is.
    later = await Retention(pool, DAYS).round(as_of=as_of + timedelta(days=1))
    assert (later.jobs, later.lines) == (1, 5)
    assert len(await texts(pool, running)) == 5


async def test_a_project_keeps_its_own_retention(service: JobService) -> None:
    pool = service.pool
    access = AccessService(pool, service.streams)
    await access.set_limits("short", retention_days=1, meta=META)
    await access.set_limits("forever", retention_days=0, meta=META)
    await access.set_limits("long", retention_days=60, meta=META)
    jobs = {
        p: await job_with_output(service, project=p)
        for p in ("default", "short", "forever", "long")
    }
    last = max([await finished_at(pool, j) for j in jobs.values()])
    # Two days on: only `short` (1 day) is due; 31 days on `default` (the server's 30) too.
    await Retention(pool, DAYS).round(as_of=last + timedelta(days=2))
    pruned = {p for p, j in jobs.items() if len(await texts(pool, j)) == 1}
    assert pruned == {"short"}
    await Retention(pool, DAYS).round(as_of=last + timedelta(days=31))
    pruned = {p for p, j in jobs.items() if len(await texts(pool, j)) == 1}
    assert pruned == {"short", "default"}
    await Retention(pool, DAYS).round(as_of=last + timedelta(days=3650))
    pruned = {p for p, j in jobs.items() if len(await texts(pool, j)) == 1}
    assert pruned == {"short", "default", "long"}  # 0: kept forever
    # The server's default of 0 keeps every project without its own setting forever.
    other = await job_with_output(service)
    await Retention(pool, 0).round(as_of=last + timedelta(days=3650))
    assert len(await texts(pool, other)) == 5


async def test_one_process_prunes_a_project_at_a_time(service: JobService) -> None:
    pool = service.pool
    job = await job_with_output(service)
    as_of = await finished_at(pool, job) + timedelta(days=DAYS, seconds=1)
    await pool.execute("INSERT INTO output_retention (project) VALUES ('default')")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM output_retention WHERE project = 'default' FOR UPDATE")
        # Held by "another process": this one skips the project, without waiting.
        assert await asyncio.wait_for(prune_batch(pool, "default", DAYS, as_of=as_of), 10) is None
    report = await prune_batch(pool, "default", DAYS, as_of=as_of)
    assert report is not None and report.jobs == 1


async def test_job_list_and_running_output_go_on_while_a_prune_runs(service: JobService) -> None:
    pool = service.pool
    old = [await job_with_output(service, lines=40, samples=5) for _ in range(60)]
    running = await job_with_output(service, lines=0, samples=0, finish=False)
    as_of = await finished_at(pool, old[-1]) + timedelta(days=DAYS, seconds=1)
    retention = Retention(pool, DAYS, batch=5, pause=0)
    prune = asyncio.create_task(retention.round(as_of=as_of))
    written = 0
    listed = 0
    while not prune.done() or written < 50:
        written += 1
        await append_log_batch(
            pool, running, 1, [LogLine(seq=written, stream="stdout", ts=T0, text=f"live {written}")]
        )
        page, _ = await list_jobs(pool, JobFilter(), after=None, limit=100)
        assert len(page) == 61  # every job, each time
        listed += 1
    report = await prune
    assert report.jobs == 60 and report.lines == 60 * 40
    assert [t for _, _, t in await texts(pool, running)] == [
        f"live {s}" for s in range(1, written + 1)
    ]
    assert [len(await texts(pool, j)) for j in old] == [1] * len(old)
    assert listed >= 50
