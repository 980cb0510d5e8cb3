"""Claims: what is taken, in which order, and what the claim hands over."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

from jobledger.administration import AccessService
from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import Finish, JobState
from jobledger.domain.specs import DEFAULT_MAX_RUNNING_JOBS
from jobledger.runtime.claims import QUOTA_LOCKS, claim
from jobledger.service import JobService
from tests.factories import spec

META = EventMeta(actor="test")


async def test_jobs_waiting_for_a_later_time_are_passed_over_whatever_their_priority(
    service: JobService,
) -> None:
    now = await service.pool.fetchval("SELECT clock_timestamp()")
    later = now + timedelta(hours=1)
    for _ in range(30):  # more than a page of candidates, all better placed
        await service.submit(spec(priority=9, scheduled_for=later), META)
    due, _ = await service.submit(spec(priority=1, scheduled_for=now - timedelta(seconds=1)), META)
    plain, _ = await service.submit(spec(priority=0), META)
    claimed = (await claim(service, "w1", [], 5)).claimed
    assert [c.job.id for c in claimed] == [due.id, plain.id]
    assert all(c.job.state is JobState.RUNNING and c.job.worker_id == "w1" for c in claimed)
    assert (await claim(service, "w1", [], 5)).claimed == []


async def test_a_claim_hands_over_the_project_log_limit(service: JobService) -> None:
    await AccessService(service.pool).set_limits("logs", None, log_limit_bytes=1234, meta=META)
    limited, _ = await service.submit(spec(project="logs"), META)
    default, _ = await service.submit(spec(project="other"), META)
    claimed = {c.job.id: c.log_limit_bytes for c in (await claim(service, "w1", [], 5)).claimed}
    assert claimed == {limited.id: 1234, default.id: None}


async def test_outcomes_free_their_slots_for_the_claim_in_the_same_transaction(
    service: JobService,
) -> None:
    await AccessService(service.pool).set_limits("tight", 2, meta=META)
    for _ in range(4):
        await service.submit(spec(project="tight"), META)
    first = (await claim(service, "w1", [], 5)).claimed
    assert len(first) == 2  # the project's limit
    ending = {c.job.id: Finish(exit_code=0) for c in first}
    queued_one = (await service.submit(spec(project="tight"), META))[0]
    refused = {queued_one.id: Finish(exit_code=0)}  # never started: refused
    cycle = await claim(service, "w1", [], 5, {**ending, **refused})
    assert {i: j.state for i, j in cycle.recorded.items() if j} == dict.fromkeys(
        ending, JobState.SUCCEEDED
    )
    assert cycle.recorded[queued_one.id] is None
    assert len(cycle.claimed) == 2  # the two slots the outcomes freed, no more
    txids = await service.pool.fetch(
        "SELECT DISTINCT txid FROM events WHERE stream_id = ANY($1::uuid[]) AND version > 1",
        [*ending, *(c.job.id for c in cycle.claimed)],
    )
    assert len(txids) == 2  # the first claim, then outcomes and starts together


async def test_claims_at_once_never_exceed_a_quota_nor_take_a_job_twice(
    service: JobService,
) -> None:
    """Six workers end some of their jobs and claim at once, round after round, over three
    projects (limits 3, 2 and the default 10) and two concurrency keys (limits 1 and 2):
    each claim counts the quotas of what it starts only after the claims of the same
    projects and keys commit. Most lead with the project their last claim found best (as
    a worker's do), some with another or one without jobs."""
    access = AccessService(service.pool)
    await access.set_limits("a", 3, meta=META)
    await access.set_limits("b", 2, meta=META)
    project_limits = {"a": 3, "b": 2, "c": DEFAULT_MAX_RUNNING_JOBS}
    key_limits = {"k1": 1, "k2": 2}
    rng = random.Random(18)
    for _ in range(120):
        key = rng.choice([None, None, "k1", "k2"])
        await service.submit(
            spec(
                project=rng.choice(list(project_limits)),
                concurrency_key=key,
                concurrency_limit=key_limits.get(key, 1),
            ),
            META,
        )
    held: dict[str, list[uuid.UUID]] = {f"w{w}": [] for w in range(6)}
    leads: dict[str, str | None] = dict.fromkeys(held)
    started: list[uuid.UUID] = []
    most = 0
    for _ in range(15):
        ending = {
            w: {i: Finish(exit_code=0) for i in jobs if rng.random() < 0.5}
            for w, jobs in held.items()
        }
        cycles = await asyncio.gather(
            *(
                claim(service, w, [], rng.randint(1, 4), ending[w],
                      lead=rng.choice([leads[w], leads[w], leads[w], "a", "idle", None]))
                for w in held
            )
        )  # fmt: skip
        for (w, jobs), cycle in zip(held.items(), cycles, strict=True):
            leads[w] = cycle.lead
            assert all(cycle.recorded[i] is not None for i in ending[w])
            held[w] = [i for i in jobs if i not in ending[w]] + [c.job.id for c in cycle.claimed]
            started += [c.job.id for c in cycle.claimed]
        rows = await service.pool.fetch(
            "SELECT project, concurrency_key, worker_id, id FROM jobs"
            " WHERE state IN ('running', 'cancelling')"
        )
        for project, n in Counter(r["project"] for r in rows).items():
            assert n <= project_limits[project], (project, n)
        for key, n in Counter(r["concurrency_key"] for r in rows if r["concurrency_key"]).items():
            assert n <= key_limits[key], (key, n)
        assert {r["id"]: r["worker_id"] for r in rows} == {
            i: w for w, jobs in held.items() for i in jobs
        }
        most = max(most, len(rows))
    assert len(started) == len(set(started))  # no job started twice
    assert len(started) > 60 and most >= 10  # the rounds did fill the quotas


@contextlib.asynccontextmanager
async def holding_the_default_project(service: JobService) -> AsyncIterator[None]:
    """Hold project `default`'s quota lock as a claim does, in a transaction that ends with
    the block."""
    async with service.pool.acquire() as holder, holder.transaction():
        await holder.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext('project:default'))", QUOTA_LOCKS
        )
        yield


