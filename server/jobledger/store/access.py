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
from ..wire import ServiceAccount, TokenInfo
from .eventstore import Notification
from .queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("access.sql"))
TOKEN_PREFIX = "jl_"
#: Tells every scheduler to look at the queue again (e.g. a raised limit frees slots).
LOOK_AGAIN = msgspec.json.encode(Notification(changes=[], more=True)).decode()


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller a token identifies."""

    token_id: uuid.UUID | None
    role: Role
    #: None for the server-wide admin, who may act in every project.
    project: str | None = None
    service_account: str | None = None
    #: A running job's own token: the job it was issued for (its submits are its children).
    job_id: uuid.UUID | None = None
    #: When the token stops working (None: never, or the server-wide admin token).
    expires_at: datetime | None = None

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
    """The stored form of a token. Any text hashes, even bytes that are not UTF-8 (which
    aiohttp hands over as surrogate escapes): such a token is simply unknown."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class RateSettings(msgspec.Struct, frozen=True):
    """A project's submit rate settings (None: the server's default)."""

    submit_rate: float | None
    submit_burst: int | None


def _principal(row: asyncpg.Record | None, digest: bytes) -> Principal | None:
    if row is None or not hmac.compare_digest(bytes(row["hash"]), digest):
        return None
    if row["revoked_at"] is not None or row["expired"]:
        return None
    if row["service_account_id"] is None:
        return Principal(token_id=row["token_id"], role=Role.ADMIN, expires_at=row["expires_at"])
    return Principal(
        token_id=row["token_id"],
        role=Role(row["role"]),
        project=row["project"],
        service_account=row["name"],
        job_id=row["job_id"],
        expires_at=row["expires_at"],
    )


def _account(row: asyncpg.Record) -> ServiceAccount:
    return ServiceAccount(**{**dict(row), "role": Role(row["role"])})


class AccessStore:
    """Projects, service accounts and tokens: every read of access control, and the token
    check. Their writes are events (`jobledger.administration.AccessService`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def authenticate_many(self, tokens: Sequence[str]) -> list[Principal | None]:
        """The principal each token stands for (None when it is unknown, expired or
        revoked), in one query: the tokens of concurrent requests."""
        digests = [token_hash(t) for t in tokens]
        found = await self.pool.fetch(QUERIES["tokens_by_hash"], digests)
        rows = {bytes(r["hash"]): r for r in found}
        principals = [_principal(rows.get(d), d) for d in digests]
        # Live tokens' use: a write at most once a minute per token, not on every request.
        stale = {
            p.token_id
            for p, d in zip(principals, digests, strict=True)
            if p and rows[d]["stale_use"]
        }
        if stale:
            await self.pool.execute(QUERIES["touch_tokens"], list(stale))
        return principals

    async def project_exists(self, name: str) -> bool:
        exists: bool = await self.pool.fetchval(QUERIES["project_exists"], name)
        return exists

    async def existing_projects(self, names: Sequence[str]) -> set[str]:
        """Which of these projects exist, in one query."""
        return {r["name"] for r in await self.pool.fetch(QUERIES["existing_projects"], names)}

    async def rate_settings(self, project: str) -> RateSettings | None:
        """A project's submit rate settings; None for a project without a row."""
        row = await self.pool.fetchrow(QUERIES["project_rate"], project)
        return RateSettings(row["submit_rate"], row["submit_burst"]) if row else None

    async def service_accounts(self, project: str) -> list[ServiceAccount]:
        """A project's service accounts, by name."""
        rows = await self.pool.fetch(QUERIES["list_service_accounts"], project)
        return [_account(r) for r in rows]

    async def service_account(self, project: str, name: str) -> ServiceAccount | None:
        row = await self.pool.fetchrow(QUERIES["service_account"], project, name)
        return _account(row) if row is not None else None

    async def tokens(self, service_account_id: uuid.UUID) -> list[TokenInfo]:
        """A service account's tokens, oldest first."""
        rows = await self.pool.fetch(QUERIES["list_tokens"], service_account_id)
        return [TokenInfo(**dict(r)) for r in rows]
