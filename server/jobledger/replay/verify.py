"""`replay verify`: check the log and the projection against each other, in one snapshot.

For every stream, whatever its kind: versions run 1, 2, 3... without a hole; every event
decodes with its kind's current schema (upcasting older versions); the hash chain
recomputes; the kind's fold succeeds; and the fold equals the stream's projection row (the
`jobs` row for jobs, the kind's state projection for the others). Rows of projections
without a stream are reported too.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from ..domain.archives import ARCHIVE, StreamsArchived
from ..domain.errors import DomainError
from ..domain.events import Recorded
from ..domain.jobs import JOB
from ..domain.registry import KINDS
from ..projections.jobs import COLUMNS, JobView, view_from_row, view_of
from ..projections.registry import PROJECTIONS
from ..store.chain import canonical, link
from ..store.eventstore import record_from_row
from ..wire import RawEvent
from . import QUERIES
from .archiving import (
    ARCHIVABLE,
    ArchivedAt,
    archive_files,
    archived_at,
    archived_states,
    archived_views,
    kept_state,
)


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing wrong, where it is, and what was found."""

    #: version_gap, undecodable, broken_chain, unchained, fold_error, projection_missing,
    #: projection_differs, events_missing, orphan_projection
    kind: str
    stream_type: str
    stream_id: uuid.UUID
    detail: str
    version: int | None = None
    position: int | None = None


class VerifyReport(msgspec.Struct, kw_only=True):
    streams: int
    events: int
    problems: int
    seconds: float
    events_per_second: int


def _differences(expected: JobView, actual: JobView) -> list[str]:
    return [c for c in COLUMNS if getattr(expected, c) != getattr(actual, c)]


