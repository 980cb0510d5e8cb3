"""Who may do what: projects, service accounts with a role, and API tokens.

A token is `jl_` + 43 url-safe characters (256 random bits). Only its SHA-256 is stored;
a request's token is hashed and looked up by that hash through a unique index, so the
time a lookup takes says nothing about how close a guess was, and the final comparison
of hashes is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import asyncpg
import msgspec

from ..wire import Role as Role  # a wire type, importable from here too
from .db import Conn
from .queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("access.sql"))
TOKEN_PREFIX = "jl_"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller a token identifies."""

    token_id: uuid.UUID | None
    role: Role
    #: None for the server-wide admin, who may act in every project.
    project: str | None = None
    service_account: str | None = None

    @property
    def is_server_admin(self) -> bool:
        return self.project is None

    @property
    def actor(self) -> str:
        """How events name this caller: `project/account`, or `admin`."""
        return "admin" if self.project is None else f"{self.project}/{self.service_account}"

    def may(self, project: str, role: Role) -> bool:
        """Whether this caller may act with `role` in `project`."""
        return self.is_server_admin or (self.project == project and self.role.allows(role))


def new_token() -> str:
    """A fresh secret token, to be shown once."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def authenticate_many(
    conn: Conn | asyncpg.Pool, tokens: Sequence[str]
) -> list[Principal | None]:
    """The principal each token stands for (None when it is unknown, expired or revoked),
    in one query: the tokens of concurrent requests."""
    digests = [token_hash(t) for t in tokens]
    rows = {bytes(r["hash"]): r for r in await conn.fetch(QUERIES["tokens_by_hash"], digests)}
    principals = [_principal(rows.get(d), d) for d in digests]
    # Live tokens' use: a write at most once a minute per token, not on every request.
    stale = {
        p.token_id for p, d in zip(principals, digests, strict=True) if p and rows[d]["stale_use"]
    }
    if stale:
        await conn.execute(QUERIES["touch_tokens"], list(stale))
    return principals


def _principal(row: asyncpg.Record | None, digest: bytes) -> Principal | None:
    if row is None or not hmac.compare_digest(bytes(row["hash"]), digest):
        return None
    if row["revoked_at"] is not None or row["expired"]:
        return None
    if row["service_account_id"] is None:
        return Principal(token_id=row["token_id"], role=Role.ADMIN)
    return Principal(
        token_id=row["token_id"],
        role=Role(row["role"]),
        project=row["project"],
        service_account=row["name"],
    )


async def issue_token(
    conn: Conn | asyncpg.Pool,
    *,
    service_account_id: uuid.UUID | None,
    created_by: str,
    description: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, asyncpg.Record]:
    """Create a token; returns the secret (never stored) and its row."""
    token = new_token()
    row = await conn.fetchrow(
        QUERIES["insert_token"], uuid.uuid4(), service_account_id, token_hash(token),
        description, created_by, expires_at,
    )  # fmt: skip
    assert row is not None
    return token, row


async def bootstrap_admin_token(conn: Conn | asyncpg.Pool) -> str | None:
    """On a database with no server-wide admin token, create one and return it (to be
    printed once); otherwise None."""
    if await conn.fetchval(QUERIES["admin_token_count"]):
        return None
    token, _ = await issue_token(
        conn, service_account_id=None, created_by="bootstrap", description="first admin token"
    )
    return token
