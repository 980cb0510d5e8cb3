"""I2: the `jobs` rows are exactly the fold of the log, live and after a rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import random

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.domain.errors import DomainError
from server.domain.events import EventMeta, FailureReason
from server.domain.jobs import (
    Command,
    ConfirmCancelled,
    Fail,
    Finish,
    JobState,
    RequestCancel,
    Start,
    Submit,
    fold,
)
from server.domain.specs import RetryPolicy
from server.projections import jobs as jobs_projection
from server.projections.jobs import JobView, view_from_row, view_of
from server.service import JobService
from tests.factories import commands, spec, submits

META = EventMeta(actor="test")


async def projected(pool: asyncpg.Pool) -> dict[object, JobView]:
    return {r["id"]: view_from_row(r) for r in await pool.fetch("SELECT * FROM jobs")}


async def folded(service: JobService, job_id: object) -> JobView:
    job = fold(await service.store.read_stream(job_id))  # type: ignore[arg-type]
    assert job is not None
    return view_of(job)


def test_view_fields_are_the_table_columns_in_order() -> None:
    sql = jobs_projection.QUERIES["upsert_job"]
    listed = sql[sql.index("(") + 1 : sql.index(")")]
    assert [c.strip() for c in listed.split(",")] == list(jobs_projection.COLUMNS)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(submit=submits, cmds=st.lists(commands, max_size=12))
async def test_projection_row_equals_the_fold_of_the_log(
    service: JobService, submit: Submit, cmds: list[Command]
) -> None:
    view, _ = await service.submit(submit.spec, META)
    for cmd in cmds:
        with contextlib.suppress(DomainError):
            await service.execute(view.id, cmd, META)
    row = await jobs_projection.get(service.pool, view.id)
    assert row == await folded(service, view.id)


LIFECYCLES: list[list[Command]] = [
    [],
    [Start(worker_id="w1")],
    [Start(worker_id="w1"), Finish(exit_code=0)],
    [Start(worker_id="w2"), Finish(exit_code=2)],
    [Start(worker_id="w1"), Finish(exit_code=137, oom_killed=True)],
    [Start(worker_id="w1"), Fail(reason=FailureReason.TIMEOUT, exit_code=143)],
    [Start(worker_id="w1"), Fail(reason=FailureReason.START_ERROR, message="no such image")],
    [RequestCancel(reason="user")],
    [Start(worker_id="w1"), RequestCancel()],
    [Start(worker_id="w1"), RequestCancel(), ConfirmCancelled(exit_code=143)],
    [
        Start(worker_id="w1"),
        Finish(exit_code=1),
        Start(worker_id="w2"),
        Finish(exit_code=0),
    ],  # retried
]


async def test_rebuild_reproduces_the_live_rows(service: JobService, pool: asyncpg.Pool) -> None:
    rng = random.Random(7)

    async def one(n: int) -> None:
        retrying = n % 3 == 0
        s = spec(
            priority=rng.randint(-5, 5),
            labels={"n": str(n % 4)},
            retry=RetryPolicy(max_retries=1 if retrying else 0, backoff_seconds=0),
        )
        view, _ = await service.submit(s, EventMeta(actor=f"user{n % 3}", request_id=f"r{n}"))
        for cmd in LIFECYCLES[n % len(LIFECYCLES)]:
            # Some are refused, e.g. the second Start of a job that was not retried.
            with contextlib.suppress(DomainError):
                await service.execute(view.id, cmd, META)

    for chunk in range(0, 330, 30):
        await asyncio.gather(*(one(n) for n in range(chunk, chunk + 30)))

    live = await projected(pool)
    assert len(live) == 330
    assert {v.state for v in live.values()} == set(JobState)  # every state is represented
    assert await jobs_projection.rebuild(pool, batch=50) == 330
    assert await projected(pool) == live
    for job_id in list(live)[:20]:
        assert live[job_id] == await folded(service, job_id)
