"""The projections of administration's streams: `projects`, `service_accounts` and
`api_tokens`, one row per stream, kept inline with the appends (see `domain.access`).

Columns kept beside the log are not the fold's: a project's `created_at`/`updated_at` (the
row's own times; the log's `recorded_at` is the record), a token's `hash` (written by the
service in the append's transaction; never in an event) and `last_used_at` (operational)."""

from __future__ import annotations

from ..domain.access import (
    PROJECT,
    SERVICE_ACCOUNT,
    TOKEN,
    Project,
    ServiceAccountState,
    Token,
)
from .named import Row, StateProjection


def _project(p: Project) -> Row:
    return (p.name, p.max_running_jobs, p.log_limit_bytes, p.submit_rate, p.submit_burst,
            p.created_by, p.retention_days)  # fmt: skip


def _account(a: ServiceAccountState) -> Row:
    return (a.id, a.project, a.name, a.role, a.created_at, a.created_by)


def _token(t: Token) -> Row:
    return (t.service_account_id, t.description, t.created_at, t.created_by, t.expires_at,
            t.revoked_at, t.job_id)  # fmt: skip


PROJECTS = StateProjection(
    PROJECT,
    "projects",
    [
        "name",
        "max_running_jobs",
        "log_limit_bytes",
        "submit_rate",
        "submit_burst",
        "created_by",
        "retention_days",
    ],
    _project,
)
SERVICE_ACCOUNTS = StateProjection(
    SERVICE_ACCOUNT,
    "service_accounts",
    ["id", "project", "name", "role", "created_at", "created_by"],
    _account,
)
#: A token's stream id is its id.
API_TOKENS = StateProjection(
    TOKEN,
    "api_tokens",
    [
        "service_account_id",
        "description",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "job_id",
    ],
    _token,
    key="id",
)
