"""The log as NDJSON (`replay export` / `replay import`), a stream as of a point in the log
(`replay show KIND ID --at`, `replay job`), and the log followed live (`replay tail`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ..domain.errors import InvalidInput, NotFound
from ..domain.events import Recorded
from ..domain.jobs import JOB
from ..domain.registry import KINDS
from ..projections.jobs import JobView, view_of
from ..store.db import Conn
from ..store.eventstore import STREAM_BEHIND, Checkpoint, EventStore, record_from_row
from ..wire import RawEvent, event_out
from . import QUERIES

_line_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(RawEvent)


def exported(row: asyncpg.Record) -> RawEvent:
    """An export line of an `events` row: the event exactly as the log holds it."""
    return RawEvent(
        position=row["position"],
        event_id=row["event_id"],
        stream_type=row["stream_type"],
        stream_id=row["stream_id"],
        version=row["version"],
        type=row["type"],
        schema_version=row["schema_version"],
        recorded_at=row["recorded_at"],
        data=msgspec.Raw(row["data"].encode()),
        meta=msgspec.Raw(row["meta"].encode()),
        hash=row["hash"].hex() if row["hash"] is not None else None,
    )


async def export(
    pool: asyncpg.Pool,
    *,
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    prefetch: int = 2000,
) -> AsyncIterator[bytes]:
    """NDJSON lines of the log in position order, from one snapshot, in constant memory."""
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        cursor = conn.cursor(QUERIES["export"], project, since, until, prefetch=prefetch)
        async for row in cursor:
            yield _line_encoder.encode(exported(row)) + b"\n"


class ImportReport(msgspec.Struct, kw_only=True):
    events: int
    streams: int


class ImportRefused(InvalidInput):
    """The input cannot be imported; the message names the line."""


async def import_lines(pool: asyncpg.Pool, lines: Iterable[bytes], *, batch: int = 2000) -> int:
    """Import an export into a database with an empty log, in one transaction, checking
    every line: it decodes with the current schema, follows its stream's previous version,
    and (when the line has one) its hash matches the one the database computes, so an
    edited export is refused. Returns the events imported; projections are not touched
    (rebuild them afterwards)."""
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM events)"):
            raise ImportRefused("the database already has events: import needs an empty log")
        pending: list[tuple[int, RawEvent]] = []
        count = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            pending.append((number, _decode_line(number, line)))
            if len(pending) >= batch:
                count += await _insert(conn, pending)
                pending.clear()
        count += await _insert(conn, pending)
        await conn.execute(QUERIES["import_done"])
    return count


def _decode_line(number: int, line: bytes) -> RawEvent:
    try:
        event = _line_decoder.decode(line)
        KINDS.get(event.stream_type).decode(event.type, event.schema_version, bytes(event.data))
        msgspec.json.decode(bytes(event.meta))
    except (ValueError, KeyError, msgspec.DecodeError) as exc:
        raise ImportRefused(f"line {number}: not an exported event: {exc}") from None
    return event


async def _insert(conn: Conn, pending: list[tuple[int, RawEvent]]) -> int:
    if not pending:
        return 0
    events = [e for _, e in pending]
    # Within the batch versions must run on; the database checks that each stream's first
    # event of the batch follows a stored version.
    last: dict[uuid.UUID, int] = {}
    for number, e in pending:
        if e.stream_id in last and e.version != last[e.stream_id] + 1:
            raise _out_of_order(number, e)
        last[e.stream_id] = e.version
    columns = (
        [e.position for e in events], [e.event_id for e in events],
        [e.stream_id for e in events], [e.version for e in events], [e.type for e in events],
        [e.schema_version for e in events], [bytes(e.data).decode() for e in events],
        [bytes(e.meta).decode() for e in events], [e.recorded_at for e in events],
        [e.stream_type for e in events],
    )  # fmt: skip
    try:
        rows = await conn.fetch(QUERIES["import_events"], *columns)
    except asyncpg.UniqueViolationError as exc:
        raise ImportRefused(f"duplicate event in the input: {exc.detail}") from None
    except asyncpg.CheckViolationError as exc:  # a stream's events of two kinds
        raise ImportRefused(f"mixed kinds in one stream: {exc.message}") from None
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != STREAM_BEHIND:
            raise
        number, event = next((n, e) for n, e in pending if str(e.stream_id) == exc.detail)
        raise _out_of_order(number, event) from None
    written = {r["position"]: r["hash"] for r in rows}
    for number, event in pending:
        if event.hash is not None and written[event.position].hex() != event.hash:
            raise ImportRefused(
                f"line {number}: the hash does not match the event: the export was altered"
            )
    return len(rows)


def _out_of_order(number: int, event: RawEvent) -> ImportRefused:
    return ImportRefused(
        f"line {number}: version {event.version} of stream {event.stream_id} does not follow "
        "its previous version (an export filtered by time holds partial streams; import "
        "needs whole streams)"
    )


class StreamAsOf(msgspec.Struct, kw_only=True):
    """A stream's state as it stood at a point in the log (a job: as the API would have
    shown its row)."""

    stream_type: str
    stream_id: uuid.UUID
    as_of_position: int
    as_of_time: datetime
    state: Any


async def stream_at(
    pool: asyncpg.Pool,
    kind: str,
    stream_id: uuid.UUID,
    *,
    position: int | None = None,
    at: datetime | None = None,
) -> StreamAsOf:
    """The state of one stream after its last event at or before a position or a time,
    folded by its kind."""
    stream_kind = KINDS.get(kind)
    records = [
        record_from_row(r)
        for r in await pool.fetch(QUERIES["stream_until"], stream_id, position, at)
    ]
    if not records or records[0].stream_type != kind:
        raise NotFound(f"{kind} {stream_id} did not exist at that point", stream_id=str(stream_id))
    state = stream_kind.fold(records, stream_kind.initial(stream_id))
    return StreamAsOf(
        stream_type=kind,
        stream_id=stream_id,
        as_of_position=records[-1].position,
        as_of_time=records[-1].recorded_at,
        state=view_of(state) if kind == JOB.name else state,
    )


async def jobs_at(
    pool: asyncpg.Pool, job_ids: Iterable[uuid.UUID], at: datetime
) -> dict[uuid.UUID, JobView]:
    """Some jobs as they stood at a time (`stream_at` for a page of jobs, in one query):
    those that existed then, by id."""
    by_stream: dict[uuid.UUID, list[Recorded]] = {}
    for row in await pool.fetch(QUERIES["streams_until"], list(job_ids), at):
        if row["stream_type"] == JOB.name:
            by_stream.setdefault(row["stream_id"], []).append(record_from_row(row))
    folded = {sid: JOB.fold(records, JOB.initial(sid)) for sid, records in by_stream.items()}
    return {sid: view_of(job) for sid, job in folded.items() if job is not None}


async def tail_start(pool: asyncpg.Pool, *, from_start: bool = False) -> Checkpoint:
    """Where a tail begins: after everything committed now, or before the first event."""
    if from_start:
        return Checkpoint()
    return Checkpoint(txid=await pool.fetchval(QUERIES["now_checkpoint"]), position=2**63 - 1)


async def tail(pool: asyncpg.Pool, after: Checkpoint) -> AsyncIterator[bytes]:
    """NDJSON lines of every event after a checkpoint, live, gap-safe (I5)."""
    async for entry in EventStore(pool).subscribe(after):
        # The same line an export has for it, but for the hash (the reader has none).
        yield _line_encoder.encode(event_out(entry.record)) + b"\n"
