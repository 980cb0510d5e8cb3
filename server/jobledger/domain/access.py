"""Administration as streams: projects (their limits), service accounts (their role) and API
tokens (issued, revoked). Every change is an event with its actor, so "who raised the limit
of `etl`" and "who issued the token used for job X" are audit queries; the tables
`projects`, `service_accounts` and `api_tokens` are projections of these streams.

Stream ids: a project's is `PROJECT.stream_id(name, name)`, a service account's
`SERVICE_ACCOUNT.stream_id(project, name)`; a token's stream id is the token's id. A token's
secret and its hash never enter the log: the hash is kept beside it, in `api_tokens`.

Events written by the upgrade that brought these streams (actor `migration`) record rows
that existed before: they carry the row's own `created_at`/`created_by` (and a revoked
token's `revoked_at`), which other events take from the log (recorded_at, actor)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from .errors import Conflict, CorruptLog, NotFound
from .events import Event, EventCodec, Recorded
from .kinds import StreamKind, named_stream_id
from .specs import DEFAULT_MAX_RUNNING_JOBS, DEFAULT_PROJECT

#: A service account's role (the wire's `Role`, which the domain cannot import).
RoleName = Literal["viewer", "operator", "admin"]

# ---- projects ------------------------------------------------------------------------------


class ProjectCreated(Event, frozen=True, kw_only=True):
    """A project exists, with these limits (None: the server's or worker's default)."""

    name: str
    max_running_jobs: int
    log_limit_bytes: int | None = None
    submit_rate: float | None = None
    submit_burst: int | None = None
    #: Set by the upgrade's backfill only: who created the row before the log had it.
    created_by: str | None = None
    #: Issue 19: days finished jobs' output is kept (None: the server's default; 0: forever).
    retention_days: int | None = None


class ProjectLimitsChanged(Event, frozen=True, kw_only=True):
    """Some of a project's limits changed: the fields given are the new values (None:
    unchanged); the old ones are the fold's before this event."""

    max_running_jobs: int | None = None
    log_limit_bytes: int | None = None
    submit_rate: float | None = None
    submit_burst: int | None = None
    retention_days: int | None = None


class Project(msgspec.Struct, frozen=True, kw_only=True):
    """A project's state: its limits and who created it."""

    name: str
    max_running_jobs: int
    log_limit_bytes: int | None = None
    submit_rate: float | None = None
    submit_burst: int | None = None
    created_by: str | None = None
    version: int = 0
    retention_days: int | None = None


