"""The loop of a component that reacts to the log (schedule firing, workflow runs): listen
to the events channel, run a round, sleep until a notification wakes it, the round's own
timeout passes, or it is stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..store.eventstore import Notification
from ..store.notifications import EVENTS, Listener


async def run_rounds(
    stop: asyncio.Event,
    wake: asyncio.Event,
    *,
    dsn: str,
    channel: str,
    name: str,
    on_notification: Callable[[Notification], None],
    on_connect: Callable[[], None],
    round: Callable[[], Awaitable[float]],
) -> None:
    """Run `round` (which returns how long to sleep at most) until `stop` is set; a LISTEN
    connection of its own (application name `name`) sets `wake` through `on_notification`,
    and `on_connect` after each (re)connection."""
    listener = Listener(dsn, on_connect, application_name=name)
    listener.on(EVENTS.renamed(channel), on_notification)
    listen_task = asyncio.create_task(listener.run(), name=f"{name}-listener")
    try:
        while not stop.is_set():
            timeout = await round()
            waits = [asyncio.create_task(e.wait()) for e in (wake, stop)]
            try:
                await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
            finally:
                for w in waits:
                    w.cancel()
    finally:
        listen_task.cancel()
        await asyncio.gather(listen_task, return_exceptions=True)
