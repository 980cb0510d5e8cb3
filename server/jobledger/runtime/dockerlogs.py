"""A container's output, read from Docker's logs endpoint into a job's log sink.

Docker keeps what a container prints (its log driver, json-file by default) whoever reads
it, with a timestamp and a stream per entry. Reading that log, not the attach stream, is
what lets a worker resume where it stopped: a restarted worker reads from the time of the
last stored line and the sink skips what it stored already, so the stored log equals what
the container printed, however long no worker read it.

- The raw endpoint (`timestamps=1`, multiplexed: an 8-byte header per entry giving the
  stream and length) keeps stdout and stderr apart and in the engine's order; aiodocker's
  `log()` loses both (docs/docker-engine notes). Each entry is one line, or a piece of at
  most 16 KiB of a longer one (the pieces share the line's timestamp).
- A following read ends when the container stops, but can end before the engine has logged
  the last of the output (measured: a final line without a newline, 2 of 5 times); a
  non-following read of the log's tail afterwards brings what it missed.
- The response is closed however the reading ends: an abandoned one would hold one of the
  client's pooled connections for ever.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError
from structlog.typing import FilteringBoundLogger

from ..store.logs import Stream
from .output import LogSink

_HEADER = struct.Struct(">BxxxL")
_STREAMS: dict[int, Stream] = {1: "stdout", 2: "stderr"}
#: Entries of the log's tail read at first when catching up after a following read; doubled
#: until the last entry read is among them.
_TAIL_FIRST = 64
_TAIL_MAX = 1 << 16
#: A read of less than this waits `_GATHER_SECONDS` for more before it is parsed.
_GATHER_BYTES = 16 * 1024
_GATHER_SECONDS = 0.002
#: How long a reading told to stop may wait for the engine to send nothing older.
_IDLE_SECONDS = 0.3
_UNREADABLE = (DockerError, aiohttp.ClientError, OSError)
#: Entries of stdout and stderr are timestamped by two threads of the engine: their order in
#: time and in the log can differ by a little. Resuming reads from this much earlier.
_RESUME_MARGIN = timedelta(seconds=1)


class Entry:
    """One entry of a container's log: stream, Docker's timestamp (as sent, nanoseconds,
    and as a datetime, microseconds) and the bytes printed."""

    __slots__ = ("data", "stamp", "stream", "ts")

    def __init__(self, stream: Stream, stamp: bytes, data: bytes) -> None:
        self.stream = stream
        self.stamp = stamp  # RFC 3339 with 9 fixed digits: sorts as text, unique in practice
        self.data = data
        self.ts = _parse_stamp(stamp)

    @property
    def key(self) -> tuple[Stream, bytes, bytes]:
        return (self.stream, self.stamp, self.data)


class ContainerOutput:
    """Copies one container's output into a sink, from `since` (None: the start) to the
    container's end, or, once told to stop, to what it printed before that time."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        container_id: str,
        sink: LogSink,
        bound: FilteringBoundLogger,
    ) -> None:
        self.docker = docker
        self.container_id = container_id
        self.sink = sink
        self.log = bound
        #: The last entry given to the sink: a later read continues after it.
        self.last: Entry | None = None
        #: Set when the worker is going away: read what was printed before, then stop.
        self.stop_at: datetime | None = None
        self._waiting_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, since: datetime | None = None) -> None:
        """Start copying in a task of its own."""
        self._task = asyncio.create_task(self._run(since), name=f"output-{self.container_id[:12]}")

    def resume_after(self, last: Entry | None) -> None:
        """Start copying what follows `last`, the last entry an earlier reading of this
        container gave the same sink (e.g. one the engine's restart ended)."""
        self.last = last
        since = None if last is None else last.ts - _RESUME_MARGIN
        self._task = asyncio.create_task(
            self._run(since, after_last=last is not None), name=f"output-{self.container_id[:12]}"
        )

    async def wait(self, seconds: float) -> bool:
        """Wait, at most `seconds`, for the copying to reach the container's end."""
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=seconds)
        return bool(done)

    def stop_soon(self) -> None:
        """From now on, copy only what was printed before now."""
        self.stop_at = datetime.now(UTC)

    async def close(self, seconds: float = 0.0) -> None:
        """Stop copying; after `stop_soon`, first let it copy, for at most `seconds`, what
        was printed before (until the engine has nothing older to send)."""
        if self._task is None:
            return
        deadline = time.monotonic() + seconds
        while not self._task.done() and self.stop_at is not None and not self._idle():
            if time.monotonic() >= deadline:
                self.log.warning("stopped reading the container's output before catching up")
                break
            await asyncio.wait({self._task}, timeout=0.05)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def _idle(self) -> bool:
        """Whether the reading waits for the engine, and has waited a while."""
        return (
            self._waiting_since is not None
            and time.monotonic() - self._waiting_since > _IDLE_SECONDS
        )

    async def _run(self, since: datetime | None, *, after_last: bool = False) -> None:
        try:
            async with contextlib.aclosing(self._read(follow=True, since=since)) as entries:
                await self._copy(entries, after_last=after_last)
            if self.stop_at is None:
                await self._catch_up(since)
        except _UNREADABLE as e:
            # The engine went away: what it logged is read by whoever follows the job next.
            self.log.warning("reading the container's output failed", error=str(e))
        except StopCopying:
            pass
        except Exception:
            self.log.exception("copying the container's output failed")
            raise

    async def _catch_up(self, since: datetime | None) -> None:
        """After a following read: the entries of the log after the last one read."""
        if self.last is None:
            async with contextlib.aclosing(self._read(follow=False, since=since)) as entries:
                await self._copy(entries)
            return
        tail = _TAIL_FIRST
        while tail <= _TAIL_MAX:
            async with contextlib.aclosing(self._read(follow=False, tail=tail)) as read:
                entries = [e async for e in read]
            keys = [e.key for e in entries]
            if self.last.key in keys:
                after = len(keys) - keys[::-1].index(self.last.key)
                for e in entries[after:]:
                    await self._give(e)
                return
            if len(entries) < tail:
                break  # that was the whole log, and the last entry read is not in it
            tail *= 4
        # Not in the tail: read from a little before its time, skipping up to it.
        since = self.last.ts - _RESUME_MARGIN
        async with contextlib.aclosing(self._read(follow=False, since=since)) as entries:
            await self._copy(entries, after_last=True)

    async def _copy(self, entries: AsyncIterator[Entry], *, after_last: bool = False) -> None:
        """Give the entries to the sink; with `after_last`, only those after `self.last`."""
        last = self.last if after_last else None
        async for e in entries:
            if last is not None:
                if e.key == last.key:
                    last = None  # everything after it is new
                    continue
                if e.ts <= last.ts + _RESUME_MARGIN:
                    continue
                self.log.warning("last entry read not found again; reading on from here")
                last = None
            await self._give(e)

    async def _give(self, e: Entry) -> None:
        if self.stop_at is not None and e.ts >= self.stop_at:
            raise StopCopying
        await self.sink.write(e.stream, e.data, e.ts)
        self.last = e

    async def _read(
        self, *, follow: bool, since: datetime | None = None, tail: int | None = None
    ) -> AsyncIterator[Entry]:
        """The entries of the log (from `since`, or the last `tail`), as they come."""
        params: dict[str, str] = {"stdout": "1", "stderr": "1", "timestamps": "1"}
        if follow:
            params["follow"] = "1"
        if since is not None:
            params["since"] = _unix(since)
        if tail is not None:
            params["tail"] = str(tail)
        async with self.docker._query(
            f"containers/{self.container_id}/logs",
            params=params,  # type: ignore[arg-type]
            timeout=aiohttp.ClientTimeout(),  # a following read lasts as long as the job
        ) as response:
            try:
                async for e in self._parse(response):
                    yield e
            finally:
                response.close()

    async def _parse(self, response: aiohttp.ClientResponse) -> AsyncIterator[Entry]:
        buf = bytearray()
        while True:
            self._waiting_since = time.monotonic()
            try:
                chunk = await response.content.readany()
            except aiohttp.ClientPayloadError:
                chunk = b""  # the engine went away mid-stream: an end like any other
            finally:
                self._waiting_since = None
            if not chunk:
                return
            if len(chunk) < _GATHER_BYTES:
                # The engine sends each entry on its own: a short pause lets a burst gather
                # and be read in one go rather than one wake-up per line (3x the CPU).
                await asyncio.sleep(_GATHER_SECONDS)
                with contextlib.suppress(aiohttp.ClientPayloadError):  # the next read ends it
                    chunk += response.content.read_nowait()
            buf += chunk
            pos = 0
            while len(buf) - pos >= _HEADER.size:
                kind, size = _HEADER.unpack_from(buf, pos)
                end = pos + _HEADER.size + size
                if end > len(buf):
                    break
                stamp, _, data = bytes(buf[pos + _HEADER.size : end]).partition(b" ")
                pos = end
                if (stream := _STREAMS.get(kind)) is not None:
                    yield Entry(stream, stamp, data)
            del buf[:pos]


class StopCopying(Exception):
    """An entry printed after the time the copying was told to stop at."""


def _parse_stamp(stamp: bytes) -> datetime:
    # "2026-11-26T14:18:14.032167287Z": Python keeps microseconds.
    try:
        return datetime.fromisoformat(stamp[:26].decode() + "+00:00")
    except ValueError:  # not a timestamp: the line still counts
        return datetime.now(UTC)


def _unix(ts: datetime) -> str:
    """A time as the engine's `since` takes it: seconds.nanoseconds since the epoch."""
    utc = ts.astimezone(UTC)
    return f"{calendar.timegm(utc.timetuple())}.{utc.microsecond:06d}000"