class CreateProject(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    max_running_jobs: int = DEFAULT_MAX_RUNNING_JOBS
    log_limit_bytes: int | None = None


class SetLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Set some limits (None: leave as is). On a project that does not exist it creates it
    with the defaults for the limits not given, as the limits route always did."""

    name: str
    max_running_jobs: int | None = None
    log_limit_bytes: int | None = None
    submit_rate: float | None = None
    submit_burst: int | None = None
    retention_days: int | None = None


_LIMITS = ("max_running_jobs", "log_limit_bytes", "submit_rate", "submit_burst", "retention_days")


def decide_project(state: Project | None, command: Any) -> list[Event]:
    """The events of a command on a project, or `Conflict` for a second create."""
    match command:
        case CreateProject(name=name):
            if state is not None:
                raise Conflict(f"project {name} exists already", field="$.name")
            return [
                ProjectCreated(
                    name=name,
                    max_running_jobs=command.max_running_jobs,
                    log_limit_bytes=command.log_limit_bytes,
                )
            ]
        case SetLimits(name=name):
            if state is None:
                given = {k: getattr(command, k) for k in _LIMITS}
                running = given.pop("max_running_jobs")
                if running is None:
                    running = DEFAULT_MAX_RUNNING_JOBS
                return [ProjectCreated(name=name, max_running_jobs=running, **given)]
            changed = {
                k: v
                for k in _LIMITS
                if (v := getattr(command, k)) is not None and v != getattr(state, k)
            }
            return [ProjectLimitsChanged(**changed)] if changed else []
    raise TypeError(f"not a project command: {command!r}")


def evolve_project(state: Project | None, rec: Recorded) -> Project:
    match rec.event:
        case ProjectCreated() as e:
            return Project(
                name=e.name,
                max_running_jobs=e.max_running_jobs,
                log_limit_bytes=e.log_limit_bytes,
                submit_rate=e.submit_rate,
                submit_burst=e.submit_burst,
                created_by=e.created_by or rec.meta.actor,
                version=rec.version,
                retention_days=e.retention_days,
            )
        case ProjectLimitsChanged() as e if state is not None:
            changed = {k: v for k in _LIMITS if (v := getattr(e, k)) is not None}
            return msgspec.structs.replace(state, version=rec.version, **changed)
    raise CorruptLog(
        f"unexpected {type(rec.event).__name__} on a project", stream_id=str(rec.stream_id)
    )


def project_stream(name: str) -> uuid.UUID:
    """The stream id of a project."""
    return named_stream_id("project", name, name)


#: `default` exists from the first start without events (schema.sql's row): its stream
#: starts from this state.
BUILTIN_DEFAULT = Project(
    name=DEFAULT_PROJECT, max_running_jobs=DEFAULT_MAX_RUNNING_JOBS, created_by="jobledger"
)

PROJECT = StreamKind(
    "project",
    EventCodec([ProjectCreated, ProjectLimitsChanged], {}),
    evolve_project,
    decide_project,
    named=True,
    builtin={project_stream(DEFAULT_PROJECT): BUILTIN_DEFAULT},
    own_project=True,
)

# ---- service accounts ----------------------------------------------------------------------


class ServiceAccountCreated(Event, frozen=True, kw_only=True):
    """A service account of a project, with its role. `account_id` is the id tokens and
    the API name it by (older accounts' ids predate their stream)."""

    account_id: uuid.UUID
    project: str
    name: str
    role: RoleName
    #: Set by the upgrade's backfill only: the row's own creation.
    created_at: datetime | None = None
    created_by: str | None = None


class ServiceAccountState(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    project: str
    name: str
    role: RoleName
    created_at: datetime
    created_by: str
    version: int = 0


class CreateServiceAccount(msgspec.Struct, frozen=True, kw_only=True):
    account_id: uuid.UUID
    project: str
    name: str
    role: RoleName


def decide_service_account(state: ServiceAccountState | None, command: Any) -> list[Event]:
    match command:
        case CreateServiceAccount(account_id=aid, project=project, name=name, role=role):
            if state is not None:
                raise Conflict(f"service account {name} exists already", field="$.name")
            return [ServiceAccountCreated(account_id=aid, project=project, name=name, role=role)]
    raise TypeError(f"not a service account command: {command!r}")


def evolve_service_account(state: ServiceAccountState | None, rec: Recorded) -> ServiceAccountState:
    match rec.event:
        case ServiceAccountCreated() as e if state is None:
            return ServiceAccountState(
                id=e.account_id,
                project=e.project,
                name=e.name,
                role=e.role,
                created_at=e.created_at or rec.recorded_at,
                created_by=e.created_by or rec.meta.actor,
                version=rec.version,
            )
    raise CorruptLog(
        f"unexpected {type(rec.event).__name__} on a service account", stream_id=str(rec.stream_id)
    )


SERVICE_ACCOUNT = StreamKind(
    "service_account",
    EventCodec([ServiceAccountCreated], {}),
    evolve_service_account,
    decide_service_account,
    named=True,
)

# ---- tokens --------------------------------------------------------------------------------


class TokenIssued(Event, frozen=True, kw_only=True):
    """An API token was issued (its stream id is the token's id); never its secret or hash.
    No service account: a server-wide admin token."""

    service_account_id: uuid.UUID | None = None
    project: str | None = None
    service_account: str | None = None
    description: str | None = None
    expires_at: datetime | None = None
    #: Set by the upgrade's backfill only: the row's own creation.
    created_at: datetime | None = None
    created_by: str | None = None
    #: Issue 16: a running job's own token (actor: the worker), issued for the job's
    #: attempt and revoked when it ends; it works only while the job runs.
    job_id: uuid.UUID | None = None


class TokenRevoked(Event, frozen=True, kw_only=True):
    """The token stopped working."""

    #: Set by the upgrade's backfill only: when the row was revoked.
    revoked_at: datetime | None = None


class Token(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    service_account_id: uuid.UUID | None
    project: str | None
    service_account: str | None
    description: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    version: int = 0
    job_id: uuid.UUID | None = None


class IssueToken(msgspec.Struct, frozen=True, kw_only=True):
    service_account_id: uuid.UUID | None = None
    project: str | None = None
    service_account: str | None = None
    description: str | None = None
    expires_at: datetime | None = None
    job_id: uuid.UUID | None = None


class RevokeToken(msgspec.Struct, frozen=True, kw_only=True):
    """Revoke a token of this project; revoking it again changes nothing."""

    project: str


def decide_token(state: Token | None, command: Any) -> list[Event]:
    match command:
        case IssueToken():
            if state is not None:
                raise Conflict("token exists already", token_id=str(state.id))
            return [TokenIssued(**msgspec.structs.asdict(command))]
        case RevokeToken(project=project):
            if state is None or state.project is None or state.project != project:
                raise NotFound("no such token in this project")
            return [] if state.revoked_at is not None else [TokenRevoked()]
    raise TypeError(f"not a token command: {command!r}")


def evolve_token(state: Token | None, rec: Recorded) -> Token:
    match rec.event:
        case TokenIssued() as e if state is None:
            return Token(
                id=rec.stream_id,
                service_account_id=e.service_account_id,
                project=e.project,
                service_account=e.service_account,
                description=e.description,
                created_at=e.created_at or rec.recorded_at,
                created_by=e.created_by or rec.meta.actor,
                expires_at=e.expires_at,
                version=rec.version,
                job_id=e.job_id,
            )
        case TokenRevoked() as e if state is not None:
            revoked = e.revoked_at or rec.recorded_at
            return msgspec.structs.replace(state, revoked_at=revoked, version=rec.version)
    raise CorruptLog(
        f"unexpected {type(rec.event).__name__} on a token", stream_id=str(rec.stream_id)
    )


TOKEN = StreamKind("token", EventCodec([TokenIssued, TokenRevoked], {}), evolve_token, decide_token)
