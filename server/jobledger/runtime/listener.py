"""A LISTEN connection that comes back: reconnects with backoff when PostgreSQL drops it,
and (given an identity) holds the worker's identity lock so two live processes never share a
worker id."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import asyncpg
import structlog

from ..store.db import DatabaseUnavailable, connect

log = structlog.get_logger(__name__)


class WorkerIdInUse(RuntimeError):
    """Another live process holds this worker id."""


class Listener:
    """Delivers payloads of `channel` to `on_payload` (and of each of `extra_channels` to its
    handler); calls `on_connect` after every (re)connection so the owner can look for what it
    missed while deaf. Without `identity` it takes no worker lock."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_payload: Callable[[str], None],
        on_connect: Callable[[], None],
        *,
        identity: str | None = None,
        extra_channels: Mapping[str, Callable[[str], None]] | None = None,
        application_name: str | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.on_payload = on_payload
        self.on_connect = on_connect
        self.identity = identity
        self.extra_channels = dict(extra_channels or {})
        self.application_name = application_name or (
            f"jobledger-listener:{identity}" if identity is not None else "jobledger-listener"
        )
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.conn: asyncpg.Connection | None = None
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def started(self) -> None:
        """Wait for the first connection; raises `WorkerIdInUse` if the id is taken."""
        await self._first

    async def run(self) -> None:
        """Stay connected until cancelled."""
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
                for channel in (self.channel, *self.extra_channels):
                    await self.conn.add_listener(channel, self._deliver)
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
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                DatabaseUnavailable,
            ) as exc:
                log.warning("listen connection failed", error=str(exc), retry_in=backoff)
            finally:
                self.connected.clear()
                if self.conn is not None and not self.conn.is_closed():
                    self.conn.terminate()
                self.conn = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        handler = self.extra_channels.get(channel, self.on_payload)
        handler(str(payload))
