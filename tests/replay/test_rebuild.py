"""`replay rebuild`: the projection rebuilt from the log equals the live one; it repairs a
damaged projection, resumes after an interruption, and runs safely beside live appends."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from jobledger.domain.errors import DomainError
from jobledger.domain.jobs import JobState, RequestCancel, Start, fold
from jobledger.projections.jobs import JobView, view_from_row, view_of
from jobledger.replay.rebuild import rebuild
from jobledger.service import JobService
from tests.factories import spec
from tests.histories import META, write_mixed_history


async def projected(pool: asyncpg.Pool) -> dict[object, JobView]:
    return {r["id"]: view_from_row(r) for r in await pool.fetch("SELECT * FROM jobs")}


async def folded_log(service: JobService) -> dict[object, JobView]:
    """Every stream folded with the domain code: what the projection must hold."""
    ids = [
        r["stream_id"] for r in await service.pool.fetch("SELECT DISTINCT stream_id FROM events")
    ]
    streams = await service.store.read_streams(ids)
    views = {}
    for sid, recs in streams.items():
        job = fold(recs)
        assert job is not None
        views[sid] = view_of(job)
    return views


class Interrupted(Exception):
    pass


async def interrupted_after_first_batch(service: JobService) -> None:
    def interrupt(done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        await rebuild(service.pool, batch=50, progress=interrupt)


@pytest.fixture
async def history(service: JobService) -> dict[object, JobView]:
    await write_mixed_history(service, 330)
    return await projected(service.pool)


async def test_rebuild_reproduces_the_live_rows(
    service: JobService, history: dict[object, JobView]
) -> None:
    assert len(history) == 330
    assert {v.state for v in history.values()} == set(JobState)  # every state is represented
    assert history == await folded_log(service)
    report = await rebuild(service.pool, batch=50)
    assert (report.jobs, report.rows_changed, report.resumed) == (330, 0, False)
    assert report.events == await service.pool.fetchval("SELECT count(*) FROM events")
    assert await projected(service.pool) == history
    assert await service.pool.fetchval("SELECT count(*) FROM projection_rebuilds") == 0
    assert await service.pool.fetchval("SELECT to_regclass('jobs_rebuild')") is None


async def test_rebuild_repairs_a_damaged_projection(
    service: JobService, history: dict[object, JobView]
) -> None:
    ids = list(history)
    await service.pool.execute(
        "UPDATE jobs SET state = 'failed', priority = 99 WHERE id = $1", ids[0]
    )
    await service.pool.execute("DELETE FROM jobs WHERE id = $1", ids[1])
    await service.pool.execute("UPDATE jobs SET id = gen_random_uuid() WHERE id = $1", ids[2])
    report = await rebuild(service.pool, batch=50)
    # The changed row, the deleted one, and the renamed one (re-inserted, stranger deleted).
    assert report.rows_changed == 4
    assert await projected(service.pool) == history


async def test_an_interrupted_rebuild_resumes_where_it_stopped(
    service: JobService, history: dict[object, JobView]
) -> None:
    seen: list[int] = []

    def stop_after_two_batches(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 2:
            raise Interrupted

    await service.pool.execute("UPDATE jobs SET priority = 42")  # damage the live view
    with pytest.raises(Interrupted):
        await rebuild(service.pool, batch=50, progress=stop_after_two_batches)
    state = await service.pool.fetchrow("SELECT * FROM projection_rebuilds")
    assert state["streams"] == 100 and state["events"] == seen[1]
    assert await service.pool.fetchval("SELECT count(*) FROM jobs_rebuild") == 100
    # Readers still see the old (damaged) rows: nothing was swapped in.
    assert {v.priority for v in (await projected(service.pool)).values()} == {42}

    # Meanwhile the log moves on: new jobs, and new events on streams already rebuilt.
    active = [v.id for v in history.values() if v.state in (JobState.QUEUED, JobState.RUNNING)]
    early = sorted(active, key=str)[:5]
    for job_id in early:
        await service.execute(job_id, RequestCancel(reason="late"), META)
    for _ in range(7):
        await service.submit(spec(), META)

    report = await rebuild(service.pool, batch=50)
    assert report.resumed
    assert report.jobs == 337
    assert report.late_streams == 12  # every stream written since the start is re-read
    assert await projected(service.pool) == await folded_log(service)


async def test_restart_discards_an_interrupted_rebuild(
    service: JobService, history: dict[object, JobView]
) -> None:
    await interrupted_after_first_batch(service)
    report = await rebuild(service.pool, batch=50, restart=True)
    assert not report.resumed and report.jobs == 330
    assert await projected(service.pool) == history


async def test_rebuild_beside_live_appends_and_readers(
    service: JobService, history: dict[object, JobView]
) -> None:
    """Writers keep appending during the rebuild; readers never see a job vanish or go back
    to an older version; afterwards the projection is exactly the fold of the log."""
    stop = asyncio.Event()
    queued = [v.id for v in history.values() if v.state == JobState.QUEUED]
    versions_seen: dict[object, int] = {}
    regressions: list[object] = []

    async def write() -> None:
        n = 0
        while not stop.is_set():
            view, _ = await service.submit(spec(labels={"live": str(n)}), META)
            with contextlib.suppress(DomainError):
                await service.execute(queued[n % len(queued)], Start(worker_id="w9"), META)
            await service.execute(view.id, Start(worker_id="w9"), META)
            n += 1

    async def read() -> None:
        while not stop.is_set():
            for row in await service.pool.fetch("SELECT id, version FROM jobs"):
                if row["version"] < versions_seen.get(row["id"], 0):
                    regressions.append(row["id"])
                versions_seen[row["id"]] = row["version"]
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(write()), asyncio.create_task(read())]
    try:
        report = await rebuild(service.pool, batch=20)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert report.jobs >= 330
    assert regressions == []
    live = await projected(service.pool)
    assert len(live) > 330  # the writer got work in while the rebuild ran
    assert set(history) <= set(versions_seen)
    assert live == await folded_log(service)


async def test_a_shadow_table_emptied_by_a_crash_means_starting_over(
    service: JobService, history: dict[object, JobView]
) -> None:
    await interrupted_after_first_batch(service)
    # What crash recovery does to an unlogged table.
    await service.pool.execute("TRUNCATE jobs_rebuild")
    report = await rebuild(service.pool, batch=50)
    assert not report.resumed and report.jobs == 330
    assert await projected(service.pool) == history
