"""Batching of concurrent callers: those that arrive while a batch is in flight wait
together and go into the next one. For writes it is a group commit (concurrent submits
share one transaction and one fsync); for reads, one query answers every waiting request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _always(exc: BaseException) -> bool:
    return True


class Batcher(Generic[T, R]):
    """`await batcher(item)` returns the item's result from `write(batch)`, which gets
    every item waiting (up to `max_batch`) and returns their results in order. No timer: a
    lone caller goes at once.

    One bad item must never fail the others: if `write` raises for a batch of several
    items and `split(exc)` says the batch left nothing behind (a read; a transaction the
    database rolled back), the batch is split in halves and each half written again, down
    to the item at fault, which alone gets the error. Otherwise (e.g. a connection lost at
    commit: whether it committed is unknown, so writing again could write twice) every
    item of the batch gets the error."""

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 500,
        split: Callable[[BaseException], bool] = _always,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._split = split
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="batcher")
        return await done

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                await self._settle(batch)
            except asyncio.CancelledError:
                for _, f in batch:
                    f.cancel()
                raise

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Write a batch and resolve its futures; on an error, split it (see the class)."""
        try:
            results = await self._write([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and self._split(exc):
                half = len(batch) // 2
                await self._settle(batch[:half])
                await self._settle(batch[half:])
                return
            for _, f in batch:
                if not f.done():
                    f.set_exception(exc)
            return
        for (_, f), result in zip(batch, results, strict=True):
            if not f.done():
                f.set_result(result)

    def close(self) -> None:
        """Stop writing; callers still waiting are cancelled."""
        if self._writer is not None:
            self._writer.cancel()
        for _, f in self._waiting:
            f.cancel()
        self._waiting.clear()
