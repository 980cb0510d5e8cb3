"""I5: a catch-up reader of the global log never skips an event that commits late and never
delivers one twice."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from jobledger.domain.events import EventMeta, JobQueued, Recorded
from jobledger.ids import uuid7
from jobledger.store.eventstore import Announce, Checkpoint, EventStore, LogEntry

META = EventMeta(actor="test")


def holding(gate: asyncio.Event, inserted: asyncio.Event):  # type: ignore[no-untyped-def]
    """An inline hook that keeps the append transaction open until `gate` is set."""

    async def hook(conn: asyncpg.Connection, recorded: list[Recorded], _: Announce) -> None:
        inserted.set()
        await gate.wait()

    return hook


async def test_late_commit_is_neither_skipped_nor_duplicated(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    early, late = uuid7(), uuid7()
    gate, inserted = asyncio.Event(), asyncio.Event()
    held = asyncio.create_task(
        store.append(
            early, 0, [JobQueued(requeue_reason="A")], META, inline=holding(gate, inserted)
        )
    )
    await inserted.wait()  # A has its position and stays uncommitted
    await store.append(
        late, 0, [JobQueued(requeue_reason="B")], META
    )  # B: higher position, commits first

    # The hazard is real: by position alone, B is visible past A's hole.
    positions = [r["position"] for r in await pool.fetch("SELECT position FROM events")]
    assert len(positions) == 1

    checkpoint = Checkpoint()
    seen: list[LogEntry] = await store.read_all(checkpoint)
    assert seen == []  # B is held back while A may still commit before it
    gate.set()
    [a] = await held
    page = await store.read_all(checkpoint)
    delivered = [e.record.event.requeue_reason for e in page]  # type: ignore[union-attr]
    assert delivered == ["A", "B"]
    assert page[0].record.position == a.position < page[1].record.position
    assert await store.read_all(page[-1].checkpoint) == []  # nothing twice


async def test_rolled_back_append_leaves_no_event_and_does_not_stall(store: EventStore) -> None:
    gate, inserted = asyncio.Event(), asyncio.Event()

    async def fail_after_insert(
        conn: asyncpg.Connection, recorded: list[Recorded], _: Announce
    ) -> None:
        inserted.set()
        await gate.wait()
        raise RuntimeError("abort the append")

    doomed = asyncio.create_task(
        store.append(uuid7(), 0, [JobQueued(requeue_reason="X")], META, inline=fail_after_insert)
    )
    await inserted.wait()
    await store.append(uuid7(), 0, [JobQueued(requeue_reason="Y")], META)
    assert await store.read_all() == []
    gate.set()
    assert isinstance((await asyncio.gather(doomed, return_exceptions=True))[0], RuntimeError)
    assert [e.record.event.requeue_reason for e in await store.read_all()] == ["Y"]  # type: ignore[union-attr]


async def test_subscription_delivers_every_event_once_under_concurrent_writers(
    store: EventStore,
) -> None:
    writers, per_writer = 8, 10
    total = writers * per_writer
    got: list[LogEntry] = []

    async def consume() -> None:
        async for entry in store.subscribe(poll_interval=0.05, batch=7):
            got.append(entry)
            if len(got) == total:
                return

    async def write(n: int) -> None:
        rng = random.Random(n)
        for k in range(per_writer):
            gate, inserted = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(
                store.append(
                    uuid7(),
                    0,
                    [JobQueued(requeue_reason=f"{n}-{k}")],
                    META,
                    inline=holding(gate, inserted),
                )
            )
            await inserted.wait()
            await asyncio.sleep(rng.uniform(0, 0.01))  # commit in a scrambled order
            gate.set()
            await task

    consumer = asyncio.create_task(consume())
    await asyncio.gather(*(write(n) for n in range(writers)))
    await asyncio.wait_for(consumer, 30)

    reasons = [e.record.event.requeue_reason for e in got]  # type: ignore[union-attr]
    assert sorted(reasons) == sorted(f"{n}-{k}" for n in range(writers) for k in range(per_writer))
    checkpoints = [e.checkpoint for e in got]
    assert checkpoints == sorted(checkpoints) and len(set(checkpoints)) == total


async def test_read_all_pages_through_the_whole_log(store: EventStore) -> None:
    streams = [uuid7() for _ in range(5)]
    for s in streams:
        await store.append(
            s, 0, [JobQueued(requeue_reason="1"), JobQueued(requeue_reason="2")], META
        )
    checkpoint, seen = Checkpoint(), []
    while page := await store.read_all(checkpoint, limit=3):
        seen.extend(page)
        checkpoint = page[-1].checkpoint
    assert [(e.record.stream_id, e.record.version) for e in seen] == [
        (s, v) for s in streams for v in (1, 2)
    ]
