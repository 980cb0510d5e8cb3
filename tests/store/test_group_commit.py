"""Group commit: concurrent callers share one write, each gets its own answer."""

from __future__ import annotations

import asyncio
import json

import pytest

from jobledger.batching import Batcher
from jobledger.domain.events import EventMeta
from jobledger.service import JobService
from tests.factories import spec


async def test_callers_arriving_during_a_write_share_the_next_one() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def write(batch: list[int]) -> list[int]:
        batches.append(batch)
        await gate.wait()
        if 13 in batch:
            raise ValueError("unlucky batch")
        return [n * 10 for n in batch]

    group: Batcher[int, int] = Batcher(write, max_batch=3)
    first = asyncio.create_task(group(1))
    await asyncio.sleep(0)  # the first write starts alone
    rest = [asyncio.create_task(group(n)) for n in (2, 3, 4, 13, 5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    # The failed batch is split down to the item at fault, which alone gets the error.
    assert batches == [[1], [2, 3, 4], [13, 5], [13], [5]]
    assert results[:4] == [10, 20, 30, 40]
    assert isinstance(results[4], ValueError) and results[5] == 50
    assert await group(6) == 60  # and the next one goes on


async def test_concurrent_submits_share_a_transaction_and_keep_their_own_metadata(
    service: JobService,
) -> None:
    metas = [EventMeta(actor=f"user{n}", request_id=f"req-{n}") for n in range(8)]
    results = await asyncio.gather(*(service.submit(spec(), m) for m in metas))
    assert all(created for _, created in results)
    rows = await service.pool.fetch(
        "SELECT stream_id, meta, txid::text FROM events WHERE stream_id = ANY($1::uuid[])",
        [v.id for v, _ in results],
    )
    by_job = {r["stream_id"]: r for r in rows}
    for (view, _), meta in zip(results, metas, strict=True):
        assert view.submitted_by == meta.actor
        stored = json.loads(by_job[view.id]["meta"])
        assert (stored["actor"], stored["request_id"]) == (meta.actor, meta.request_id)
    assert len({r["txid"] for r in rows}) < len(metas)  # grouped, not one each


async def test_a_bad_spec_in_a_busy_moment_fails_alone(service: JobService) -> None:
    good = [service.submit(spec(), EventMeta(actor="a")) for _ in range(3)]
    bad = service.submit(spec(image="nul\x00"), EventMeta(actor="b"))
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results[:3])
    assert isinstance(results[3], Exception) and "NUL" in str(results[3])
    with pytest.raises(Exception, match="NUL"):
        await service.submit(spec(command=["\x00"]), EventMeta(actor="c"))
