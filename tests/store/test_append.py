"""Appends to several streams at once: all or nothing, one NOTIFY listing ids only."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest

from jobledger.domain.errors import ConcurrencyError
from jobledger.domain.events import EventMeta, JobQueued
from jobledger.ids import uuid7
from jobledger.store.eventstore import MAX_NOTIFIED_CHANGES, AppendItem, EventStore, Notification

META = EventMeta(actor="test", request_id="r1")


async def test_a_stream_behind_its_expected_version_rolls_back_the_whole_batch(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    ahead = uuid7()
    await store.append(ahead, 0, [JobQueued()], META)
    fresh = uuid7()
    with pytest.raises(ConcurrencyError) as err:
        await store.append_many(
            [AppendItem(fresh, 0, [JobQueued()]), AppendItem(ahead, 5, [JobQueued()])], META
        )
    assert err.value.details["stream_ids"] == [str(ahead)]
    assert await pool.fetchval("SELECT count(*) FROM events") == 1  # `fresh` was not written


async def test_one_notification_per_append_listing_ids_only(store: EventStore, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    got: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener(store.channel, lambda *args: got.put_nowait(args[3]))
    try:
        small = [
            AppendItem(uuid7(), 0, [JobQueued(requeue_reason="secret text")]) for _ in range(3)
        ]
        await store.append_many(small, META)
        big = [AppendItem(uuid7(), 0, [JobQueued(), JobQueued()]) for _ in range(100)]
        await store.append_many(big, META)
        first = msgspec.json.decode(await asyncio.wait_for(got.get(), 5), type=Notification)
        second = msgspec.json.decode(await asyncio.wait_for(got.get(), 5), type=Notification)
    finally:
        await conn.close()
    assert [c.stream_id for c in first.changes] == [i.stream_id for i in small]
    assert not first.more
    assert len(second.changes) == MAX_NOTIFIED_CHANGES and second.more
    assert all(c.version == 2 for c in second.changes)
    assert got.empty()
