"""`replay archive` (issue 19): move the streams of jobs that ended before a cut-off out of
the log into NDJSON files, keeping in the log a checkpoint per batch (domain/archives.py).

Batches of ~1,000 streams, each in order: read the streams' events, write them as
`replay export` does (hashes included) to a new file in the target directory, fsync it,
then one transaction appends the checkpoint (file, SHA-256, streams, event count, each
job's final state) and deletes those streams' events, which the append-only guard allows
only for the streams that checkpoint lists. A crash between leaves a file no checkpoint
names (harmless; the next run archives those streams again into a new file).

The `jobs` rows of archived jobs stay: the list and detail views still show them. `replay
verify` compares them with the checkpoint's states, `replay rebuild` seeds them from there,
and `verify --archive DIR` rechecks the files against their checkpoints. `replay import`
of the files (concatenated) into an empty database restores the streams.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from ..domain.archives import ARCHIVE, RecordBatch, StreamsArchived
from ..domain.events import EventMeta
from ..domain.jobs import JOB
from ..ids import uuid7
from ..projections.jobs import JobView, view_of
from ..store.eventstore import AppendItem, EventStore, record_from_row
from . import QUERIES
from .archive import exported

_line_encoder = msgspec.json.Encoder()
META = EventMeta(actor="jobledger replay archive")


class ArchiveReport(msgspec.Struct, kw_only=True):
    run: uuid.UUID | None
    dry_run: bool
    before: datetime
    files: list[str]
    streams: int
    events: int
    seconds: float


class ArchiveRace(RuntimeError):
    """A stream changed between its export and its removal: the batch was rolled back."""


def _write_synced(path: Path, data: bytes) -> None:
    """Write a whole file and make it durable (file and directory entry) before returning."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _final_states(rows: list[asyncpg.Record]) -> dict[str, Any]:
    """Each job stream's fold, as its `jobs` row shows it (JSON-ready)."""
    by_stream: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        by_stream.setdefault(row["stream_id"], []).append(record_from_row(row))
    return {
        str(sid): msgspec.to_builtins(view_of(JOB.fold(records, JOB.initial(sid))))
        for sid, records in by_stream.items()
    }


async def archive_before(
    pool: asyncpg.Pool,
    before: datetime,
    to: Path,
    *,
    batch: int = 1000,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveReport:
    """Archive the streams of jobs finished before `before` into files in directory `to`."""
    started = time.perf_counter()
    run = None if dry_run else uuid7()
    files: list[str] = []
    streams = events = 0
    after: uuid.UUID | None = None
    store = EventStore(pool)
    if not dry_run:
        await asyncio.to_thread(to.mkdir, parents=True, exist_ok=True)
    async with pool.acquire() as conn:
        while ids := [
            r["id"] for r in await conn.fetch(QUERIES["archive_candidates"], before, after, batch)
        ]:
            after = ids[-1]
            rows = await conn.fetch(QUERIES["archive_events"], ids)
            streams, events = streams + len(ids), events + len(rows)
            if progress is not None:
                progress(streams, events)
            if dry_run or run is None:
                continue
            data = b"".join(_line_encoder.encode(exported(r)) + b"\n" for r in rows)
            name = f"{before:%Y%m%dT%H%M%SZ}-{run}-{len(files) + 1:05d}.ndjson"
            await asyncio.to_thread(_write_synced, to / name, data)
            checkpoint = StreamsArchived(
                before=before,
                file=name,
                sha256=hashlib.sha256(data).hexdigest(),
                streams=ids,
                events=len(rows),
                first_position=min(r["position"] for r in rows),
                last_position=max(r["position"] for r in rows),
                states=_final_states(rows),
            )
            events_of = ARCHIVE.decide(None, RecordBatch(checkpoint))
            async with conn.transaction():
                recorded = await store.append_many(
                    [AppendItem(run, len(files), events_of, stream_type=ARCHIVE.name)],
                    META,
                    conn=conn,
                )
                await conn.execute(QUERIES["archive_name_checkpoint"], str(recorded[0].event_id))
                deleted = await conn.execute(QUERIES["archive_delete"], ids)
                if int(deleted.split()[-1]) != len(rows):
                    raise ArchiveRace(
                        f"streams of batch {len(files) + 1} changed while archived: "
                        f"{deleted} of {len(rows)} events exported; nothing removed"
                    )
            files.append(name)
    return ArchiveReport(
        run=run,
        dry_run=dry_run,
        before=before,
        files=files,
        streams=streams,
        events=events,
        seconds=round(time.perf_counter() - started, 3),
    )


async def archived_views(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Iterable[uuid.UUID] | None = None
) -> dict[uuid.UUID, JobView]:
    """The final states archive checkpoints keep of job streams (all, or only `ids`)."""
    rows = await conn.fetch(QUERIES["archived_states"], None if ids is None else list(ids))
    return {r["stream_id"]: msgspec.json.decode(r["state"].encode(), type=JobView) for r in rows}


def archive_files(path: Path) -> list[Path]:
    """The archive files at a path: the file itself, or a directory's *.ndjson files."""
    if path.is_dir():
        return sorted(path.glob("*.ndjson"))
    return [path]
