"""Secrets: set (a new version, encrypted in the append's transaction), delete, list, and
rotate the key. Values go in and never come out of here except to a worker starting a job
(`runtime.secretenv`)."""

from __future__ import annotations

import asyncpg

from .domain.errors import InvalidInput
from .domain.events import EventMeta, Recorded
from .domain.secrets import (
    MAX_SECRET_BYTES,
    SECRET,
    DeleteSecret,
    NoSecretsKey,
    Secret,
    SecretSet,
    SetSecret,
)
from .service import StreamService
from .store import secretvalues
from .store.db import Conn
from .store.eventstore import Announce, EventStore
from .store.secretbox import SecretBox
from .wire import SecretOut


def check_value(value: str) -> None:
    """Refuse a value no environment variable can hold, or one too large."""
    if not value:
        raise InvalidInput("a secret's value must not be empty", field="$.value")
    if len(value.encode()) > MAX_SECRET_BYTES:
        raise InvalidInput(
            f"a secret's value may hold at most {MAX_SECRET_BYTES} bytes", field="$.value"
        )
    if "\x00" in value:
        raise InvalidInput("a secret's value must not contain NUL characters", field="$.value")


class SecretService:
    """The one way secrets change."""

    def __init__(self, store: EventStore, box: SecretBox | None) -> None:
        self.store = store
        self.pool = store.pool
        self.box = box
        self.streams = StreamService(store)

    def _box(self) -> SecretBox:
        if self.box is None:
            raise NoSecretsKey(
                "this server holds no secrets key: set JOBLEDGER_SECRETS_KEY or "
                "JOBLEDGER_SECRETS_KEY_FILE and restart it"
            )
        return self.box

    async def set(self, project: str, name: str, value: str, meta: EventMeta) -> Secret:
        """Store a new version of a secret; its SecretSet and its ciphertext commit together."""
        check_value(value)
        box = self._box()

        async def store_value(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
            for rec in recorded:
                if isinstance(rec.event, SecretSet):
                    v = rec.event.version
                    sealed = box.encrypt(project, name, v, value)
                    await secretvalues.put_value(conn, project, name, v, box.key_id, sealed)

        command = SetSecret(project=project, name=name, fingerprint=box.fingerprint(value))
        state: Secret = await self.streams.execute(
            SECRET.name, SECRET.stream_id(project, name), command, meta, also=store_value
        )
        return state

    async def delete(self, project: str, name: str, meta: EventMeta) -> Secret:
        """Delete a secret and every stored version of it; `NotFound` if there is none."""

        async def drop_values(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
            await secretvalues.delete_values(conn, project, name)

        state: Secret = await self.streams.execute(
            SECRET.name, SECRET.stream_id(project, name), DeleteSecret(), meta, also=drop_values
        )
        return state

    async def list(self, project: str) -> list[SecretOut]:
        """A project's live secrets (never a value)."""
        rows = await self.pool.fetch(secretvalues.QUERIES["list_secrets"], project)
        return [SecretOut(project=project, **dict(r)) for r in rows]


async def rotate_key(pool: asyncpg.Pool, old: SecretBox, new: SecretBox) -> int:
    """Re-encrypt every stored value under `new`, in one transaction (all or none); returns
    how many. A value already under `new` is left as it is, so a rotation that was
    interrupted can be run again. A value under neither key fails it, naming both."""
    n = 0
    async with pool.acquire() as conn, conn.transaction():
        for r in await conn.fetch(secretvalues.QUERIES["all_values_for_update"]):
            if r["key_id"] == new.key_id:
                continue
            p, name, v = r["project"], r["name"], r["version"]
            value = old.decrypt(p, name, v, r["key_id"], r["ciphertext"])
            sealed = new.encrypt(p, name, v, value)
            await conn.execute(secretvalues.QUERIES["update_value"], p, name, v, new.key_id, sealed)
            n += 1
    return n
