"""I4: optimistic concurrency. Every version is written exactly once; losers get a typed
conflict; the service re-runs `decide` on fresh state."""

from __future__ import annotations

import asyncio

import pytest

from jobledger.domain.errors import ConcurrencyError, InvalidTransition
from jobledger.domain.events import EventMeta, JobQueued
from jobledger.domain.jobs import Finish, JobState, Start
from jobledger.ids import uuid7
from jobledger.projections import jobs as jobs_projection
from jobledger.service import JobService
from jobledger.store.eventstore import EventStore
from tests.factories import spec

META = EventMeta(actor="test")


async def test_concurrent_appenders_write_every_version_exactly_once(store: EventStore) -> None:
    stream = uuid7()
    await store.append(stream, 0, [JobQueued(requeue_reason="seed")], META)
    writers, per_writer = 16, 5
    conflicts: list[Exception] = []

    async def writer(n: int) -> None:
        done = 0
        while done < per_writer:
            head = (await store.read_stream(stream))[-1].version
            try:
                await store.append(stream, head, [JobQueued(requeue_reason=f"{n}-{done}")], META)
                done += 1
            except ConcurrencyError as exc:
                conflicts.append(exc)

    await asyncio.gather(*(writer(n) for n in range(writers)))

    events = await store.read_stream(stream)
    assert [e.version for e in events] == list(range(1, writers * per_writer + 2))
    reasons = [e.event.requeue_reason for e in events[1:]]  # type: ignore[union-attr]
    assert sorted(reasons) == sorted(f"{n}-{k}" for n in range(writers) for k in range(per_writer))
    assert conflicts, "16 writers on one stream should have collided at least once"
    assert all(
        isinstance(c, ConcurrencyError) and c.details["stream_ids"] == [str(stream)]
        for c in conflicts
    )


@pytest.mark.parametrize("expected", [0, 1, 3])
async def test_append_at_a_wrong_version_is_a_conflict_and_writes_nothing(
    store: EventStore, expected: int
) -> None:
    stream = uuid7()
    await store.append(stream, 0, [JobQueued(), JobQueued()], META)  # stream at version 2
    with pytest.raises(ConcurrencyError):
        await store.append(stream, expected, [JobQueued(requeue_reason="late")], META)
    assert [e.version for e in await store.read_stream(stream)] == [1, 2]


async def test_service_decides_again_on_fresh_state(service: JobService) -> None:
    view, _ = await service.submit(spec(), META)
    results = await asyncio.gather(
        *(service.execute(view.id, Start(worker_id=f"w{n}"), META) for n in range(10)),
        return_exceptions=True,
    )
    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    # Exactly one worker wins; the others saw the fresh (running) state and were refused.
    assert len(started) == 1 and started[0].state is JobState.RUNNING
    assert len(refused) == 9 and all(isinstance(r, InvalidTransition) for r in refused)
    events = await service.store.read_stream(view.id)
    assert [type(e.event).__name__ for e in events] == ["JobSubmitted", "JobStarted"]


async def test_a_stale_row_is_refused_by_the_version_check(service: JobService) -> None:
    view, _ = await service.submit(spec(), META)
    stale = jobs_projection.job_of(view)  # queued, version 1
    await service.execute(view.id, Start(worker_id="w1"), META)
    async with service.pool.acquire() as conn:
        with pytest.raises(ConcurrencyError):
            async with conn.transaction():
                await service.execute_batch(
                    {view.id: Start(worker_id="w2")}, META, conn, {view.id: stale}
                )
    events = await service.store.read_stream(view.id)
    assert [e.event.worker_id for e in events[1:]] == ["w1"]  # type: ignore[attr-defined]


async def test_outcomes_in_one_transaction_each_get_their_own_answer(
    service: JobService,
) -> None:
    running = []
    for _ in range(3):
        view, _ = await service.submit(spec(), META)
        running.append((await service.execute(view.id, Start(worker_id="w1"), META)).id)
    queued, _ = await service.submit(spec(), META)  # Finish is refused: it never started
    results = await service.execute_many(
        {running[0]: Finish(exit_code=0), running[1]: Finish(exit_code=2),
         running[2]: Finish(exit_code=0), queued.id: Finish(exit_code=0)},
        META,
    )  # fmt: skip
    states = {i: r.state if not isinstance(r, Exception) else r for i, r in results.items()}
    assert states[running[0]] is JobState.SUCCEEDED and states[running[2]] is JobState.SUCCEEDED
    assert states[running[1]] is JobState.FAILED
    assert isinstance(states[queued.id], InvalidTransition)
    txids = await service.pool.fetch(
        "SELECT DISTINCT txid FROM events WHERE version = 3 AND stream_id = ANY($1::uuid[])",
        running,
    )
    assert len(txids) == 1  # one transaction for all three outcomes
    assert (await service.pool.fetchval("SELECT state FROM jobs WHERE id = $1", queued.id)) == (
        "queued"
    )
