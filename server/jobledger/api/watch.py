"""The jobs watch (issue 17): a WebSocket per page that pushes job changes, so a job list
updates without polling.

Fed by the events channel on the log hub's one LISTEN connection. Per notification (or per
burst of them: they coalesce while a read is running) the hub reads the changed jobs' rows
once, encodes each once, and hands the bytes to every watcher that may see the job and whose
filters it matches: one read per change whatever the number of watchers. Each watcher has a
bounded queue; one that does not keep up is closed (1013, "too slow"), never buffered.
A change the hub cannot attribute (the LISTEN connection came back, a notification listing
only its first changes, a failed read) becomes a `resync` message: the page reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import msgspec
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from ..projections import jobs as jobs_projection
from ..projections.jobs import JobFilter, matches
from ..projections.reads import JobReads
from ..store.access import Principal
from ..store.db import DB_ERRORS
from ..store.eventstore import Notification
from ..wire import HelloMessage, ResyncMessage, Role, WatchMessage
from .auth import WATCH_PATH, principal
from .context import LOOKUPS, READS, SERVICE
from .dashboard import LIST_FILTERS
from .jobs import job_out, scoped_filter
from .loghub import LOG_HUB
from .lookups import Lookups
from .routes import Query, Route
from .sockets import Hub, open_socket, reading_client

log = structlog.get_logger(__name__)

#: Messages a watcher may have waiting; past that it is too slow and is closed.
WATCH_QUEUE = 1000
#: After a failed read, the hub waits this long before reading again.
RETRY_SECONDS = 1.0

_encoder = msgspec.json.Encoder()
HELLO = _encoder.encode(HelloMessage())
RESYNC = _encoder.encode(ResyncMessage())


class Watcher:
    """One watching socket: who it is, what it asked for, and what waits to be sent (None:
    close with `close_code`)."""

    def __init__(self, who: Principal, filt: JobFilter, capacity: int) -> None:
        self.who = who
        self.filt = filt
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(capacity)
        self.close_code = WSCloseCode.OK
        self.close_reason = b""
        self.ended = False

    def send(self, message: bytes) -> None:
        """Queue a message; a full queue ends the watcher (too slow)."""
        if self.ended:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.end(WSCloseCode.TRY_AGAIN_LATER, b"too slow: reload and watch again")

    def end(self, code: WSCloseCode, reason: bytes = b"") -> None:
        """Stop: what is queued is dropped, the socket closes with `code`."""
        if self.ended:
            return
        self.ended = True
        self.close_code, self.close_reason = code, reason
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class WatchHub(Hub):
    """One per server process; see the module docstring."""

    def __init__(self, reads: JobReads, lookups: Lookups, capacity: int = WATCH_QUEUE) -> None:
        super().__init__()
        self.reads = reads
        self.lookups = lookups
        self.capacity = capacity
        #: Projection reads made (one per notification or burst; a test counts them).
        self.reads_made = 0
        self._watchers: set[Watcher] = set()
        self._pending: set[uuid.UUID] = set()
        self._wake = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="jobs-watch-hub")

    def _end_all(self) -> None:
        for w in list(self._watchers):
            w.end(WSCloseCode.GOING_AWAY, b"server shutting down")

    # ---- watchers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, who: Principal, filt: JobFilter) -> Iterator[Watcher]:
        """Register a watcher for the duration of the `with` block."""
        watcher = Watcher(who, filt, self.capacity)
        self._watchers.add(watcher)
        try:
            with self._joined():
                yield watcher
        finally:
            self._watchers.discard(watcher)

    def watcher_count(self) -> int:
        return len(self._watchers)

    # ---- notifications --------------------------------------------------------------------

    def on_events(self, note: Notification) -> None:
        """An append's announcement: remember the jobs it changed (a notification that lists
        only its first changes cannot be followed: everyone reloads)."""
        if not self._watchers:
            return
        if note.more:
            self.resync()
            return
        ids = {c.stream_id for c in note.changes if c.state}  # a job's change has a state
        if ids:
            self._pending |= ids
            self._wake.set()

    def resync(self) -> None:
        """Tell every watcher to reload (changes may have been missed)."""
        for w in list(self._watchers):
            w.send(RESYNC)

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ids, self._pending = self._pending, set()
            if not ids or not self._watchers:
                continue
            try:
                await self._publish(ids)
            except DB_ERRORS as exc:
                log.warning("jobs watch read failed", error=str(exc))
                self.resync()
                await asyncio.sleep(RETRY_SECONDS)

    async def _publish(self, ids: set[uuid.UUID]) -> None:
        """Read the changed jobs once, encode each once, queue it for whom it concerns."""
        self.reads_made += 1
        views = await jobs_projection.get_many(self.reads.pool, ids)
        reasons = await self.lookups.waiting_reasons(views)
        for view in views:
            job = _encoder.encode(job_out(view, reasons.get(view.id)))
            framed = {
                flag: b'{"type":"job","job":%s,"matches":%s}' % (job, b"true" if flag else b"false")
                for flag in (True, False)
            }
            for w in list(self._watchers):
                if not w.who.may(view.project, Role.VIEWER):
                    continue
                relevant, match = matches(w.filt, view)
                if relevant:
                    w.send(framed[match])


#: The app's watch hub.
WATCH_HUB = web.AppKey("watch_hub", WatchHub)


async def watch_jobs(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/jobs/watch: a WebSocket sending `hello`, then a `job` message for every
    change of a job the caller may see that matches the filters (`matches: false` once its
    state leaves the state filter), and `resync` when changes may have been missed."""
    filt = scoped_filter(request)
    hub = request.app[WATCH_HUB]
    ws = await open_socket(request, hub)
    # Registered before `hello`: a client that loads its list after `hello` misses nothing.
    sockets = request.app[SERVICE].metrics.websockets.labels("jobs_watch")
    with hub.watch(principal(request), filt) as watcher, sockets.track_inprogress():
        async with reading_client(ws, lambda: watcher.end(WSCloseCode.OK), "jobs-watch-reader"):
            try:
                await ws.send_frame(HELLO, WSMsgType.TEXT)
                while (message := await watcher.queue.get()) is not None:
                    await ws.send_frame(message, WSMsgType.TEXT)
            except ConnectionResetError:
                pass  # the client went away in the middle of a send
    if not ws.closed:
        await ws.close(code=watcher.close_code, message=watcher.close_reason)
    return ws


def setup(app: web.Application) -> None:
    """Give the app its watch hub, fed by the log hub's LISTEN connection (call after
    `loghub.setup`); watchers are ended when the server shuts down."""
    log_hub = app[LOG_HUB]
    hub = WatchHub(app[READS], app[LOOKUPS])
    app[WATCH_HUB] = hub
    log_hub.event_handlers.append(hub.on_events)
    log_hub.connect_handlers.append(hub.resync)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        hub.start()
        yield
        await hub.close()

    async def on_shutdown(_app: web.Application) -> None:
        await hub.release()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)


ROUTES = (
    Route("GET", WATCH_PATH, watch_jobs,
          "Watch job changes (WebSocket: `hello`, then `job` messages, `resync` to reload)",
          response=WatchMessage, kind="websocket", query=(
              *LIST_FILTERS,
              Query("access_token", {"type": "string"}, "the token, for browsers"),
          )),
)  # fmt: skip
