"""`replay archive` (issue 19): the streams of jobs finished before a cut-off move to files,
checkpoints stay in the log, the jobs rows stay; verify, rebuild and import still agree."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from jobledger.domain.jobs import Finish, Start
from jobledger.projections.jobs import JobView, view_from_row
from jobledger.replay.archive import import_lines
from jobledger.replay.archiving import archive_before, archive_files
from jobledger.replay.rebuild import rebuild
from jobledger.replay.verify import Problem, Verifier
from jobledger.service import JobService
from tests.api.test_access_api import call, project_with_accounts
from tests.api.test_schedules_api import Client
from tests.api.test_schedules_api import body as schedule_body
from tests.factories import spec
from tests.histories import META, write_mixed_history


async def verify(pool: asyncpg.Pool, archive: Path | None = None) -> list[Problem]:
    return [p async for p in Verifier(pool, batch=40, archive=archive).problems()]


async def jobs_rows(pool: asyncpg.Pool) -> list[JobView]:
    """The jobs rows as the API reads them (decoded: a rebuild writes a spec's float 0.0
    as 0, which jsonb and the API treat as equal)."""
    return [view_from_row(r) for r in await pool.fetch("SELECT * FROM jobs ORDER BY id")]


async def log_streams(pool: asyncpg.Pool) -> set[uuid.UUID]:
    rows = await pool.fetch("SELECT DISTINCT stream_id FROM events WHERE stream_type = 'job'")
    return {r["stream_id"] for r in rows}


@pytest.fixture
async def archived(
    pool: asyncpg.Pool, service: JobService, tmp_path: Path
) -> tuple[datetime, set[uuid.UUID], Path]:
    """A mixed history of old jobs, a cut-off, new jobs (one finished), then an archive run
    in batches of 7; returns the cut-off, the old finished jobs and the archive directory."""
    await write_mixed_history(service, 60)
    cutoff = await pool.fetchval("SELECT clock_timestamp()")
    new, _ = await service.submit(spec(), META)
    await service.execute(new.id, Start(worker_id="w"), META)
    await service.execute(new.id, Finish(exit_code=0), META)
    await service.submit(spec(), META)
    old_finished = {
        r["id"] for r in await pool.fetch("SELECT id FROM jobs WHERE finished_at < $1", cutoff)
    }
    assert 0 < len(old_finished) < 60
    assert await verify(pool) == []
    to = tmp_path / "archive"
    dry = await archive_before(pool, cutoff, to, batch=7, dry_run=True)
    assert (dry.streams, dry.files, to.exists()) == (len(old_finished), [], False)
    report = await archive_before(pool, cutoff, to, batch=7)
    assert report.streams == len(old_finished) == dry.streams and report.events == dry.events
    assert len(report.files) == -(-len(old_finished) // 7)
    return cutoff, old_finished, to


async def test_archive_removes_old_finished_streams_and_keeps_their_rows(
    pool: asyncpg.Pool, archived: tuple[datetime, set[uuid.UUID], Path]
) -> None:
    cutoff, old_finished, to = archived
    rows_before = {r.id for r in await jobs_rows(pool)}
    left = await log_streams(pool)
    assert not left & old_finished
    assert len(left) == 62 - len(old_finished)  # old unfinished and the new jobs stay
    assert {r.id for r in await jobs_rows(pool)} == rows_before  # list/detail still work
    checkpoints = await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_type = 'archive' AND type = 'StreamsArchived'"
    )
    assert checkpoints == len(list(archive_files(to)))
    # Verify accepts the archived log, with and without the files.
    assert await verify(pool) == []
    assert await verify(pool, to) == []
    # A second run finds nothing more to archive.
    again = await archive_before(pool, cutoff, to, batch=7)
    assert (again.streams, again.files) == (0, [])


async def test_a_file_altered_by_one_byte_fails_verify_archive(
    pool: asyncpg.Pool, archived: tuple[datetime, set[uuid.UUID], Path]
) -> None:
    _, _, to = archived
    mark = b'"exit_code": 0'
    first = next(f for f in archive_files(to) if mark in f.read_bytes())
    data = bytearray(first.read_bytes())
    data[data.index(mark) + len(mark) - 1] = ord("1")  # a job that failed now succeeded
    first.write_bytes(bytes(data))
    problems = await verify(pool, to)
    assert problems and all(p.stream_type in ("archive", "job") for p in problems)
    assert any("SHA-256" in p.detail and first.name in p.detail for p in problems)
    assert await verify(pool) == []  # the log itself is fine


async def test_a_row_of_an_archived_job_changed_is_reported(
    pool: asyncpg.Pool, archived: tuple[datetime, set[uuid.UUID], Path]
) -> None:
    _, old_finished, _ = archived
    victim = sorted(old_finished)[0]
    await pool.execute("UPDATE jobs SET exit_code = 99 WHERE id = $1", victim)
    problems = await verify(pool)
    assert [(p.kind, p.stream_id) for p in problems] == [("projection_differs", victim)]


async def test_rebuild_reproduces_the_rows_after_archiving(
    pool: asyncpg.Pool, archived: tuple[datetime, set[uuid.UUID], Path]
) -> None:
    before = await jobs_rows(pool)
    await pool.execute("DELETE FROM jobs")  # a projection lost: rebuilt from log+checkpoints
    await rebuild(pool, batch=9, restart=True)
    after = await jobs_rows(pool)
    assert after == before
    assert await verify(pool) == []


async def test_import_of_the_archive_into_an_empty_database_restores_the_streams(
    pool: asyncpg.Pool,
    other_pool: asyncpg.Pool,
    archived: tuple[datetime, set[uuid.UUID], Path],
) -> None:
    _, old_finished, to = archived
    lines = [line for f in archive_files(to) for line in f.read_bytes().splitlines()]
    count = await import_lines(other_pool, lines)
    assert count == sum(1 for line in lines if line.strip())
    assert await log_streams(other_pool) == old_finished
    await rebuild(other_pool, restart=True)
    restored = {r.id: r for r in await jobs_rows(other_pool)}
    original = {r.id: r for r in await jobs_rows(pool) if r.id in old_finished}
    assert restored == original
    assert await verify(other_pool) == []


async def test_a_schedules_recent_job_stays_in_the_log(
    client: Client, pool: asyncpg.Pool, service: JobService, tmp_path: Path
) -> None:
    """The scheduler submits a recent occurrence's job again when its stream is missing from
    the log, so archive leaves those jobs alone."""
    tokens = await project_with_accounts(client, "p1")
    base = "/api/v1/projects/p1/schedules"
    status, _ = await call(client, "POST", base, tokens["operator"], schedule_body())
    assert status == 201
    status, trig = await call(client, "POST", f"{base}/nightly/trigger", tokens["operator"])
    assert status == 201, trig
    scheduled = uuid.UUID(trig["job_id"])
    other, _ = await service.submit(spec(), META)
    for job_id in (scheduled, other.id):
        await service.execute(job_id, Start(worker_id="w"), META)
        await service.execute(job_id, Finish(exit_code=0), META)
    cutoff = await pool.fetchval("SELECT clock_timestamp()")
    report = await archive_before(pool, cutoff, tmp_path / "a")
    assert report.streams == 1
    assert scheduled in await log_streams(pool) and other.id not in await log_streams(pool)
    assert await verify(pool) == []