class _Stream:
    """The checks of one stream, fed its rows in version order."""

    def __init__(self, stream_id: uuid.UUID, stream_type: str) -> None:
        self.id = stream_id
        self.type = stream_type
        self.version = 0
        self.hash: bytes | None = None
        #: A built-in stream (the project `default`) starts from its state, others from None.
        self.state: Any = (
            KINDS.get(stream_type).initial(stream_id) if stream_type in KINDS else None
        )
        self.broken = False  # the fold stopped: a later comparison would only repeat it
        self.problems: list[Problem] = []

    def problem(self, kind: str, detail: str, row: asyncpg.Record | None = None) -> None:
        where = {"version": row["version"], "position": row["position"]} if row else {}
        self.problems.append(
            Problem(kind=kind, stream_type=self.type, stream_id=self.id, detail=detail, **where)
        )

    def feed(self, row: asyncpg.Record) -> None:
        version = row["version"]
        if version != self.version + 1:
            self.problem(
                "version_gap", f"version {version} follows {self.version}: events removed?", row
            )
            self.broken = True
        stored = row["hash"]
        if stored is None:
            self.problem("unchained", "no hash (written before hash chains existed)", row)
        else:
            expected = link(self.hash, canonical(
                event_id=row["event_id"], stream_id=row["stream_id"], version=version,
                type=row["type"], schema_version=row["schema_version"],
                recorded_at=row["recorded_at"], data=row["data"], meta=row["meta"],
                stream_type=row["stream_type"],
            ))  # fmt: skip
            if expected != stored and version == self.version + 1:
                self.problem(
                    "broken_chain",
                    "hash does not match the event and its predecessor: edited in place?",
                    row,
                )
        self.version, self.hash = version, stored
        try:
            rec: Recorded = record_from_row(row)
        except (ValueError, KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.problem("undecodable", f"{row['type']}: {exc}", row)
            self.broken = True
            return
        if row["stream_type"] != self.type:
            self.problem(
                "mixed_kinds", f"a {row['stream_type']} event in a {self.type} stream", row
            )
            self.broken = True
        if not self.broken:
            try:
                self.state = KINDS.get(self.type).evolve(self.state, rec)
            except DomainError as exc:
                self.problem("fold_error", exc.message, row)
                self.broken = True

    def compare_state(self, stored: tuple[Any, ...] | None) -> None:
        """Against the stream's row in its kind's state projection."""
        projection = PROJECTIONS.get(self.type)
        if projection is None or self.broken:
            return
        if diff := projection.differences(self.state, stored):
            self.problem(
                "projection_differs",
                f"{projection.table} row differs in: " + ", ".join(diff),
            )

    def compare(self, row: asyncpg.Record | None) -> None:
        """Against the stream's `jobs` row."""
        if self.type != JOB.name:
            return
        if row is None:
            self.problem("projection_missing", "no row in jobs for this stream")
            return
        if self.broken or self.state is None:
            return
        view = view_from_row(row)
        if view.version > self.version:
            self.problem(
                "events_missing",
                f"the projection is at version {view.version} but the log ends at "
                f"{self.version}: events removed?",
            )
            return
        if diff := _differences(view_of(self.state), view):
            self.problem("projection_differs", "jobs row differs in: " + ", ".join(diff))


class Verifier:
    """One verification run: iterate `problems()`, then read `report`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch: int = 500,
        progress: Callable[[int, int], None] | None = None,
        archive: Path | None = None,
    ) -> None:
        self.pool = pool
        #: Issue 19: archive files (a file or a directory) to check against checkpoints.
        self.archive = archive
        self.batch = batch
        #: Called after each batch with (events done, events in the log).
        self.progress = progress
        self.report = VerifyReport(streams=0, events=0, problems=0, seconds=0, events_per_second=0)

    async def problems(self) -> AsyncIterator[Problem]:
        """Every problem of the log and the `jobs` projection, in stream order, read in one
        snapshot so that appends running meanwhile cannot look like mismatches."""
        started = time.perf_counter()
        report = self.report
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            total = await conn.fetchval(QUERIES["log_size"])
            if self.progress is not None:
                self.progress(0, total)  # the start, for the rate
            after: uuid.UUID | None = None
            # Built-in streams met in the log; the others are checked apart below.
            builtin = {sid for p in PROJECTIONS for sid in p.kind.builtin}
            seen: set[uuid.UUID] = set()
            while rows := await conn.fetch(QUERIES["stream_batch"], after, self.batch, None):
                checked: dict[uuid.UUID, _Stream] = {}
                for row in rows:
                    sid = row["stream_id"]
                    if sid not in checked:
                        checked[sid] = _Stream(sid, row["stream_type"])
                    checked[sid].feed(row)
                projected = {
                    r["id"]: r for r in await conn.fetch(QUERIES["jobs_by_id"], list(checked))
                }
                stored: dict[uuid.UUID, tuple[Any, ...]] = {}
                for projection in PROJECTIONS:
                    ids = [i for i, st in checked.items() if st.type == projection.kind.name]
                    if ids:
                        stored.update(await projection.rows(conn, ids))
                for sid, stream in checked.items():
                    stream.compare(projected.get(sid))
                    stream.compare_state(stored.get(sid))
                    for p in stream.problems:
                        report.problems += 1
                        yield p
                after = rows[-1]["stream_id"]
                seen.update(builtin.intersection(checked))
                report.streams += len(checked)
                report.events += len(rows)
                if self.progress is not None:
                    self.progress(report.events, total)
            # Issue 19: a jobs row whose stream was archived is checked against the state
            # its checkpoint keeps; only rows no checkpoint explains are orphans.
            orphans = [row["id"] for row in await conn.fetch(QUERIES["orphan_jobs"])]
            archived = await archived_views(conn, orphans) if orphans else {}
            rows = {r["id"]: r for r in await conn.fetch(QUERIES["jobs_by_id"], list(archived))}
            for sid in orphans:
                kept = archived.get(sid)
                if kept is None:
                    report.problems += 1
                    yield Problem(
                        kind="orphan_projection",
                        stream_type=JOB.name,
                        stream_id=sid,
                        detail="a jobs row with no events",
                    )
                elif diff := _differences(kept, view_from_row(rows[sid])):
                    report.problems += 1
                    yield Problem(
                        kind="projection_differs",
                        stream_type=JOB.name,
                        stream_id=sid,
                        detail="jobs row of an archived job differs from its checkpoint in: "
                        + ", ".join(diff),
                    )
            async for p in self._archive_problems(conn):
                report.problems += 1
                yield p
            for projection in PROJECTIONS:
                # A built-in stream without events has its row all the same: as built.
                idle = [sid for sid in projection.kind.builtin if sid not in seen]
                built = await projection.rows(conn, idle) if idle else {}
                for sid in idle:
                    stream = _Stream(sid, projection.kind.name)
                    stream.compare_state(built.get(sid))
                    for p in stream.problems:
                        report.problems += 1
                        yield p
                orphans = await conn.fetch(projection.orphans, list(projection.kind.builtin))
                ids = [row["stream_id"] for row in orphans]
                # Issue 19: an archived stream's row is checked against its checkpoint's state.
                kept = (
                    await archived_states(conn, projection.kind.name, ids)
                    if ids and projection.kind.name in ARCHIVABLE
                    else {}
                )
                rows_of = await projection.rows(conn, list(kept)) if kept else {}
                for sid in ids:
                    if sid not in kept:
                        detail = f"a {projection.table} row with no events"
                        kind = "orphan_projection"
                    elif diff := projection.differences(kept[sid], rows_of.get(sid)):
                        detail = f"{projection.table} row of an archived stream differs from "
                        detail += "its checkpoint in: " + ", ".join(diff)
                        kind = "projection_differs"
                    else:
                        continue
                    report.problems += 1
                    yield Problem(
                        kind=kind, stream_type=projection.kind.name, stream_id=sid, detail=detail
                    )
        seconds = time.perf_counter() - started
        report.seconds = round(seconds, 3)
        report.events_per_second = round(report.events / max(seconds, 1e-9))

    async def _archive_problems(self, conn: asyncpg.Connection) -> AsyncIterator[Problem]:
        """Issue 19: each archive checkpoint removed whole streams and keeps a state for
        each; given the archive files, each file's digest matches its checkpoint, and its
        events are whole streams whose chains recompute and whose folds are the states."""
        checkpoints = await conn.fetch(QUERIES["archive_checkpoints"])
        by_file: dict[str, tuple[asyncpg.Record, StreamsArchived]] = {}
        for row in checkpoints:
            cp = msgspec.json.decode(row["data"].encode(), type=StreamsArchived)
            by_file[cp.file] = (row, cp)
            if set(cp.states) != {str(s) for s in cp.streams}:
                yield _archive_problem(
                    "archive_checkpoint", row, f"{cp.file}: its states are not those of its streams"
                )
            for left in await conn.fetch(QUERIES["archived_left"], cp.streams):
                yield _archive_problem(
                    "archive_checkpoint", row,
                    f"{cp.file}: stream {left['stream_id']} it archived still has events",
                )  # fmt: skip
        if self.archive is None:
            return
        seen: set[str] = set()
        for path in archive_files(self.archive):
            data = path.read_bytes()
            found = by_file.get(path.name)
            if found is None:
                yield Problem(
                    kind="archive_file", stream_type=ARCHIVE.name, stream_id=uuid.UUID(int=0),
                    detail=f"{path}: no archive checkpoint names this file",
                )  # fmt: skip
                continue
            row, cp = found
            seen.add(path.name)

            if hashlib.sha256(data).hexdigest() != cp.sha256:
                yield _archive_problem(
                    "archive_file",
                    row,
                    f"{path}: " + "its SHA-256 is not the one its checkpoint recorded: altered",
                )
            streams: dict[uuid.UUID, _Stream] = {}
            count = 0
            try:
                for line in data.splitlines():
                    if not line.strip():
                        continue
                    event = _raw_decoder.decode(line)
                    count += 1
                    st = streams.get(event.stream_id)
                    if st is None:
                        st = streams[event.stream_id] = _Stream(event.stream_id, event.stream_type)
                    st.feed(_row_of(event))
            except (msgspec.DecodeError, ValueError) as exc:
                yield _archive_problem(
                    "archive_file", row, f"{path}: " + f"not an archive of exported events: {exc}"
                )
                continue
            if set(streams) != set(cp.streams) or count != cp.events:
                yield _archive_problem(
                    "archive_file",
                    row,
                    f"{path}: "
                    + f"holds {len(streams)} streams and {count} events; its checkpoint lists "
                    f"{len(cp.streams)} and {cp.events}",
                )
            for sid, st in streams.items():
                for p in st.problems:
                    yield p
                kept = cp.states.get(str(sid))
                if st.broken or st.state is None or kept is None:
                    continue
                if st.type != cp.kind_of(sid):
                    yield _archive_problem(
                        "archive_file", row,
                        f"{path}: {st.type} stream {sid} is a {cp.kind_of(sid)} in its checkpoint",
                    )  # fmt: skip
                elif diff := _kept_differences(st.type, kept, st.state):
                    yield _archive_problem(
                        "archive_file",
                        row,
                        f"{path}: {st.type} {sid}'s fold differs from its checkpoint in {diff}",
                    )
        for name in sorted(set(by_file) - seen):
            row, _ = by_file[name]
            yield Problem(
                kind="archive_file_missing", stream_type=ARCHIVE.name, stream_id=row["stream_id"],
                detail=f"{name}: not found under {self.archive}", position=row["position"],
            )  # fmt: skip


_raw_decoder = msgspec.json.Decoder(RawEvent)


def _kept_differences(kind: str, kept: Any, fold: Any) -> list[str]:
    """What differs between an archived stream's fold (from its file) and the state its
    checkpoint keeps: a job's `jobs` columns, another kind's projection columns."""
    if kind == JOB.name:
        return _differences(kept_state(kind, kept), view_of(fold))
    projection = PROJECTIONS.get(kind)
    if kind not in ARCHIVABLE or projection is None:
        return []
    return projection.differences(fold, projection.row(kept_state(kind, kept)))


def _archive_problem(kind: str, checkpoint: asyncpg.Record, detail: str) -> Problem:
    return Problem(
        kind=kind, stream_type=ARCHIVE.name, stream_id=checkpoint["stream_id"], detail=detail,
        position=checkpoint["position"],
    )  # fmt: skip


def _row_of(event: RawEvent) -> dict[str, Any]:
    """An exported event as the verifier reads a row of `events`."""
    return {
        "event_id": event.event_id, "stream_id": event.stream_id, "version": event.version,
        "position": event.position, "type": event.type, "schema_version": event.schema_version,
        "data": bytes(event.data).decode(), "meta": bytes(event.meta).decode(),
        "recorded_at": event.recorded_at, "stream_type": event.stream_type,
        "hash": bytes.fromhex(event.hash) if event.hash is not None else None,
    }  # fmt: skip


class StreamCheck(msgspec.Struct, kw_only=True):
    """One stream verified: how many events it has and what is wrong, first problem first."""

    events: int
    problems: list[Problem]
    checked_at: datetime


async def verify_stream(pool: asyncpg.Pool, stream_id: uuid.UUID) -> StreamCheck:
    """The checks `replay verify` makes, for one stream (its events, hash chain, fold, and
    its `jobs` or state projection row), in one snapshot; no events: no problems either
    (the caller knows what the stream should have)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(QUERIES["one_stream"], stream_id)
        checked_at: datetime = await conn.fetchval("SELECT clock_timestamp()")
        if not rows:
            return StreamCheck(events=0, problems=[], checked_at=checked_at)
        stream = _Stream(stream_id, rows[0]["stream_type"])
        for row in rows:
            stream.feed(row)
        if stream.type == JOB.name:
            stream.compare(await conn.fetchrow(QUERIES["jobs_by_id"], [stream_id]))
        else:
            projection = PROJECTIONS.get(stream.type)
            if projection is not None:
                stream.compare_state((await projection.rows(conn, [stream_id])).get(stream_id))
    return StreamCheck(events=len(rows), problems=stream.problems, checked_at=checked_at)


class ArchivedCheck(msgspec.Struct, kw_only=True):
    """An archived stream (issue 19): the checkpoint that removed its events, and what of its
    projection row differs from the final state that checkpoint keeps (nothing: it matches)."""

    at: ArchivedAt
    differences: list[str]
    checked_at: datetime


async def verify_archived(pool: asyncpg.Pool, stream_id: uuid.UUID) -> ArchivedCheck | None:
    """For a stream `replay archive` moved out of the log: its checkpoint, and its row (the
    `jobs` row, or its kind's projection row) compared with the state the checkpoint keeps.
    None when no checkpoint names the stream."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        at = await archived_at(conn, stream_id)
        checked_at: datetime = await conn.fetchval("SELECT clock_timestamp()")
        if at is None:
            return None
        if at.kind == JOB.name:
            row = await conn.fetchrow(QUERIES["jobs_by_id"], [stream_id])
            diff = ["row"] if row is None else _differences(at.state, view_from_row(row))
        else:
            projection = PROJECTIONS.get(at.kind)
            assert projection is not None  # every archived kind has one
            stored = (await projection.rows(conn, [stream_id])).get(stream_id)
            diff = projection.differences(at.state, stored)
    return ArchivedCheck(at=at, differences=diff, checked_at=checked_at)
