"""The log hub: one LISTEN connection per server process, fanned out in memory to the
WebSocket handlers following jobs' logs.

Subscribers get a coalesced wake-up ("something may be new for this job"), never the lines:
each handler reads lines from the database after its own cursor, at its own pace. That is
the backpressure for slow clients: a client that reads slowly only delays its own next read,
and what the server holds for it is one event and one page of lines, whatever the job prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web

from ..store.eventstore import Notification
from ..store.logs import LogBatchNotice
from ..store.notifications import EVENTS, LOG_BATCHES, Listener
from .sockets import Hub


class Subscription:
    """One follower of one job: `wake` is set when the job may have new lines or a new state
    (or when the hub reconnected or closes). Clear it before reading, then read, then wait."""

    def __init__(self, job_id: uuid.UUID) -> None:
        self.job_id = job_id
        self.wake = asyncio.Event()

    def clear(self) -> None:
        self.wake.clear()

    async def wait(self, seconds: float) -> None:
        """Until woken, or `seconds` at most (a safety net against a lost notification)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()


class LogHub(Hub):
    """One per server process; see the module docstring."""

    def __init__(self, dsn: str, *, application_name: str | None = None) -> None:
        super().__init__()
        self.dsn = dsn
        self.application_name = application_name or f"jobledger-loghub:{os.getpid()}"
        self._subscribers: dict[uuid.UUID, set[Subscription]] = {}
        self._listener: Listener | None = None
        #: Others in this process that hear the events channel on the hub's one LISTEN
        #: connection (the jobs watch): each change, and each (re)connection.
        self.event_handlers: list[Callable[[Notification], None]] = []
        self.connect_handlers: list[Callable[[], None]] = []

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the LISTEN connection in the background (it retries until the database
        answers; followers re-read when it connects)."""
        self._listener = Listener(self.dsn, self._connected, application_name=self.application_name)
        self._listener.on(LOG_BATCHES, self._on_log_batch)
        self._listener.on(EVENTS, self._on_job_change)
        self._task = asyncio.create_task(self._listener.run(), name="log-hub-listener")

    async def started(self) -> None:
        """Wait for the first LISTEN connection."""
        assert self._listener is not None, "start() first"
        await self._listener.started()

    def _end_all(self) -> None:
        self._wake_all()  # each follower sees `closing` and ends its socket

    # ---- subscribers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def subscribe(self, job_id: uuid.UUID) -> Iterator[Subscription]:
        """Register for a job's wake-ups for the duration of the `with` block."""
        sub = Subscription(job_id)
        self._subscribers.setdefault(job_id, set()).add(sub)
        try:
            with self._joined():
                yield sub
        finally:
            subs = self._subscribers.get(job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[job_id]

    def subscriber_count(self, job_id: uuid.UUID | None = None) -> int:
        """How many followers are registered (for one job, or in all)."""
        if job_id is not None:
            return len(self._subscribers.get(job_id, ()))
        return sum(len(s) for s in self._subscribers.values())

    # ---- notifications --------------------------------------------------------------------

    def _wake(self, job_id: uuid.UUID) -> None:
        for sub in self._subscribers.get(job_id, ()):
            sub.wake.set()

    def _wake_all(self) -> None:
        # After a (re)connection anything may have been missed while deaf: everyone re-reads.
        for subs in self._subscribers.values():
            for sub in subs:
                sub.wake.set()

    def _connected(self) -> None:
        self._wake_all()
        for handler in self.connect_handlers:
            handler()

    def _on_log_batch(self, notice: LogBatchNotice) -> None:
        self._wake(notice.job_id)

    def _on_job_change(self, note: Notification) -> None:
        for handler in self.event_handlers:
            handler(note)
        if note.more:  # the list was cut short: any follower's job may be among the rest
            self._wake_all()
            return
        for change in note.changes:
            self._wake(change.stream_id)


#: The app's hub.
LOG_HUB = web.AppKey("log_hub", LogHub)


def setup(app: web.Application, dsn: str) -> None:
    """Give the app its hub: started with the app, followers released when the server shuts
    down (so open sockets do not hold the shutdown), LISTEN connection closed on cleanup."""
    hub = LogHub(dsn)
    app[LOG_HUB] = hub

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        hub.start()
        yield
        await hub.close()

    async def on_shutdown(_app: web.Application) -> None:
        await hub.release()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
