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
from ..domain.events import Event, EventMeta, Recorded, encode_event
from ..domain.registry import KINDS
from ..ids import uuid7
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


class Change(msgspec.Struct, frozen=True, array_like=True):
    """One stream an append touched: its id, new version and (for jobs) state."""

    stream_id: uuid.UUID
    version: int
    state: str = ""


class Notification(msgspec.Struct, frozen=True, omit_defaults=True):
    """What an append announces on the events channel: ids, never data. A large batch lists
    only its first changes and sets `more`: listeners then consult the database."""

    changes: list[Change]
    more: bool = False


#: SQLSTATE of the hash-chain trigger's refusal of an event whose predecessor is missing.
STREAM_BEHIND = "JL409"

#: Most changes one NOTIFY lists (PostgreSQL caps a payload at 8000 bytes).
MAX_NOTIFIED_CHANGES = 64


class AppendItem(msgspec.Struct, frozen=True):
    """Events to append to one stream, after the version the writer read; `meta` if they
    came from another request than the rest of the append (a group commit)."""

    stream_id: uuid.UUID
    expected_version: int
    events: Sequence[Event]
    meta: EventMeta | None = None
    #: The kind of the stream (`domain.kinds`).
    stream_type: str = "job"


#: Gives the channel and payload of the append's one NOTIFY announcing some changes, for an
#: inline hook to send within its own statement (a round trip saved).
Announce = Callable[[list[Change]], tuple[str, str]]

#: Runs inside the append transaction after the events are inserted (inline projections).
#: If it does not call `announce`, the append sends the NOTIFY itself, listing the streams.
InlineHook = Callable[[Conn, list[Recorded], Announce], Awaitable[None]]

_meta_decoder = msgspec.json.Decoder(EventMeta)
_encoder = msgspec.json.Encoder()


def record_from_row(row: asyncpg.Record) -> Recorded:
    """Decode one `events` row by its stream's kind (upcasting old schema versions);
    `ValueError` for an unknown kind or event type."""
    kind = row["stream_type"]
    return Recorded(
        event_id=row["event_id"],
        stream_id=row["stream_id"],
        version=row["version"],
        position=row["position"],
        event=KINDS.get(kind).decode(row["type"], row["schema_version"], row["data"]),
        meta=_meta_decoder.decode(row["meta"]),
        recorded_at=row["recorded_at"],
        stream_type=kind,
    )


def _default_changes(recorded: list[Recorded]) -> list[Change]:
    last: dict[uuid.UUID, int] = {}
    for rec in recorded:
        last[rec.stream_id] = rec.version
    return [Change(sid, v) for sid, v in last.items()]


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
        """Append events to one stream after `expected_version`; see `append_many`."""
        return await self.append_many(
            [AppendItem(stream_id, expected_version, events)], meta, inline=inline
        )

    async def append_many(
        self,
        items: Sequence[AppendItem],
        meta: EventMeta,
        *,
        inline: InlineHook | None = None,
        conn: Conn | None = None,
    ) -> list[Recorded]:
        """Append to several streams in one transaction, with the inline hook and one NOTIFY.
        All or nothing: raises `ConcurrencyError` if any stream is not at its expected
        version. With `conn`, runs inside the caller's transaction on that connection."""
        items = [i for i in items if i.events]
        if not items:
            return []
        if conn is None:
            async with self.pool.acquire() as own, own.transaction():
                return await self._append(own, items, meta, inline)
        return await self._append(conn, items, meta, inline)

    async def _append(
        self, conn: Conn, items: Sequence[AppendItem], meta: EventMeta, inline: InlineHook | None
    ) -> list[Recorded]:
        stream_ids: list[uuid.UUID] = []
        event_ids: list[uuid.UUID] = []
        versions: list[int] = []
        types: list[str] = []
        schemas: list[int] = []
        datas: list[str] = []
        metas: list[str] = []
        events: list[Event] = []
        event_metas: list[EventMeta] = []
        kinds: list[str] = []
        for item in items:
            item_meta = item.meta or meta
            encoded_meta = _encoder.encode(item_meta).decode()
            for n, event in enumerate(item.events, start=1):
                metas.append(encoded_meta)
                event_metas.append(item_meta)
                stream_ids.append(item.stream_id)
                kinds.append(item.stream_type)
                event_ids.append(uuid7())
                versions.append(item.expected_version + n)
                types.append(type(event).__name__)
                schemas.append(event.SCHEMA)
                datas.append(encode_event(event).decode())
                events.append(event)
        try:
            rows = await conn.fetch(
                QUERIES["append_events"],
                stream_ids, event_ids, versions, types, schemas, datas, metas, kinds,
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "events_stream_version":
                raise
            raise ConcurrencyError(
                "another writer appended to the stream first",
                stream_ids=sorted({str(i.stream_id) for i in items}),
            ) from exc
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != STREAM_BEHIND:
                raise
            # The trigger names the stream in the detail.
            raise ConcurrencyError(
                "stream is not at the expected version", stream_ids=[exc.detail]
            ) from exc
        by_key = {(r["stream_id"], r["version"]): r for r in rows}
        recorded = []
        for eid, sid, v, event, event_meta, kind in zip(
            event_ids, stream_ids, versions, events, event_metas, kinds, strict=True
        ):
            row = by_key[(sid, v)]
            recorded.append(
                Recorded(
                    event_id=eid,
                    stream_id=sid,
                    version=v,
                    position=row["position"],
                    event=event,
                    meta=event_meta,
                    recorded_at=row["recorded_at"],
                    stream_type=kind,
                )
            )
        announced = False

        def announce(changes: list[Change]) -> tuple[str, str]:
            nonlocal announced
            announced = True
            note = Notification(
                changes=changes[:MAX_NOTIFIED_CHANGES], more=len(changes) > MAX_NOTIFIED_CHANGES
            )
            return self.channel, _encoder.encode(note).decode()

        if inline is not None:
            await inline(conn, recorded, announce)
        if not announced:
            await conn.execute(QUERIES["notify"], *announce(_default_changes(recorded)))
        return recorded

    async def read_stream(self, stream_id: uuid.UUID, after_version: int = 0) -> list[Recorded]:
        """The events of one stream after a version, in order."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(QUERIES["read_stream"], stream_id, after_version)
        return [record_from_row(r) for r in rows]

    async def read_streams(
        self, stream_ids: Sequence[uuid.UUID], conn: Conn | None = None
    ) -> dict[uuid.UUID, list[Recorded]]:
        """The events of several streams in one query, by stream, each in order."""
        if conn is None:
            async with self.pool.acquire() as own:
                rows = await own.fetch(QUERIES["read_streams"], list(stream_ids))
        else:
            rows = await conn.fetch(QUERIES["read_streams"], list(stream_ids))
        streams: dict[uuid.UUID, list[Recorded]] = {sid: [] for sid in stream_ids}
        for row in rows:
            streams[row["stream_id"]].append(record_from_row(row))
        return streams

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
