"""I4: optimistic concurrency. Every version is written exactly once; losers get a typed
conflict; the service re-runs `decide` on fresh state."""

from __future__ import annotations

import asyncio

import pytest

from server.domain.errors import ConcurrencyError, InvalidTransition
from server.domain.events import EventMeta, JobQueued
from server.domain.jobs import JobState, Start
from server.ids import uuid7
from server.service import JobService
from server.store.eventstore import EventStore
from tests.factories import spec

META = EventMeta(actor="test")


async def test_concurrent_appenders_write_every_version_exactly_once(store: EventStore) -> None:
    stream = uuid7()
    await store.append(stream, 0, [JobQueued(reason="seed")], META)
    writers, per_writer = 16, 5
    conflicts: list[Exception] = []

    async def writer(n: int) -> None:
        done = 0
        while done < per_writer:
            head = (await store.read_stream(stream))[-1].version
            try:
                await store.append(stream, head, [JobQueued(reason=f"{n}-{done}")], META)
                done += 1
            except ConcurrencyError as exc:
                conflicts.append(exc)

    await asyncio.gather(*(writer(n) for n in range(writers)))

    events = await store.read_stream(stream)
    assert [e.version for e in events] == list(range(1, writers * per_writer + 2))
    reasons = [e.event.reason for e in events[1:]]  # type: ignore[union-attr]
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
        await store.append(stream, expected, [JobQueued(reason="late")], META)
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
