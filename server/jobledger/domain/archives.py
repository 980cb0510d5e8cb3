"""The `archive` kind (issue 19): one stream per `jobledger replay archive` run, one
`StreamsArchived` checkpoint event per batch of streams it moved out of the log into a file.

The checkpoint is what the log keeps of those streams: which ones, how many events, the
positions they spanned, the file and its SHA-256, and each stream's final state (a job's as
its `jobs` row shows it, a workflow run's as its fold), so that verify and rebuild still
account for them (I2). The
append-only guard lets a transaction delete events only of the streams a checkpoint it
wrote lists (schema.sql, `events_delete_archived`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from .errors import InvalidTransition
from .events import Event, EventCodec, Recorded
from .kinds import StreamKind


class StreamsArchived(Event, frozen=True, kw_only=True, omit_defaults=True):
    #: The cut-off: the streams are of jobs that ended before it.
    before: datetime
    #: The file's name (in the directory the run wrote to) and the SHA-256 of its bytes.
    file: str
    sha256: str
    #: The streams removed from the log (the guard reads this list), and their events.
    streams: list[uuid.UUID]
    events: int
    first_position: int
    last_position: int
    #: Each stream's final state by stream id (a job: its JobView as JSON; a workflow run:
    #: its `Run` fold as JSON).
    states: dict[str, Any]
    #: Each stream's kind by stream id; a stream not named here is a job (checkpoints
    #: written before workflow runs were archived name none).
    kinds: dict[str, str] = msgspec.field(default_factory=dict)

    def kind_of(self, stream_id: uuid.UUID | str) -> str:
        """The kind of an archived stream: `job` unless the checkpoint says otherwise."""
        return self.kinds.get(str(stream_id), "job")


class ArchiveRun(msgspec.Struct, frozen=True, kw_only=True):
    batches: int = 0
    streams: int = 0
    events: int = 0
    version: int = 0


class RecordBatch(msgspec.Struct, frozen=True):
    checkpoint: StreamsArchived


def decide(state: ArchiveRun | None, command: object) -> list[Event]:
    match command:
        case RecordBatch(checkpoint=checkpoint):
            return [checkpoint]
    raise InvalidTransition(f"cannot {type(command).__name__} an archive run")


def evolve(state: ArchiveRun | None, rec: Recorded) -> ArchiveRun:
    run = state or ArchiveRun()
    match rec.event:
        case StreamsArchived(streams=streams, events=events):
            return ArchiveRun(
                batches=run.batches + 1,
                streams=run.streams + len(streams),
                events=run.events + events,
                version=rec.version,
            )
    raise AssertionError(f"unexpected {rec.event!r}")


ARCHIVE = StreamKind("archive", EventCodec([StreamsArchived], {}), evolve, decide)
