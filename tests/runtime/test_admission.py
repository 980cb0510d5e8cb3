"""The admission policy against a real database: the claim's SQL prefilter never hides a
job the policy admits, the claim picks what the policy picks, the API's `waiting_reason` is
the policy's, and a submit's response carries the reason read in its own transaction."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from jobledger.administration import AccessService
from jobledger.domain import admission
from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import ACTIVE_STATES, Command, Finish, JobState, RequestCancel, Start
from jobledger.domain.specs import DEFAULT_MAX_RUNNING_JOBS, RetryPolicy
from jobledger.projections import queue
from jobledger.projections.jobs import JobView, view_from_row
from jobledger.runtime import claims
from jobledger.runtime.scheduler import QUERIES as SCHEDULER_QUERIES
from jobledger.service import JobService
from tests.factories import spec

META = EventMeta(actor="test")
PROJECTS = ["etl", "web", "ml"]
KEYS = [None, None, "nightly", "report"]
TAGS = ["gpu", "big", "arm"]
#: Tag sets a claiming worker may have.
CLAIMERS = [[], ["gpu"], ["big", "gpu"], ["arm", "big", "gpu"]]

Client = TestClient  # type: ignore[type-arg]


async def register(pool: asyncpg.Pool, worker_id: str, tags: list[str]) -> None:
    await pool.execute(
        SCHEDULER_QUERIES["register_worker"], worker_id, tags, 4, 3600.0, "noop", "test", 1, None
    )


async def random_world(service: JobService, rng: random.Random) -> list[frozenset[str]]:
    """Queued and running jobs across projects, keys, limits, tags and times, and workers
    (some not live); returns the tag sets of the live workers."""
    pool = service.pool
    for project in rng.sample(PROJECTS, 2):  # the third keeps the default limit
        await AccessService(pool).set_limits(project, rng.randint(0, 3), meta=META)
    live = [sorted(rng.sample(TAGS, rng.randint(0, 2))) for _ in range(rng.randint(0, 2))]
    for n, tags in enumerate(live):
        await register(pool, f"live-{n}", tags)
    await register(pool, "stopped", TAGS)
    await pool.execute(SCHEDULER_QUERIES["worker_stopped"], "stopped")
    await register(pool, "expired", TAGS)
    await pool.execute(
        "UPDATE workers SET heartbeat_at = clock_timestamp() - interval '2 hours'"
        " WHERE id = 'expired'"
    )
    now: datetime = await pool.fetchval("SELECT clock_timestamp()")
    specs = [
        spec(
            project=rng.choice(PROJECTS),
            priority=rng.randint(0, 2),
            tags=sorted(rng.sample(TAGS, rng.choice([0, 0, 1, 2]))),
            concurrency_key=rng.choice(KEYS),
            concurrency_limit=rng.randint(1, 2),
            scheduled_for=rng.choice(
                [None, None, now - timedelta(hours=1), now + timedelta(hours=1)]
            ),
            retry=RetryPolicy(max_retries=2, backoff_seconds=rng.choice([0, 7200])),
        )
        for _ in range(45)
    ]
    views = [v for v, _ in await service.submit_batch(specs, META)]
    # Some run (whatever the limits say: running sets may exceed them), some of those are
    # being cancelled, end, or fail and go back to the queue with a note ("retry 1 of 2").
    started = rng.sample(views, 22)
    await service.execute_many({v.id: Start(worker_id="elsewhere") for v in started}, META)
    outcomes: dict[uuid.UUID, Command] = {}
    for v in started[:10]:
        outcomes[v.id] = rng.choice(
            [RequestCancel(reason="test"), Finish(exit_code=0), Finish(exit_code=1)]
        )
    await service.execute_many(outcomes, META)
    return [frozenset(tags) for tags in live]


async def all_jobs(pool: asyncpg.Pool) -> list[JobView]:
    return [view_from_row(r) for r in await pool.fetch("SELECT * FROM jobs")]


async def facts_of(
    pool: asyncpg.Pool,
    views: list[JobView],
    worker_tags: list[frozenset[str]],
    ending: frozenset[uuid.UUID] = frozenset(),
) -> admission.Facts:
    """The policy's facts, counted here from the rows (not by the queries under test)."""
    running = [v for v in views if v.state in ACTIVE_STATES and v.id not in ending]
    limits = await pool.fetch("SELECT name, max_running_jobs FROM projects")
    return admission.Facts(
        now=await pool.fetchval("SELECT clock_timestamp()"),
        project_running=dict(Counter(v.project for v in running)),
        key_running=dict(Counter(v.concurrency_key for v in running if v.concurrency_key)),
        project_limits={r["name"]: r["max_running_jobs"] for r in limits},
        default_project_limit=DEFAULT_MAX_RUNNING_JOBS,
        worker_tags=worker_tags,
    )


