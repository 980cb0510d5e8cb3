"""Connection pools with the codecs every query relies on."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

import asyncpg
import asyncpg.pool
import msgspec

#: A connection, whether held alone or borrowed from a pool.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_encode = msgspec.json.Encoder().encode


def _encode_jsonb(value: Any) -> str:
    # Already-encoded JSON passes through, so hot paths can encode with typed msgspec encoders.
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    return _encode(value).decode()


def _encode_jsonb_binary(value: Any) -> bytes:
    # jsonb's binary format: version 1, then the text.
    if isinstance(value, bytes):
        return b"\x01" + value
    return b"\x01" + _encode_jsonb(value).encode()


def _decode_jsonb_binary(data: bytes) -> str:
    return data[1:].decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb comes back as the raw JSON text (PostgreSQL's canonical output, which the hash
    # chain covers): callers decode it straight into typed structs. Binary, so that COPY
    # (which asyncpg does in binary) works too.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb_binary,
        decoder=_decode_jsonb_binary,
        format="binary",
    )
    await conn.set_type_codec("json", schema="pg_catalog", encoder=_encode_jsonb, decoder=str)


async def _reset(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool. asyncpg's default resets
    session state in a round trip (unlock advisory locks, UNLISTEN, RESET ALL) at every
    release; nothing here leaves session state behind (advisory locks are transaction
    locks, settings are SET LOCAL, listeners are removed), so only an open transaction is
    undone."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached; the message names it (without a password)."""


#: What "the database is away" raises: the network (refused, reset), the server (an error,
#: a shutdown, a terminated backend), the driver (a connection closed under it, or left in a
#: state it cannot go on from: "cannot switch to state ...; another operation is in
#: progress" after a connection was cut mid-operation) or our own `DatabaseUnavailable`.
#: Code that waits for the database to come back catches these.
DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    DatabaseUnavailable,
)

#: SQLSTATE classes that say "not now" rather than "not this": connection exceptions,
#: transaction rollbacks (serialization failure, deadlock), insufficient resources (too many
#: connections), operator intervention (shutdown, "cannot connect now"), system errors.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})

#: Seconds a client is told to wait (`Retry-After`) before trying again.
RETRY_AFTER_SECONDS = 2


def unavailable(exc: BaseException) -> bool:
    """Whether an error from the database means "away or busy, try again" (an HTTP 503), as
    opposed to a query the database refuses (a bug, or bad input: never worth retrying)."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _TRANSIENT_CLASSES
    return isinstance(exc, DB_ERRORS)


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that closes itself when the driver says its protocol state is broken
    (`InternalClientError`: measured after `pg_terminate_backend` cut it mid-operation), so
    the pool replaces it instead of lending it out again to fail the same way."""

    async def _dropping_if_broken(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except asyncpg.InternalClientError:
            self.terminate()
            raise

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._dropping_if_broken(super().execute(*args, **kwargs))

    async def _execute(self, *args: Any, **kwargs: Any) -> Any:
        # fetch, fetchrow, fetchval and prepared statements all go through here.
        return await self._dropping_if_broken(super()._execute(*args, **kwargs))

    async def _executemany(self, *args: Any, **kwargs: Any) -> Any:
        return await self._dropping_if_broken(super()._executemany(*args, **kwargs))


def redact(dsn: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", dsn)


def _unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"cannot connect to {redact(dsn)}: {exc}")


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """A pool whose connections encode and decode JSON the way the store expects."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_reset,
            connection_class=_Connection, **kwargs,
        )  # fmt: skip
    except DB_ERRORS as exc:
        raise _unavailable(dsn, exc) from exc
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with the same codecs as the pool's (for LISTEN and tooling)."""
    try:
        conn = await asyncpg.connect(dsn, connection_class=_Connection)
    except DB_ERRORS as exc:
        raise _unavailable(dsn, exc) from exc
    await _init_connection(conn)
    return conn
