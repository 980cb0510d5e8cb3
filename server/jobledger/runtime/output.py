"""The log pump's writing half: a job's raw output becomes numbered lines stored in
batches (by time and size), with backpressure instead of loss when the database is slow or
away.

- Output is split into lines per stream; a partial line waits for its end (or for close).
- A line longer than `max_line_bytes` is cut, and says so.
- Past `max_total_bytes` lines are dropped; at close one `system` line says how much.
- `write` waits while too much is pending: the reader stops reading the job's output (a
  process's own writes then block) — storage never drops lines to keep up.
- A batch the database could not take (connection lost, restart, failover) is tried again,
  with backoff, until it is stored: pending lines stay bounded by `max_pending_bytes`
  meanwhile. A batch the database refuses for what it holds is dropped and counted, and at
  close a `system` line says how many lines were lost that way (never seen in practice; it
  keeps one bad batch from stopping the job).
- Lines are masked (`masker`: the job's secret values become `***`) before they are
  stored, so neither the table nor any reader ever sees them.
- A follower that resumes reading output already partly stored (a Docker job adopted by a
  restarted worker) calls `resume`: lines up to the last stored one are then skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from ..metrics import Metrics
from ..store.db import DB_ERRORS
from ..store.logs import LogLine, Stream, append_log_batch, last_log_seq, last_output_line

log = structlog.get_logger(__name__)


class LogLimits:
    """How a job's output is batched and bounded."""

    def __init__(
        self,
        *,
        flush_interval: float = 0.025,
        batch_lines: int = 5000,
        batch_bytes: int = 512 * 1024,
        max_pending_bytes: int = 4 * 1024 * 1024,
        max_line_bytes: int = 16 * 1024,
        max_total_bytes: int = 100 * 1024 * 1024,
        retry_max_seconds: float = 1.0,
    ) -> None:
        self.flush_interval = flush_interval
        self.batch_lines = batch_lines
        self.batch_bytes = batch_bytes
        self.max_pending_bytes = max_pending_bytes
        self.max_line_bytes = max_line_bytes
        self.max_total_bytes = max_total_bytes
        #: Longest wait between two tries of a batch the database did not take: how long
        #: after the database is back the output at most waits to flow again.
        self.retry_max_seconds = retry_max_seconds


#: How long a worker going away waits for the lines it read to be stored.
SHUTDOWN_SECONDS = 10.0
#: SQLSTATE classes of errors that say "not now" rather than "not this": connection (08),
#: transaction rollback (40), resources (53), prerequisite state (55), operator
#: intervention such as a shutdown (57), system errors (58).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
#: How far before the last stored line a resumed follower must read from: lines of stdout
#: and stderr are timestamped by two threads, so their order in time and in the log can
#: differ by a little.
RESUME_MARGIN = timedelta(seconds=1)


def transient(exc: BaseException) -> bool:
    """Whether a failed write may succeed if tried again later (the database was away)."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in _TRANSIENT_CLASSES
    # The driver's own state errors ("another operation is in progress") come from a
    # connection cut mid-query: a new connection fixes them.
    return isinstance(exc, (*DB_ERRORS, asyncpg.InternalClientError))


class _Splitter:
    """Bytes of one stream → complete lines, holding at most one capped partial line."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.partial = bytearray()
        self.cut = 0  # bytes of the current line beyond the cap, discarded

    def feed(self, data: bytes) -> list[str]:
        if (
            not self.partial
            and not self.cut
            and data.endswith(b"\n")
            and data.find(b"\n") == len(data) - 1
            and len(data) <= self.cap
        ):
            # One whole line, as Docker's log gives them: the common case, made short.
            return [data[:-1].decode("utf-8", errors="replace").removesuffix("\r")]
        lines = []
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            self._take(data[start:end])
            lines.append(self._finish())
            start = end + 1
        self._take(data[start:])
        return lines

    def flush(self) -> list[str]:
        """The partial line at the end of the output, if any."""
        return [self._finish()] if self.partial or self.cut else []

    def drop(self) -> None:
        """Forget the partial line (whoever reads the output next reads it again)."""
        self.partial.clear()
        self.cut = 0

    def _take(self, chunk: bytes) -> None:
        room = self.cap - len(self.partial)
        if len(chunk) <= room:
            self.partial += chunk
        else:
            self.partial += chunk[: max(room, 0)]
            self.cut += len(chunk) - max(room, 0)

    def _finish(self) -> str:
        text = bytes(self.partial).decode("utf-8", errors="replace").removesuffix("\r")
        if self.cut:
            text += f" [jobledger: line cut, {self.cut} more bytes]"
        self.partial.clear()
        self.cut = 0
        return text