def claim_order(v: JobView) -> tuple[Any, ...]:
    """The order the claim takes candidates in (claim_candidates' ORDER BY)."""
    return (-v.priority, v.scheduled_for or v.created_at, v.created_at, v.id)


@pytest.mark.parametrize("seed", range(4))
async def test_the_prefilter_never_hides_a_job_the_policy_admits(
    service: JobService, seed: int
) -> None:
    rng = random.Random(seed)
    await random_world(service, rng)
    views = await all_jobs(service.pool)
    queued = sorted((v for v in views if v.state is JobState.QUEUED), key=claim_order)
    running = [v.id for v in views if v.state in ACTIVE_STATES]
    admitted_somewhere = 0
    for tags in CLAIMERS:
        for ending in (frozenset(), frozenset(rng.sample(running, min(4, len(running))))):
            rows = await service.pool.fetch(
                claims.QUERIES["claim_candidates"],
                tags, DEFAULT_MAX_RUNNING_JOBS, 1000, list(ending), True,
            )  # fmt: skip
            facts = await facts_of(service.pool, views, [frozenset(tags)], ending)
            admitted = {
                v.id for v in queued if admission.admit(queue.candidate_of(v), facts).admitted
            }
            assert admitted <= {r["id"] for r in rows}
            admitted_somewhere += len(admitted)
            # And the claim's pick from the prefiltered rows is the policy's pick from the
            # whole queue.
            for n in (1, 3, 50):
                expected = admission.pick([queue.candidate_of(v) for v in queued], facts, n)
                assert [r["id"] for r in claims.pick(rows, tags, n)] == [c.id for c in expected]
    assert admitted_somewhere > 0  # the world let something start: the check had teeth


@pytest.mark.parametrize("seed", range(4, 7))
async def test_the_api_waiting_reason_is_the_policys(
    service: JobService, client: Client, seed: int
) -> None:
    live = await random_world(service, random.Random(seed))
    views = await all_jobs(service.pool)
    facts = await facts_of(service.pool, views, live)
    reasons: Counter[admission.Reason | None] = Counter()
    for v in views:
        resp = await client.get(f"/api/v1/jobs/{v.id}")
        assert resp.status == 200
        shown = (await resp.json())["waiting_reason"]
        if v.state is JobState.QUEUED:
            verdict = admission.admit(queue.candidate_of(v), facts)
            assert shown == verdict.message, v
            reasons[verdict.reason] += 1
        else:
            assert shown is None
    assert len(reasons) >= 2  # more than one kind of answer was compared


async def test_a_submit_response_carries_the_reason_read_in_its_transaction(
    service: JobService, client: Client, pool: asyncpg.Pool
) -> None:
    await AccessService(pool).set_limits("full", 0, meta=META)
    # Hold the workers table: the submit's facts read waits for it. If that read came after
    # the commit, the job would be visible while the request waits.
    async with pool.acquire() as blocker:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE workers IN ACCESS EXCLUSIVE MODE")
        posted = asyncio.create_task(
            client.post("/api/v1/jobs", json={"image": "x:1", "project": "full", "tags": ["gpu"]})
        )
        async with asyncio.timeout(20):
            while not await pool.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " WHERE c.relname = 'workers' AND NOT l.granted"
            ):
                await asyncio.sleep(0.02)
        assert await pool.fetchval("SELECT count(*) FROM jobs") == 0  # not committed yet
        # What the submit's transaction will see once the lock is gone: a worker with the
        # job's tags, so the reason is the project's limit, not a missing worker.
        await blocker.execute(SCHEDULER_QUERIES["register_worker"], "gpu-1", ["gpu"], 1, 3600.0,
                              "noop", "test", 1, None)  # fmt: skip
        await tx.commit()
        resp = await posted
    assert resp.status == 201
    body = await resp.json()
    assert body["waiting_reason"] == "project full has 0 running jobs, its limit is 0"
    assert (await client.get(f"/api/v1/jobs/{body['id']}")).status == 200


async def test_a_batch_submit_carries_each_reason_and_an_earlier_jobs(
    client: Client, pool: asyncpg.Pool
) -> None:
    await register(pool, "plain", [])
    first = await client.post(
        "/api/v1/jobs", json={"image": "x:1", "idempotency_key": "k1", "tags": ["gpu"]}
    )
    assert (await first.json())["waiting_reason"] == "no live worker with tags gpu"
    later = "2100-01-01T00:00:00+00:00"
    resp = await client.post(
        "/api/v1/jobs:batch",
        json={"jobs": [
            {"image": "x:1", "idempotency_key": "k1", "tags": ["gpu"]},  # the earlier job
            {"image": "x:1", "scheduled_for": later},
            {"image": "x:1"},
        ]},
    )  # fmt: skip
    assert resp.status == 201
    reasons = [j["waiting_reason"] for j in (await resp.json())["jobs"]]
    assert reasons == [
        "no live worker with tags gpu",
        f"scheduled for {later}",
        "waiting for a free worker slot",
    ]
