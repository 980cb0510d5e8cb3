"""Batching of concurrent callers: those that arrive while a batch is in flight wait
together and go into the next one. For writes it is a group commit (concurrent submits
share one transaction and one fsync); for reads, one query answers every waiting request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`await batcher(item)` returns the item's result from `write(batch)`, which gets
    every item waiting (up to `max_batch`) and returns their results in order. If `write`
    raises, every item of that batch raises it. No timer: a lone caller goes at once."""

    def __init__(
        self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int = 500
    ) -> None:
        self._write = write
        self._max_batch = max_batch
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
            futures = [f for _, f in batch]
            try:
                results = await self._write([item for item, _ in batch])
            except asyncio.CancelledError:
                for f in futures:
                    f.cancel()
                raise
            except Exception as exc:
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for f, result in zip(futures, results, strict=True):
                if not f.done():
                    f.set_result(result)

    def close(self) -> None:
        """Stop writing; callers still waiting are cancelled."""
        if self._writer is not None:
            self._writer.cancel()
        for _, f in self._waiting:
            f.cancel()
        self._waiting.clear()