class LogSink:
    """Collects one attempt's output and writes it to `job_logs` in batches."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        job_id: uuid.UUID,
        attempt: int,
        limits: LogLimits | None = None,
        masker: Callable[[str], str] | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        #: Where the lines stored and dropped are counted (issue 19), if anywhere.
        self.metrics = metrics
        #: Applied to every line of the job's output before it is stored (secret values).
        self.masker = masker
        self.job_id = job_id
        self.attempt = attempt
        self.limits = limits or LogLimits()
        self.seq = 0
        self.stored_bytes = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0
        #: Lines the database refused (not for being away) and the last such error.
        self.lost_lines = 0
        self.lost_error: str | None = None
        self._splitters = {s: _Splitter(self.limits.max_line_bytes) for s in ("stdout", "stderr")}
        self._pending: list[LogLine] = []
        self._pending_bytes = 0
        self._has_pending = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._error: BaseException | None = None
        self._skip_through: LogLine | None = None
        self.log = log.bind(job_id=str(job_id), attempt=attempt)

    async def start(self, *, fresh: bool = False) -> None:
        """Continue the job's numbering (after earlier attempts, unless `fresh`: the job
        has no lines yet) and start flushing."""
        self.seq = 0 if fresh else await last_log_seq(self.pool, self.job_id)
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"logs-{self.job_id}")

    async def resume(self) -> datetime | None:
        """Prepare to be fed this attempt's output again from before its last stored line:
        lines up to that one are skipped. Returns the time to read from (None: from the
        start, nothing is stored yet)."""
        last = await last_output_line(self.pool, self.job_id, self.attempt)
        self._skip_through = last
        return None if last is None else last.ts - RESUME_MARGIN

    async def write(self, stream: Stream, data: bytes, ts: datetime | None = None) -> None:
        """Add raw output of a stream (printed at `ts`, else now); waits while too much is
        waiting to be stored."""
        for text in self._splitters[stream].feed(data):
            self._add(stream, text, ts)
        while self._pending_bytes >= self.limits.max_pending_bytes and self._error is None:
            self._drained.clear()
            await self._drained.wait()
        if self._error is not None:
            raise self._error

    def system(self, text: str) -> None:
        """A line of jobledger's own about this job."""
        self._add("system", text, counted=False)

    async def close(self) -> None:
        """Store what remains (partial lines, the markers of what is missing) and stop;
        waits for the database as long as it takes."""
        for stream, splitter in self._splitters.items():
            for text in splitter.flush():
                self._add(stream, text)  # type: ignore[arg-type]
        if self.dropped_lines:
            self.system(
                f"[jobledger: {self.dropped_lines} lines ({self.dropped_bytes} bytes) dropped: "
                f"the job's log limit of {self.limits.max_total_bytes} bytes was reached]"
            )
        await self._finish()
        if self.lost_lines:  # after the rest: it says what the log above is missing
            self.system(
                f"[jobledger: {self.lost_lines} lines could not be stored: {self.lost_error}]"
            )
            self._closing.clear()
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"logs-{self.job_id}")
            await self._finish()

    async def shutdown(self, seconds: float) -> None:
        """Store the complete lines received so far, for at most `seconds`, and stop: the
        worker is going away. Partial lines and markers are left to whoever follows the
        attempt next (a restarted worker adopting it reads them again)."""
        for splitter in self._splitters.values():
            splitter.drop()
        try:
            await asyncio.wait_for(self._finish(), seconds)
        except TimeoutError:
            self.log.warning("lines not stored before shutdown", lines=len(self._pending))

    async def _finish(self) -> None:
        # The flusher writes what is left, in order, and ends. Cancelling it instead lost a
        # batch whose insert was in flight (measured: 5,000 of 200,000 lines, once).
        self._closing.set()
        self._has_pending.set()
        if self._flusher is not None:
            await self._flusher

    def _add(
        self, stream: Stream, text: str, ts: datetime | None = None, *, counted: bool = True
    ) -> None:
        ts = ts or datetime.now(UTC)
        if counted and self.masker is not None:
            # Whole lines only: a value printed in pieces is masked once its line is whole.
            text = self.masker(text)
        if counted and self._skip_through is not None and self._stored_already(stream, text, ts):
            return
        size = len(text.encode()) if counted else 0
        if counted and self.stored_bytes + size > self.limits.max_total_bytes:
            self.dropped_lines += 1
            self.dropped_bytes += size
            if self.metrics is not None:
                self.metrics.log_lines_dropped.labels("limit").inc()
                self.metrics.log_bytes_dropped.labels("limit").inc(size)
            return
        self.stored_bytes += size
        self.seq += 1
        self._pending.append(
            LogLine(seq=self.seq, stream=stream, ts=ts, text=text, attempt=self.attempt)
        )
        self._pending_bytes += len(text)
        self._has_pending.set()

    def _stored_already(self, stream: Stream, text: str, ts: datetime) -> bool:
        """While resuming: whether a line is one stored before (up to the last stored one)."""
        last = self._skip_through
        assert last is not None
        if (stream, ts, text) == (last.stream, last.ts, last.text):
            self._skip_through = None  # everything after it is new
            return True
        if ts <= last.ts + RESUME_MARGIN:
            return True
        # Not seen again (the engine lost part of its log?): better a gap than a stall.
        self.log.warning("last stored line not found again; storing from here", seq=last.seq)
        self._skip_through = None
        return False

    async def _flush_loop(self) -> None:
        try:
            while True:
                await self._has_pending.wait()
                if self._closing.is_set() and not self._pending:
                    return
                # Let a burst gather into one batch, unless a batch is full or we close.
                if (
                    len(self._pending) < self.limits.batch_lines
                    and self._pending_bytes < self.limits.batch_bytes
                ):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), self.limits.flush_interval)
                if self._pending:
                    await self._write_batch()
                elif not self._closing.is_set():
                    self._has_pending.clear()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: the writer must hear of it, not wait forever
            self.log.exception("storing logs failed")
            self._error = exc
            self._drained.set()

    async def _write_batch(self) -> None:
        """Store the oldest pending lines (a batch), trying until the database takes them;
        only then are they taken off the pending list."""
        n = size = 0
        for line in self._pending:
            if n >= self.limits.batch_lines or size >= self.limits.batch_bytes:
                break
            n += 1
            size += len(line.text)
        batch = self._pending[:n]
        failures = 0
        while True:
            try:
                await append_log_batch(self.pool, self.job_id, self.attempt, batch)
            except Exception as exc:
                if not transient(exc):
                    self.log.error("log batch refused, dropped", lines=n, error=repr(exc))
                    self.lost_lines += n
                    self.lost_error = f"{type(exc).__name__}: {exc}"
                    if self.metrics is not None:
                        self.metrics.log_lines_dropped.labels("refused").inc(n)
                        self.metrics.log_bytes_dropped.labels("refused").inc(_utf8_size(batch))
                    break
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    self.log.warning(
                        "storing logs failed, retrying", error=repr(exc), tries=failures
                    )
                backoff = 0.05 * 2 ** min(failures, 8)
                await asyncio.sleep(min(backoff, self.limits.retry_max_seconds))
                continue
            if failures:
                self.log.info("storing logs works again", tries=failures + 1)
            if self.metrics is not None:
                self.metrics.log_lines.inc(n)
                self.metrics.log_bytes.inc(_utf8_size(batch))
            break
        del self._pending[:n]
        self._pending_bytes -= size
        if not self._pending and not self._closing.is_set():
            self._has_pending.clear()
        if self._pending_bytes < self.limits.max_pending_bytes:
            self._drained.set()


def _utf8_size(lines: list[LogLine]) -> int:
    """The bytes of the lines' text as stored (UTF-8)."""
    return sum(len(line.text.encode()) for line in lines)
