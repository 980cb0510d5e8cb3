"""Schedules fired by real `jobledger worker` processes: three of them fire a schedule every
second, each occurrence once with one job; after all of them stop, the catch-up policy
decides and records the missed occurrences; a worker killed (SIGKILL) between a ScheduleFired
and its job's creation leaves exactly one job for that occurrence after a restart."""

from __future__ import annotations

import asyncio
import signal
import statistics
from datetime import datetime, timedelta

import asyncpg
import msgspec

from jobledger.domain.events import EventMeta
from jobledger.domain.schedules import (
    SCHEDULE,
    CatchUp,
    Overlap,
    ScheduleRun,
    ScheduleSettings,
)
from jobledger.scheduleservice import ScheduleService
from jobledger.service import JobService
from tests.e2e.conftest import Worker
from tests.factories import spec

META = EventMeta(actor="test")
NOOP = ("--executor", "noop", "--poll-interval", "1")


def every_second(**kw: object) -> ScheduleSettings:
    fields: dict[str, object] = {
        "cron": "* * * * * *", "run": ScheduleRun(spec=spec(project="default")),
        "overlap": Overlap.ALLOW, **kw,
    }  # fmt: skip
    return ScheduleSettings(**fields)  # type: ignore[arg-type]


async def records(pool: asyncpg.Pool, name: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT type, data, recorded_at, meta, txid::text AS txid FROM events WHERE stream_id = $1 "
        "AND type IN ('ScheduleFired', 'ScheduleSkipped') ORDER BY version",
        SCHEDULE.stream_id("default", name),
    )


def occurrence(r: asyncpg.Record) -> datetime:
    return datetime.fromisoformat(msgspec.json.decode(r["data"])["occurrence"])


