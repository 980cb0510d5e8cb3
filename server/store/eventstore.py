"""The event store: append with optimistic concurrency, read a stream, read the whole log
gap-safely, and follow it live."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import msgspec

from ..domain.errors import ConcurrencyError
from ..domain.events import Event, EventMeta, Recorded, decode_event, encode_event
from .db import Conn
from .queries import QUERIES

#: Channel on which every append announces itself (payload: ids only).
EVENTS_CHANNEL = "jobledger_events"


class Checkpoint(msgspec.Struct, frozen=True, order=True):
    """Where a reader of the global log stands: the last (txid, position) it has seen."""

    txid: int = 0
    position: int = 0


#: The checkpoint before the first event.
START = Checkpoint()


class LogEntry(msgspec.Struct, frozen=True):
    """One event of the global log and the checkpoint a reader resumes after."""

    record: Recorded
    checkpoint: Checkpoint


class Notification(msgspec.Struct, frozen=True):
    """What an append announces: which stream, at which version, in which state."""

    stream_id: uuid.UUID
    version: int
    state: str


#: Runs inside the append transaction after the events are inserted (inline projections);
#: it may return the one notification the transaction sends.
InlineHook = Callable[[Conn, list[Recorded]], Awaitable[Notification | None]]

_meta_decoder = msgspec.json.Decoder(EventMeta)
_encoder = msgspec.json.Encoder()


def record_from_row(row: asyncpg.Record) -> Recorded:
    """Decode one `events` row (upcasting old schema versions)."""
    return Recorded(
        event_id=row["event_id"],
        stream_id=row["stream_id"],
        version=row["version"],
        position=row["position"],
        event=decode_event(row["type"], row["schema_version"], row["data"]),
        meta=_meta_decoder.decode(row["meta"]),
        recorded_at=row["recorded_at"],
    )


class EventStore:
    """Appends to and reads from the `events` table through a pool."""

    def __init__(self, pool: asyncpg.Pool, channel: str = EVENTS_CHANNEL) -> None:
        self.pool = pool
        self.channel = channel

    async def append(
        self,
        stream_id: uuid.UUID,
        expected_version: int,
        events: Sequence[Event],
        meta: EventMeta,
        *,
        inline: InlineHook | None = None,
    ) -> list[Recorded]:
        """Append events after `expected_version` in one transaction with the inline hook and
        one NOTIFY. Raises `ConcurrencyError` if the stream is not at that version."""
        if not events:
            return []
        versions = list(range(expected_version + 1, expected_version + 1 + len(events)))
        event_ids = [uuid.uuid4() for _ in events]
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    QUERIES["append_events"],
                    stream_id,
                    _encoder.encode(meta).decode(),
                    event_ids,
                    versions,
                    [type(e).__name__ for e in events],
                    [e.SCHEMA for e in events],
                    [encode_event(e).decode() for e in events],
                    expected_version,
                )
                if not rows:  # the stream has no event at expected_version
                    raise ConcurrencyError(
                        f"stream is not at version {expected_version}",
                        stream_id=str(stream_id),
                        expected_version=expected_version,
                    )
                by_version = {r["version"]: r for r in rows}
                recorded = [
                    Recorded(
                        event_id=eid,
                        stream_id=stream_id,
                        version=v,
                        position=by_version[v]["position"],
                        event=e,  # type: ignore[arg-type]
                        meta=meta,
                        recorded_at=by_version[v]["recorded_at"],
                    )
                    for eid, v, e in zip(event_ids, versions, events, strict=True)
                ]
                note = await inline(conn, recorded) if inline is not None else None
                if note is None:
                    last = recorded[-1]
                    note = Notification(stream_id=stream_id, version=last.version, state="")
                await conn.execute(QUERIES["notify"], self.channel, _encoder.encode(note).decode())
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "events_stream_version":
                raise ConcurrencyError(
                    f"another writer appended to the stream after version {expected_version}",
                    stream_id=str(stream_id),
                    expected_version=expected_version,
                ) from exc
            raise
        return recorded

    async def read_stream(self, stream_id: uuid.UUID, after_version: int = 0) -> list[Recorded]:
        """The events of one stream after a version, in order."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(QUERIES["read_stream"], stream_id, after_version)
        return [record_from_row(r) for r in rows]

    async def read_all(self, after: Checkpoint = START, limit: int = 1000) -> list[LogEntry]:
        """The next page of the global log after a checkpoint, never skipping an event that
        commits late (I5): rows of transactions that may still commit are held back."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(QUERIES["read_all"], after.txid, after.position, limit)
        return [
            LogEntry(record_from_row(r), Checkpoint(txid=r["txid"], position=r["position"]))
            for r in rows
        ]

    async def subscribe(
        self, after: Checkpoint = START, *, poll_interval: float = 2.0, batch: int = 1000
    ) -> AsyncIterator[LogEntry]:
        """Follow the global log from a checkpoint: every event once, in gap-safe order.
        Woken by NOTIFY; polls too, so a lost notification only delays (I7)."""
        wake = asyncio.Event()

        def on_notify(*_: Any) -> None:
            wake.set()

        async with self.pool.acquire() as listen_conn:
            await listen_conn.add_listener(self.channel, on_notify)
            try:
                while True:
                    wake.clear()
                    page = await self.read_all(after, batch)
                    for entry in page:
                        yield entry
                        after = entry.checkpoint
                    if len(page) < batch:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), poll_interval)
            finally:
                await listen_conn.remove_listener(self.channel, on_notify)
