"""What the two WebSocket hubs share (the log hub, api/loghub.py, and the jobs watch,
api/watch.py): the sockets a hub serves are registered for the length of a `with` block,
and a shutdown ends them and waits (a grace at most) before stopping the hub's task; each
socket is opened the same way and reads its client in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import WSMsgType, web

#: WebSocket pings, so proxies keep an idle socket open and a dead peer is noticed.
HEARTBEAT_SECONDS = 20.0


class Hub:
    """The lifecycle of a hub: `closing` once it stops serving, `_task` its background task
    (set by `start`), `_joined()` around each socket it serves; `_end_all` tells every
    socket to end."""

    def __init__(self) -> None:
        #: Set once the hub stops serving: sockets end, new ones are refused (503).
        self.closing = False
        self._task: asyncio.Task[None] | None = None
        self._served = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _end_all(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _joined(self) -> Iterator[None]:
        self._served += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._served -= 1
            if not self._served:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Until no socket is served."""
        await self._idle.wait()

    async def release(self, grace: float = 5.0) -> None:
        """End every socket, and wait (`grace` seconds at most) until they have."""
        self.closing = True
        self._end_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()

    async def close(self) -> None:
        """Release the sockets and stop the background task."""
        if not self.closing:
            await self.release()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


async def open_socket(request: web.Request, hub: Hub) -> web.WebSocketResponse:
    """The upgraded socket of a request (503 while the hub shuts down; 400 for a request that
    is not a WebSocket upgrade)."""
    if hub.closing:
        raise web.HTTPServiceUnavailable(reason="server shutting down")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS)
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(reason="this route needs a WebSocket upgrade")
    await ws.prepare(request)
    return ws


@contextlib.asynccontextmanager
async def reading_client(
    ws: web.WebSocketResponse, left: Callable[[], None], name: str
) -> AsyncIterator[None]:
    """Consume what the client sends (pongs, its close frame) in the background for the
    block; `left()` when it goes away."""

    async def read() -> None:
        try:
            async for msg in ws:
                if msg.type is WSMsgType.ERROR:
                    break
        finally:
            left()

    reader = asyncio.create_task(read(), name=name)
    try:
        yield
    finally:
        # Stop reading first: a close() racing a pending receive() drops the connection
        # without waiting for the client's close frame.
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
