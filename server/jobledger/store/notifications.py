"""Notifications: the NOTIFY channels of the system, each declared once with the msgspec type
of its payloads, and the one LISTEN connection a process keeps to hear them.

The listener comes back when PostgreSQL drops it (reconnecting with backoff), decodes each
payload with its channel's decoder and hands the typed payload to the handler; a payload it
cannot read is logged here and skipped. After every (re)connection it calls `on_connect` so
the owner can look for what it missed while deaf: a notification is a hint, never the only
way to learn of a change (I7). Given a worker identity it also holds that worker's lock, so
two live processes never share a worker id."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import asyncpg
import msgspec
import structlog

from .db import DB_ERRORS, connect
from .eventstore import EVENTS_CHANNEL, Notification
from .logs import LOGS_CHANNEL, LogBatchNotice

log = structlog.get_logger(__name__)

P = TypeVar("P")


@functools.cache
def _decoder_for(payload_type: type[Any]) -> msgspec.json.Decoder[Any]:
    # One decoder per payload type, however many channels carry it.
    return msgspec.json.Decoder(payload_type)


class Channel(Generic[P]):
    """A NOTIFY channel and the type of its payloads, with the one decoder for them."""

    def __init__(self, name: str, payload_type: type[P]) -> None:
        self.name = name
        self.payload_type = payload_type
        self._decoder: msgspec.json.Decoder[P] = _decoder_for(payload_type)

    def decode(self, payload: str | bytes) -> P:
        """The typed payload; raises `msgspec.DecodeError` (or `ValidationError`)."""
        return self._decoder.decode(payload)

    def renamed(self, name: str) -> Channel[P]:
        """The same payloads under another channel name (an event store told to use one)."""
        return self if name == self.name else Channel(name, self.payload_type)

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {self.payload_type.__name__})"


#: Every append announces the streams it changed (ids, versions, job states; never data).
EVENTS: Channel[Notification] = Channel(EVENTS_CHANNEL, Notification)
#: Every stored batch of job output announces the job and its last seq (never the text).
LOG_BATCHES: Channel[LogBatchNotice] = Channel(LOGS_CHANNEL, LogBatchNotice)


class WorkerIdInUse(RuntimeError):
    """Another live process holds this worker id."""


class _Route(Generic[P]):
    # One channel and its handler: decode, then deliver.
    def __init__(self, channel: Channel[P], handler: Callable[[P], None]) -> None:
        self.channel = channel
        self.handler = handler

    def deliver(self, payload: str) -> None:
        try:
            value = self.channel.decode(payload)
        except msgspec.DecodeError:  # ValidationError is one too
            log.warning("unreadable notification", channel=self.channel.name, payload=payload[:200])
            return
        self.handler(value)


class Listener:
    """One LISTEN connection for the channels given to `on`; see the module docstring.
    Without `identity` it takes no worker lock."""

    def __init__(
        self,
        dsn: str,
        on_connect: Callable[[], None],
        *,
        identity: str | None = None,
        application_name: str | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.on_connect = on_connect
        self.identity = identity
        self.application_name = application_name or (
            f"jobledger-listener:{identity}" if identity is not None else "jobledger-listener"
        )
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.conn: asyncpg.Connection | None = None
        self._routes: dict[str, _Route[Any]] = {}
        self._running = False
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on(self, channel: Channel[P], handler: Callable[[P], None]) -> None:
        """Deliver the decoded payloads of `channel` to `handler` (before `run`)."""
        assert not self._running, "declare channels before the listener runs"
        assert channel.name not in self._routes, f"{channel.name} has a handler already"
        self._routes[channel.name] = _Route(channel, handler)

    async def started(self) -> None:
        """Wait for the first connection; raises `WorkerIdInUse` if the id is taken."""
        await self._first

    async def run(self) -> None:
        """Stay connected until cancelled."""
        self._running = True
        backoff = 0.05
        while True:
            lost = asyncio.Event()
            try:
                self.conn = await connect(self.dsn)
                if self.identity is not None:
                    # Session lock: released by PostgreSQL itself when this process dies.
                    held = await self.conn.fetchval(
                        "SELECT pg_try_advisory_lock(hashtext('jobledger-worker:' || $1))",
                        self.identity,
                    )
                    if not held:
                        raise WorkerIdInUse(
                            f"worker id {self.identity!r} is used by a live process"
                        )
                self.conn.add_termination_listener(lambda _, lost=lost: lost.set())
                for name in self._routes:
                    await self.conn.add_listener(name, self._deliver)
                await self.conn.execute(
                    "SELECT set_config('application_name', $1, false)", self.application_name[:63]
                )
                backoff = 0.05
                self.connected.set()
                if not self._first.done():
                    self._first.set_result(None)
                self.on_connect()
                await lost.wait()
                log.warning("listen connection lost, reconnecting")
            except WorkerIdInUse as exc:
                if not self._first.done():
                    self._first.set_exception(exc)
                    return
                log.error("worker id taken while reconnecting", error=str(exc))
            except DB_ERRORS as exc:
                log.warning("listen connection failed", error=str(exc), retry_in=backoff)
            finally:
                self.connected.clear()
                if self.conn is not None and not self.conn.is_closed():
                    self.conn.terminate()
                self.conn = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        self._routes[channel].deliver(str(payload))
