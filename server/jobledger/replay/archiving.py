"""`replay archive` (issue 19): move the streams of jobs and workflow runs that ended before a
cut-off out of the log into NDJSON files, keeping in the log a checkpoint per batch
(domain/archives.py).

A workflow run goes together with its step jobs, in one batch, once the run and every one
of them ended before the cut-off; a step job never goes alone (its run's page links to it).
Named kinds (projects, accounts, tokens, secrets, definitions, environments, schedules) are
live configuration and stay; so do the jobs and runs of a schedule's recent occurrences.

Batches of ~1,000 streams, each in order: read the streams' events, write them as
`replay export` does (hashes included) to a new file in the target directory, fsync it,
then one transaction appends the checkpoint (file, SHA-256, streams, event count, each
stream's kind and final state) and deletes those streams' events, which the append-only guard allows
only for the streams that checkpoint lists. A crash between leaves a file no checkpoint
names (harmless; the next run archives those streams again into a new file).

The `jobs` and `workflow_runs` rows of archived streams stay: the list and detail views still
show them. `replay verify` compares them with the checkpoint's states, `replay rebuild`
seeds them from there,
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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from ..domain.archives import ARCHIVE, RecordBatch, StreamsArchived
from ..domain.events import EventMeta
from ..domain.jobs import JOB
from ..domain.registry import KINDS
from ..domain.workflows import WORKFLOW, Run
from ..ids import uuid7
from ..projections.jobs import JobView, view_of
from ..store.eventstore import AppendItem, EventStore, record_from_row
from ..wire import ArchivedOut
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
    #: The streams archived by kind (`job`, `workflow`).
    kinds: dict[str, int] = {}


@dataclass(frozen=True)
class Archivable:
    """A kind whose streams `replay archive` moves: what its checkpoint keeps of a stream
    (`final(fold)`, JSON-ready once `to_builtins`) and the type that decodes back from it."""

    state_type: type
    final: Callable[[Any], Any]


#: The kinds archived, by name. Only these: named kinds are live configuration.
ARCHIVABLE: dict[str, Archivable] = {
    JOB.name: Archivable(JobView, view_of),
    WORKFLOW.name: Archivable(Run, lambda run: run),
}


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


def _final_states(rows: list[asyncpg.Record]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each stream's final state as its checkpoint keeps it (a job's as its `jobs` row
    shows it; JSON-ready), and each stream's kind."""
    by_stream: dict[uuid.UUID, list[Any]] = {}
    kinds: dict[str, str] = {}
    for row in rows:
        by_stream.setdefault(row["stream_id"], []).append(record_from_row(row))
        kinds[str(row["stream_id"])] = row["stream_type"]
    states = {}
    for sid, records in by_stream.items():
        kind = KINDS.get(kinds[str(sid)])
        states[str(sid)] = msgspec.to_builtins(
            ARCHIVABLE[kind.name].final(kind.fold(records, kind.initial(sid)))
        )
    return states, kinds


def kept_state(kind: str, state: Any) -> Any:
    """A checkpoint's state of a stream of `kind`, decoded (JSON text or builtins)."""
    state_type = ARCHIVABLE[kind].state_type
    if isinstance(state, str | bytes):
        return msgspec.json.decode(state, type=state_type)
    return msgspec.convert(state, state_type)


def _take_runs(rows: list[asyncpg.Record], batch: int) -> list[asyncpg.Record]:
    """The first runs whose streams (a run and its step jobs) fit in a batch (one at least:
    a run is never split)."""
    taken: list[asyncpg.Record] = []
    size = 0
    for row in rows:
        size += 1 + len(row["jobs"])
        if taken and size > batch:
            break
        taken.append(row)
    return taken