async def until_fired(pool: asyncpg.Pool, name: str, n: int, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while sum(r["type"] == "ScheduleFired" for r in await records(pool, name)) < n:
            await asyncio.sleep(0.2)


async def assert_once_each(pool: asyncpg.Pool, name: str) -> list[asyncpg.Record]:
    """Every occurrence decided once, none left out between the first and the last, and
    each fired one's job created exactly once (and only those)."""
    recs = await records(pool, name)
    times = []
    for r in recs:
        data = msgspec.json.decode(r["data"])
        start = datetime.fromisoformat(data["occurrence"])
        until = datetime.fromisoformat(data["until"]) if data.get("until") else start
        while start <= until:
            times.append(start)
            start += timedelta(seconds=1)
    assert len(times) == len(set(times)), "an occurrence was decided twice"
    assert times == [times[0] + timedelta(seconds=n) for n in range(len(times))], "a gap"
    fired_jobs = [msgspec.json.decode(r["data"])["job_id"] for r in recs
                  if r["type"] == "ScheduleFired"]  # fmt: skip
    rows = await pool.fetch(
        "SELECT stream_id::text AS id, count(*) AS n FROM events WHERE type = 'JobSubmitted' "
        "AND stream_id IN (SELECT id FROM jobs WHERE labels ->> 'jobledger.schedule' = $1) "
        "GROUP BY stream_id",
        name,
    )
    assert sorted(r["id"] for r in rows) == sorted(fired_jobs)
    assert {r["n"] for r in rows} <= {1}
    return recs


async def test_three_schedulers_fire_each_occurrence_once_for_30_seconds(
    service: JobService, pool: asyncpg.Pool, dsn: str, workers: list[Worker]
) -> None:
    workers += [Worker(dsn, f"cron-{n}", *NOOP) for n in (1, 2, 3)]
    schedules = ScheduleService(service)
    await schedules.create("default", "tick", every_second(), META)
    await until_fired(pool, "tick", 1, timeout=60)
    await asyncio.sleep(30)  # the test is the passing of time: 30 occurrences
    await schedules.pause("default", "tick", META)
    for w in workers:
        assert w.stop() == 0, w.output()[-2000:]
    recs = await assert_once_each(pool, "tick")
    fired = [r for r in recs if r["type"] == "ScheduleFired"]
    assert len(fired) >= 25
    actors = {msgspec.json.decode(r["meta"])["actor"] for r in fired}
    lags = sorted(msgspec.json.decode(r["data"])["lag_seconds"] for r in fired)
    print(f"\nfired {len(fired)} by {sorted(actors)}, skipped {len(recs) - len(fired)}; "
          f"fire lag p50 {statistics.median(lags) * 1000:.1f} ms, "
          f"max {lags[-1] * 1000:.1f} ms")  # fmt: skip


async def test_after_downtime_the_catch_up_policy_decides_each_missed_occurrence(
    service: JobService, pool: asyncpg.Pool, dsn: str, workers: list[Worker]
) -> None:
    schedules = ScheduleService(service)
    await schedules.create("default", "all2", every_second(catch_up=CatchUp.ALL,
                           catch_up_limit=2), META)  # fmt: skip
    await schedules.create("default", "none", every_second(catch_up=CatchUp.NONE,
                           grace_seconds=1), META)  # fmt: skip
    workers.append(Worker(dsn, "up-down", *NOOP))
    await until_fired(pool, "all2", 2)
    await until_fired(pool, "none", 2)
    assert workers[0].stop() == 0
    stopped_at = await pool.fetchval("SELECT clock_timestamp()")
    await asyncio.sleep(6)  # the downtime: six occurrences pass with no scheduler
    workers.append(Worker(dsn, "up-again", *NOOP))
    await until_fired(pool, "all2", 6)
    await schedules.pause("default", "all2", META)
    await schedules.pause("default", "none", META)
    assert workers[1].stop() == 0

    for name in ("all2", "none"):
        recs = await assert_once_each(pool, name)
        during = [r for r in recs if occurrence(r) > stopped_at + timedelta(seconds=1)]
        # The first decision after the restart handles the whole backlog at once.
        backlog = [r for r in during if r["txid"] == during[0]["txid"]]
        kinds = [(r["type"], msgspec.json.decode(r["data"]).get("reason")) for r in backlog]
        assert len(backlog) >= 5, kinds
        if name == "all2":
            assert kinds[-2:] == [("ScheduleFired", None)] * 2
            assert set(kinds[:-2]) == {("ScheduleSkipped", "missed")}
        else:  # the newest fires only if it is on time (within grace_seconds)
            assert set(kinds[:-1]) == {("ScheduleSkipped", "missed")}


async def test_a_scheduler_killed_between_fired_and_the_job_leaves_one_job(
    service: JobService, pool: asyncpg.Pool, dsn: str, workers: list[Worker]
) -> None:
    schedules = ScheduleService(service)
    async with pool.acquire() as blocker:
        # Job creation waits on this lock; the ScheduleFired append does not touch `jobs`.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")
        workers.append(Worker(dsn, "doomed", *NOOP))
        await schedules.create("default", "crash", every_second(), META)
        async with asyncio.timeout(60):
            while not await pool.fetchval(
                "SELECT count(*) FROM pg_locks WHERE relation = 'jobs'::regclass AND NOT granted"
            ):
                await asyncio.sleep(0.1)
        fired = [r for r in await records(pool, "crash") if r["type"] == "ScheduleFired"]
        assert fired
        assert workers[0].stop(signal.SIGKILL) == -signal.SIGKILL
        await schedules.pause("default", "crash", META)
        await tx.rollback()
    # The dead process's transaction never commits: its fired occurrence has no job.
    job_ids = [msgspec.json.decode(r["data"])["job_id"] for r in fired]
    async with asyncio.timeout(30):
        while await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ):
            await asyncio.sleep(0.1)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = ANY($1::uuid[])", job_ids
        )
        == 0
    )
    workers.append(Worker(dsn, "phoenix", *NOOP))
    async with asyncio.timeout(60):
        while await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[])", job_ids
        ) < len(job_ids):
            await asyncio.sleep(0.2)
    assert workers[1].stop() == 0
    await assert_once_each(pool, "crash")
    submitted = await pool.fetch(
        "SELECT meta FROM events WHERE type = 'JobSubmitted' AND stream_id = ANY($1::uuid[])",
        job_ids,
    )
    assert len(submitted) == len(job_ids)
    assert all('"causation_id"' in r["meta"] for r in submitted)
