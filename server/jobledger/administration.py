"""Administration's writes, each an event with its actor: projects and their limits, service
accounts, API tokens issued and revoked (`domain.access`). Reads and the token check stay
`AccessStore`'s (store/access.py): the tables they read are the projections these appends
keep in the same transaction. A token's hash is written beside the log by the append's
`also` hook, never into an event."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from .domain.access import (
    SERVICE_ACCOUNT,
    CreateProject,
    CreateServiceAccount,
    IssueToken,
    RevokeToken,
    ServiceAccountState,
    SetLimits,
    Token,
    project_stream,
)
from .domain.errors import Conflict, InvalidInput, NotFound
from .domain.events import EventMeta, Recorded
from .service import StreamService
from .store.access import LOOK_AGAIN, QUERIES, AccessStore, Role, new_token, token_hash
from .store.db import Conn
from .store.eventstore import Announce, EventStore, InlineHook
from .wire import ServiceAccount, TokenInfo

#: The actor of the first admin token a server creates for itself.
BOOTSTRAP = "bootstrap"
#: The service account (role operator, created when first needed) whose tokens the jobs of
#: a project get when no service account of that project submitted them: the server admin,
#: a schedule (issue 16).
JOB_ACCOUNT = "jobledger-jobs"


class AccessService(AccessStore):
    """Access control: `AccessStore`'s reads, and writes that go through the log."""

    def __init__(self, pool: asyncpg.Pool, streams: StreamService | None = None) -> None:
        super().__init__(pool)
        self.streams = streams or StreamService(EventStore(pool))

    async def create_project(
        self,
        name: str,
        max_running_jobs: int,
        log_limit_bytes: int | None,
        *,
        meta: EventMeta,
    ) -> None:
        """Create a project; `Conflict` if the name is taken."""
        command = CreateProject(
            name=name, max_running_jobs=max_running_jobs, log_limit_bytes=log_limit_bytes
        )
        await self.streams.execute("project", project_stream(name), command, meta)

    async def set_limits(
        self,
        name: str,
        max_running_jobs: int | None = None,
        log_limit_bytes: int | None = None,
        submit_rate: float | None = None,
        submit_burst: int | None = None,
        retention_days: int | None = None,
        *,
        meta: EventMeta,
    ) -> None:
        """Set how many of a project's jobs may run at once (0 pauses the project), how much
        output each may store and how fast it may submit; None leaves a limit as it is.
        Records `ProjectLimitsChanged` with the limits that changed (nothing if none did)."""
        command = SetLimits(
            name=name, max_running_jobs=max_running_jobs, log_limit_bytes=log_limit_bytes,
            submit_rate=submit_rate, submit_burst=submit_burst, retention_days=retention_days,
        )  # fmt: skip
        await self.streams.execute("project", project_stream(name), command, meta, also=_look_again)

    async def create_service_account(
        self, project: str, name: str, role: Role, *, meta: EventMeta
    ) -> ServiceAccount:
        """Create a service account; `Conflict` if the project has one of that name."""
        command = CreateServiceAccount(
            account_id=uuid.uuid4(), project=project, name=name, role=role.value
        )
        state: ServiceAccountState = await self.streams.execute(
            "service_account", SERVICE_ACCOUNT.stream_id(project, name), command, meta
        )
        return ServiceAccount(
            id=state.id, project=state.project, name=state.name, role=Role(state.role),
            created_at=state.created_at, created_by=state.created_by,
        )  # fmt: skip

    async def issue_token(
        self,
        account: ServiceAccount | None,
        *,
        meta: EventMeta,
        description: str | None = None,
        expires_in_seconds: int | None = None,
    ) -> tuple[str, TokenInfo]:
        """Issue a token to a service account (None: a server-wide admin token), expiring
        after `expires_in_seconds` by the database's clock; returns the secret, which is
        never stored, and the token's record. `TokenIssued` holds neither secret nor hash."""
        token, token_id = new_token(), uuid.uuid4()
        expires_at = (
            await self.pool.fetchval(QUERIES["expires_at"], expires_in_seconds)
            if expires_in_seconds is not None
            else None
        )
        digest = token_hash(token)

        async def keep_hash(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
            await conn.execute(QUERIES["set_token_hash"], token_id, digest)

        command = IssueToken(
            service_account_id=account.id if account else None,
            project=account.project if account else None,
            service_account=account.name if account else None,
            description=description,
            expires_at=expires_at,
        )
        state: Token = await self.streams.execute("token", token_id, command, meta, also=keep_hash)
        return token, _info(state)

    async def job_token_account(
        self, project: str, submitted_by: str, meta: EventMeta
    ) -> ServiceAccount:
        """The service account a job's own token is issued to: the one that submitted the
        job (its actor `project/account`), so the token has its role; otherwise the
        project's `jobledger-jobs` account, with the operator role, created on first use."""
        owner, _, name = submitted_by.partition("/")
        if (
            owner == project
            and name
            and (account := await self.service_account(project, name)) is not None
        ):
            return account
        if (account := await self.service_account(project, JOB_ACCOUNT)) is not None:
            return account
        try:
            return await self.create_service_account(project, JOB_ACCOUNT, Role.OPERATOR, meta=meta)
        except Conflict:  # another worker created it meanwhile
            account = await self.service_account(project, JOB_ACCOUNT)
            assert account is not None
            return account

    async def issue_job_token(
        self, job_id: uuid.UUID, project: str, submitted_by: str, *, meta: EventMeta
    ) -> tuple[str, TokenInfo]:
        """A running job's own token (issue 16): scoped to its project with the role of the
        service account that submitted it (see `job_token_account`), recorded with the job's
        id. It works only while the job runs (the token check looks at the job's state) and
        is revoked when the attempt ends (`revoke_job_tokens`)."""
        account = await self.job_token_account(project, submitted_by, meta)
        token, token_id = new_token(), uuid.uuid4()
        digest = token_hash(token)

        async def keep_hash(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
            await conn.execute(QUERIES["set_token_hash"], token_id, digest)

        command = IssueToken(
            service_account_id=account.id, project=account.project,
            service_account=account.name, description=f"job {job_id}", job_id=job_id,
        )  # fmt: skip
        state: Token = await self.streams.execute("token", token_id, command, meta, also=keep_hash)
        return token, _info(state)

    async def revoke_job_tokens(self, job_id: uuid.UUID, *, meta: EventMeta) -> int:
        """Revoke a job's own tokens that are still live; how many were."""
        rows = await self.pool.fetch(QUERIES["live_job_tokens"], job_id)
        for r in rows:
            await self.revoke_token(r["id"], r["project"], meta=meta)
        return len(rows)

    async def revoke_token(
        self, token_id: uuid.UUID, project: str, *, meta: EventMeta
    ) -> TokenInfo | None:
        """Revoke a token of a project (it stops working at once); None if there is none.
        Revoking it again records nothing and answers as the first time."""
        try:
            state: Token = await self.streams.execute(
                "token", token_id, RevokeToken(project=project), meta
            )
        except (NotFound, InvalidInput):  # InvalidInput: the id of another kind's stream
            return None
        used = await self.pool.fetchval(QUERIES["token_last_used"], token_id)
        return _info(state, last_used_at=used)

    async def bootstrap_admin_token(self) -> str | None:
        """On a database with no server-wide admin token, create one and return it (to be
        printed once); otherwise None. Its `TokenIssued` has the actor `bootstrap`."""
        if await self.pool.fetchval(QUERIES["admin_token_count"]):
            return None
        token, _ = await self.issue_token(
            None, meta=EventMeta(actor=BOOTSTRAP), description="first admin token"
        )
        return token


def _info(state: Token, last_used_at: datetime | None = None) -> TokenInfo:
    return TokenInfo(
        id=state.id, description=state.description, created_at=state.created_at,
        created_by=state.created_by, expires_at=state.expires_at, revoked_at=state.revoked_at,
        last_used_at=last_used_at,
    )  # fmt: skip


async def _look_again_hook(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
    # A raised limit frees slots: every scheduler looks at the queue again. This is the
    # append's one NOTIFY (calling `announce` tells the append it was sent).
    channel, _ = announce([])
    await conn.execute("SELECT pg_notify($1, $2)", channel, LOOK_AGAIN)


_look_again: InlineHook = _look_again_hook
