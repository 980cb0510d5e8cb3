"""Export → import reproduces the log and its projections; a damaged or partial export is
refused whole; time travel shows each historic state; tail follows new events."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import pytest

from jobledger.domain.errors import NotFound
from jobledger.domain.jobs import Finish, JobState, RequestCancel, Start
from jobledger.projections.jobs import JobView, view_from_row
from jobledger.replay.archive import (
    ImportRefused,
    export,
    import_lines,
    stream_at,
    tail,
    tail_start,
)
from jobledger.replay.rebuild import rebuild
from jobledger.replay.verify import Verifier
from jobledger.service import JobService
from tests.factories import spec
from tests.histories import META, write_mixed_history


async def lines_of(pool: asyncpg.Pool, **filters: object) -> list[bytes]:
    return [line async for line in export(pool, **filters)]  # type: ignore[arg-type]


async def table(pool: asyncpg.Pool, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await pool.fetch(sql)]


async def views(pool: asyncpg.Pool) -> list[JobView]:
    return [view_from_row(r) for r in await pool.fetch("SELECT * FROM jobs ORDER BY id")]


EVENTS = "SELECT position, event_id, stream_id, version, type, data, meta, recorded_at, hash "
EVENTS += "FROM events ORDER BY position"


async def test_export_then_import_reproduces_the_log_and_projections(
    service: JobService, other_pool: asyncpg.Pool
) -> None:
    await write_mixed_history(service, 90)
    lines = await lines_of(service.pool)
    assert len(lines) == await service.pool.fetchval("SELECT count(*) FROM events")
    assert await import_lines(other_pool, lines, batch=37) == len(lines)
    await rebuild(other_pool)

    assert await table(other_pool, EVENTS) == await table(service.pool, EVENTS)
    assert await views(other_pool) == await views(service.pool)
    verifier = Verifier(other_pool)
    assert [p async for p in verifier.problems()] == []
    # The position counter continues after the imported events.
    other = JobService(type(service.store)(other_pool))
    view, _ = await other.submit(spec(), META)
    assert view.last_position > max(msgspec.json.decode(ln)["position"] for ln in lines)


async def test_an_altered_export_is_refused_and_nothing_is_imported(
    service: JobService, other_pool: asyncpg.Pool
) -> None:
    await write_mixed_history(service, 20)
    lines = await lines_of(service.pool)
    obj = msgspec.json.decode(lines[5])
    obj["meta"]["actor"] = "forged"
    lines[5] = msgspec.json.encode(obj) + b"\n"
    with pytest.raises(ImportRefused, match="line 6: the hash does not match"):
        await import_lines(other_pool, lines, batch=4)
    assert await other_pool.fetchval("SELECT count(*) FROM events") == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json\n", "line 2: not an exported event"),
        (b'{"position": 1}\n', "line 2: not an exported event"),
    ],
)
async def test_garbage_lines_are_refused(
    service: JobService, other_pool: asyncpg.Pool, line: bytes, message: str
) -> None:
    await service.submit(spec(), META)
    lines = await lines_of(service.pool)
    with pytest.raises(ImportRefused, match=message):
        await import_lines(other_pool, [lines[0], line, *lines[1:]])
    assert await other_pool.fetchval("SELECT count(*) FROM events") == 0


async def test_an_event_of_an_unknown_type_is_refused(
    service: JobService, other_pool: asyncpg.Pool
) -> None:
    job, _ = await service.submit(spec(), META)
    await service.execute(job.id, Start(worker_id="w1"), META)
    lines = await lines_of(service.pool)
    obj = msgspec.json.decode(lines[1])
    obj["type"] = obj["data"]["type"] = "JobExploded"
    with pytest.raises(ImportRefused, match=r"line 2: .*unknown event type 'JobExploded'"):
        await import_lines(other_pool, [lines[0], msgspec.json.encode(obj)])


async def test_import_needs_an_empty_log(service: JobService) -> None:
    await service.submit(spec(), META)
    lines = await lines_of(service.pool)
    with pytest.raises(ImportRefused, match="already has events"):
        await import_lines(service.pool, lines)


async def test_export_filters_by_project_and_time_and_partial_streams_cannot_be_imported(
    service: JobService, other_pool: asyncpg.Pool
) -> None:
    await write_mixed_history(service, 20)  # projects p0 and p1 alternate
    p1 = [msgspec.json.decode(ln) for ln in await lines_of(service.pool, project="p1")]
    p1_jobs = {
        r["id"] for r in await service.pool.fetch("SELECT id FROM jobs WHERE project = 'p1'")
    }
    assert {uuid.UUID(e["stream_id"]) for e in p1} == p1_jobs and len(p1_jobs) == 10
    assert len(p1) == await service.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = ANY($1::uuid[])", list(p1_jobs)
    )

    times = await service.pool.fetch("SELECT recorded_at FROM events ORDER BY position")
    middle = times[len(times) // 2]["recorded_at"]
    later = await lines_of(service.pool, since=middle)
    earlier = await lines_of(service.pool, until=middle)
    assert len(later) + len(earlier) == len(times)
    assert await lines_of(service.pool, since=middle, until=middle + timedelta(0)) == []
    with pytest.raises(ImportRefused, match="does not follow its previous version"):
        await import_lines(other_pool, later)


async def test_time_travel_shows_every_historic_state(service: JobService) -> None:
    view, _ = await service.submit(spec(), META)
    for command in (Start(worker_id="w1"), RequestCancel(reason="stop"), Finish(exit_code=0)):
        await service.execute(view.id, command, META)
    rows = await service.pool.fetch(
        "SELECT position, recorded_at FROM events WHERE stream_id = $1 ORDER BY version", view.id
    )
    states = []
    for row in rows:
        by_position = await stream_at(service.pool, "job", view.id, position=row["position"])
        by_time = await stream_at(service.pool, "job", view.id, at=row["recorded_at"])
        assert by_position == by_time
        assert by_position.as_of_position == row["position"]
        states.append(by_position.state.state)
    assert states == [
        JobState.QUEUED,  # JobSubmitted
        JobState.RUNNING,
        JobState.CANCELLING,
        JobState.CANCELLED,  # ended after a cancel request: recorded as cancelled
    ]
    now = await stream_at(service.pool, "job", view.id)
    assert now.state == view_from_row(await service.pool.fetchrow("SELECT * FROM jobs"))
    with pytest.raises(NotFound):
        await stream_at(service.pool, "job", view.id, position=rows[0]["position"] - 1)
    with pytest.raises(NotFound):
        await stream_at(service.pool, "job", uuid.uuid4())


async def test_tail_follows_new_events_only_unless_from_start(service: JobService) -> None:
    old, _ = await service.submit(spec(), META)

    async def first(n: int, from_start: bool = False) -> list[dict[str, object]]:
        out = []
        async for line in tail(service.pool, await tail_start(service.pool, from_start=from_start)):
            out.append(msgspec.json.decode(line))
            if len(out) == n:
                return out
        raise AssertionError("tail ended")

    following = asyncio.create_task(first(2))
    await asyncio.sleep(0.3)  # the tail has taken its starting point
    new, _ = await service.submit(spec(), META)
    await service.execute(new.id, Start(worker_id="w1"), META)
    got = await asyncio.wait_for(following, 10)
    assert [(e["stream_id"], e["version"], e["type"]) for e in got] == [
        (str(new.id), 1, "JobSubmitted"),
        (str(new.id), 2, "JobStarted"),
    ]
    everything = await asyncio.wait_for(first(3, from_start=True), 10)
    assert [e["stream_id"] for e in everything] == [str(old.id)] + [str(new.id)] * 2