async def test_a_claim_that_leads_with_a_project_reads_after_the_claim_holding_it_commits(
    service: JobService,
) -> None:
    """Led by a project, a claim waits for its quota lock before it reads: it sees what the
    claim holding the lock committed. Without a lead it reads at once and waits later,
    with the candidates it read then."""
    for lead, expected in (("default", 2), (None, 1)):
        first, _ = await service.submit(spec(), META)
        async with holding_the_default_project(service):
            claiming = asyncio.create_task(claim(service, "w1", [], 5, lead=lead))
            await asyncio.sleep(0.3)
            assert not claiming.done()  # waits for the lock, led or not
            later, _ = await service.submit(spec(), META)  # committed while it waits
        cycle = await claiming
        assert len(cycle.claimed) == expected, lead
        assert cycle.lead == "default"
        ids = {c.job.id for c in cycle.claimed}
        assert first.id in ids and (later.id in ids) == (lead is not None)


async def test_an_outcome_cycle_records_without_waiting_for_its_lead_and_says_so(
    service: JobService,
) -> None:
    """A worker's cycle that records ended jobs only tries its lead's lock: while another
    claim of the project holds it, the outcomes are recorded at once (their slots freed)
    and nothing is started, and the cycle says to claim again; once the lock is free, the
    same cycle starts jobs too."""
    for _ in range(4):
        await service.submit(spec(), META)
    running = [c.job.id for c in (await claim(service, "w1", [], 2)).claimed]
    async with holding_the_default_project(service):
        cycle = await asyncio.wait_for(
            claim(service, "w1", [], 2, {running[0]: Finish(exit_code=0)}, lead="default",
                  wait=False),
            timeout=5,
        )  # fmt: skip
    assert cycle.recorded[running[0]] is not None
    assert cycle.recorded[running[0]].state is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert cycle.claimed == [] and cycle.contended and cycle.lead == "default"
    cycle = await claim(
        service, "w1", [], 2, {running[1]: Finish(exit_code=0)}, lead="default", wait=False
    )
    assert len(cycle.claimed) == 2 and not cycle.contended
