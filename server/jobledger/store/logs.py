"""Job output and usage samples: high-volume data kept beside the event log, not in it.

Lines are numbered per job (`seq` from 1, continuing across attempts) and written in
batches; each batch is announced on LOGS_CHANNEL with ids only: `{"job_id", "last_seq"}`.
Readers page by seq, so a client that resumes after the last seq it saw gets no gap and no
duplicate."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import msgspec

# Lines and samples are wire types, importable from here too.
from ..wire import LogLine as LogLine
from ..wire import Stream as Stream
from ..wire import UsageSample as UsageSample
from .db import Conn
from .queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("logs.sql"))

#: Channel announcing new log batches.
LOGS_CHANNEL = "jobledger_logs"


class LogBatchNotice(msgspec.Struct, frozen=True):
    """The payload of a LOGS_CHANNEL notification."""

    job_id: uuid.UUID
    last_seq: int


class _StoredLine(msgspec.Struct, frozen=True, array_like=True):
    # Compact form inside a batch row: the attempt is the row's.
    seq: int
    stream: Stream
    ts: datetime
    text: str


_BATCHES_PER_READ = 32
_encoder = msgspec.json.Encoder()
_batch_decoder = msgspec.json.Decoder(list[_StoredLine])


class LogConflict(RuntimeError):
    """Lines of a job were numbered twice: another writer stored a batch from the same seq."""


async def append_log_batch(
    conn: Conn | asyncpg.Pool, job_id: uuid.UUID, attempt: int, lines: list[LogLine]
) -> None:
    """Store consecutive lines of one attempt as one batch and announce it. Safe to retry:
    a batch that is stored already (its insert committed, the reply was lost) is not stored
    twice; a different batch at the same seq raises `LogConflict`."""
    if not lines:
        return
    stored = [_StoredLine(ln.seq, ln.stream, ln.ts, ln.text) for ln in lines]
    payload = _encoder.encode(stored).decode()
    row = await conn.fetchrow(
        QUERIES["append_log_batch"],
        job_id, lines[0].seq, lines[-1].seq, attempt, payload,
        sum(len(ln.text) for ln in lines), LOGS_CHANNEL,
    )  # fmt: skip
    assert row is not None  # one half of the query always answers
    if not row["stored"] and (row["attempt"], row["last_seq"]) != (attempt, lines[-1].seq):
        raise LogConflict(
            f"lines {lines[0].seq}..{lines[-1].seq} of job {job_id} attempt {attempt}: lines "
            f"from {lines[0].seq} are stored already (attempt {row['attempt']})"
        )


async def read_logs(
    conn: Conn | asyncpg.Pool,
    job_id: uuid.UUID,
    after: int = 0,
    limit: int = 1000,
    max_bytes: int | None = None,
) -> list[LogLine]:
    """Up to `limit` lines of a job after seq `after`, in order; with `max_bytes`, also
    no more lines than reach that many bytes of text (at least one), and only the batches
    they are in are fetched: a reader's memory stays bounded however long the lines."""
    out: list[LogLine] = []
    cursor = after
    size = 0
    full = False
    while not full:
        if max_bytes is None:
            rows = await conn.fetch(QUERIES["read_log_batches"], job_id, cursor, _BATCHES_PER_READ)
        else:
            rows = await conn.fetch(
                QUERIES["read_log_batches_bounded"], job_id, cursor, _BATCHES_PER_READ,
                max_bytes - size,
            )  # fmt: skip
        for row in rows:
            for s in _batch_decoder.decode(row["lines"]):
                if s.seq <= cursor:
                    continue
                out.append(
                    LogLine(
                        seq=s.seq, stream=s.stream, ts=s.ts, text=s.text, attempt=row["attempt"]
                    )
                )
                size += len(s.text)
                if len(out) >= limit or (max_bytes is not None and size >= max_bytes):
                    full = True
                    break
            if full:
                break  # decoding the rest of the fetched batches would be wasted
        # A bounded read may have been cut by the budget, not the log's end: read on.
        if full or not rows or not out or (max_bytes is None and len(rows) < _BATCHES_PER_READ):
            break
        cursor = out[-1].seq
    return out


async def last_log_seq(conn: Conn | asyncpg.Pool, job_id: uuid.UUID) -> int:
    """The highest seq stored for a job; 0 when it has printed nothing yet."""
    value: int = await conn.fetchval(QUERIES["last_log_seq"], job_id)
    return value


async def last_output_line(
    conn: Conn | asyncpg.Pool, job_id: uuid.UUID, attempt: int
) -> LogLine | None:
    """The last stored line an attempt printed itself (stdout or stderr, not jobledger's
    `system` lines); None when it has printed nothing yet."""
    before = 2**63 - 1
    while rows := await conn.fetch(
        QUERIES["last_attempt_batches"], job_id, attempt, before, _BATCHES_PER_READ
    ):
        for row in rows:
            for s in reversed(_batch_decoder.decode(row["lines"])):
                if s.stream != "system":
                    return LogLine(
                        seq=s.seq, stream=s.stream, ts=s.ts, text=s.text, attempt=attempt
                    )
        before = rows[-1]["first_seq"]
    return None


async def append_usage_samples(
    conn: Conn | asyncpg.Pool, job_id: uuid.UUID, attempt: int, samples: list[UsageSample]
) -> None:
    """Store samples of one attempt (a sample already stored is ignored)."""
    if not samples:
        return
    await conn.execute(
        QUERIES["append_usage_samples"], job_id, attempt,
        [s.sampled_at for s in samples], [s.cpu_percent for s in samples],
        [s.memory_bytes for s in samples],
    )  # fmt: skip


async def read_usage_samples(conn: Conn | asyncpg.Pool, job_id: uuid.UUID) -> list[UsageSample]:
    """A job's samples in time order."""
    rows = await conn.fetch(QUERIES["read_usage_samples"], job_id)
    return [UsageSample(**dict(r)) for r in rows]