async def archive_before(
    pool: asyncpg.Pool,
    before: datetime,
    to: Path,
    *,
    batch: int = 1000,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveReport:
    """Archive the streams of workflow runs (with their step jobs) and of jobs finished
    before `before` into files in directory `to`."""
    started = time.perf_counter()
    run = None if dry_run else uuid7()
    files: list[str] = []
    counted = {"streams": 0, "events": 0}
    kinds: dict[str, int] = {}
    store = EventStore(pool)
    if not dry_run:
        await asyncio.to_thread(to.mkdir, parents=True, exist_ok=True)

    async def one_batch(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> None:
        rows = await conn.fetch(QUERIES["archive_events"], ids)
        counted["streams"] += len(ids)
        counted["events"] += len(rows)
        for kind in {str(r["stream_id"]): r["stream_type"] for r in rows}.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        if progress is not None:
            progress(counted["streams"], counted["events"])
        if dry_run or run is None:
            return
        data = b"".join(_line_encoder.encode(exported(r)) + b"\n" for r in rows)
        name = f"{before:%Y%m%dT%H%M%SZ}-{run}-{len(files) + 1:05d}.ndjson"
        await asyncio.to_thread(_write_synced, to / name, data)
        states, stream_kinds = _final_states(rows)
        checkpoint = StreamsArchived(
            before=before,
            file=name,
            sha256=hashlib.sha256(data).hexdigest(),
            streams=ids,
            events=len(rows),
            first_position=min(r["position"] for r in rows),
            last_position=max(r["position"] for r in rows),
            states=states,
            kinds=stream_kinds,
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

    async with pool.acquire() as conn:
        # Workflow runs first, each with its step jobs in the same batch.
        after: uuid.UUID | None = None
        while found := await conn.fetch(QUERIES["archive_run_candidates"], before, after, batch):
            taken = _take_runs(found, batch)
            after = taken[-1]["id"]
            await one_batch(conn, [i for r in taken for i in (r["id"], *r["jobs"])])
        # Then jobs that are no run's steps.
        after = None
        while ids := [
            r["id"] for r in await conn.fetch(QUERIES["archive_candidates"], before, after, batch)
        ]:
            after = ids[-1]
            await one_batch(conn, ids)
    return ArchiveReport(
        run=run,
        dry_run=dry_run,
        before=before,
        files=files,
        streams=counted["streams"],
        events=counted["events"],
        seconds=round(time.perf_counter() - started, 3),
        kinds=kinds,
    )


async def archived_views(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Iterable[uuid.UUID] | None = None
) -> dict[uuid.UUID, JobView]:
    """The final states archive checkpoints keep of job streams (all, or only `ids`)."""
    return await archived_states(conn, JOB.name, ids)


async def archived_states(
    conn: asyncpg.Connection | asyncpg.Pool, kind: str, ids: Iterable[uuid.UUID] | None = None
) -> dict[uuid.UUID, Any]:
    """The final states archive checkpoints keep of streams of `kind` (all, or only `ids`),
    decoded (a job's as a JobView, a workflow run's as a Run)."""
    rows = await conn.fetch(QUERIES["archived_states"], None if ids is None else list(ids), kind)
    return {r["stream_id"]: kept_state(kind, r["state"]) for r in rows}


class ArchivedAt(msgspec.Struct, kw_only=True):
    """Where an archived stream's events went: the checkpoint that removed them."""

    file: str
    sha256: str
    checkpoint_event_id: uuid.UUID
    checkpoint_position: int
    archived_at: datetime
    before: datetime
    kind: str
    #: Its final state as the checkpoint keeps it, decoded.
    state: Any


async def archived_at(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: uuid.UUID
) -> ArchivedAt | None:
    """The latest archive checkpoint of a stream, if `replay archive` moved it."""
    row = await conn.fetchrow(QUERIES["archived_at"], str(stream_id))
    if row is None:
        return None
    return ArchivedAt(
        file=row["file"], sha256=row["sha256"], checkpoint_event_id=row["event_id"],
        checkpoint_position=row["position"], archived_at=row["recorded_at"],
        before=row["before"], kind=row["kind"],
        state=kept_state(row["kind"], row["state"]),
    )  # fmt: skip


def archive_files(path: Path) -> list[Path]:
    """The archive files at a path: the file itself, or a directory's *.ndjson files."""
    if path.is_dir():
        return sorted(path.glob("*.ndjson"))
    return [path]


def archived_out(at: ArchivedAt, state_matches: bool | None = None) -> ArchivedOut:
    """Where an archived stream's events went, as the API shows it."""
    return ArchivedOut(
        file=at.file, sha256=at.sha256, checkpoint_event_id=at.checkpoint_event_id,
        checkpoint_position=at.checkpoint_position, archived_at=at.archived_at,
        before=at.before, state_matches=state_matches,
    )  # fmt: skip
