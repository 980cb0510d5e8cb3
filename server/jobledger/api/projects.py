"""Project administration: projects (server admin), their limits, service accounts and API
tokens (project admins)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import asyncpg
import msgspec
from aiohttp import web

from ..domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ..domain.specs import PROJECT_NAME
from ..projections import queue
from ..store import access
from ..wire import (
    IssuedToken,
    NewProject,
    NewServiceAccount,
    NewToken,
    ProjectLimits,
    ProjectList,
    ProjectView,
    RevokedToken,
    Role,
    ServiceAccount,
    ServiceAccountList,
    TokenInfo,
    TokenList,
)  # fmt: skip
from .auth import principal, require
from .context import SERVICE, decode_body, json_response
from .routes import Route

_NAME = re.compile(PROJECT_NAME)


def project_name(request: web.Request) -> str:
    name = request.match_info["project"]
    if len(name) > 63 or not _NAME.match(name):
        raise InvalidInput(f"not a project name: {name!r}", field="path.project")
    return name


async def create_project(request: web.Request) -> web.Response:
    """POST /api/v1/projects: server admin only."""
    who = principal(request)
    if not who.is_server_admin:
        raise Forbidden("only a server admin may create projects")
    new = decode_body(await request.read(), NewProject)
    pool = request.app[SERVICE].pool
    try:
        await pool.execute(
            access.QUERIES["create_project"],
            new.name, new.max_running_jobs, new.log_limit_bytes, who.actor,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise Conflict(f"project {new.name} exists already", field="$.name") from None
    return json_response(await queue.project_view(pool, new.name), status=201)


async def list_projects(request: web.Request) -> web.Response:
    """GET /api/v1/projects: every project for a server admin, one's own otherwise."""
    pool = request.app[SERVICE].pool
    rows = await pool.fetch(access.QUERIES["list_projects"], principal(request).project)
    return json_response(ProjectList([await queue.project_view(pool, r["name"]) for r in rows]))


async def get_project(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}: limits, running and queued counts."""
    name = project_name(request)
    require(request, name, Role.VIEWER)
    return json_response(await queue.project_view(request.app[SERVICE].pool, name))


async def put_limits(request: web.Request) -> web.Response:
    """PUT /api/v1/projects/{project}/limits."""
    name = project_name(request)
    require(request, name, Role.ADMIN)
    limits = decode_body(await request.read(), ProjectLimits)
    view = await queue.set_project_limit(
        request.app[SERVICE].pool, name, limits.max_running_jobs, limits.log_limit_bytes,
        limits.submit_rate, limits.submit_burst,
    )  # fmt: skip
    return json_response(view)


async def _existing_project(request: web.Request, role: Role) -> str:
    name = project_name(request)
    require(request, name, role)
    if not await request.app[SERVICE].pool.fetchval(access.QUERIES["project_exists"], name):
        raise NotFound(f"project {name} does not exist", project=name)
    return name


async def create_service_account(request: web.Request) -> web.Response:
    """POST /api/v1/projects/{project}/service-accounts."""
    project = await _existing_project(request, Role.ADMIN)
    new = decode_body(await request.read(), NewServiceAccount)
    try:
        row = await request.app[SERVICE].pool.fetchrow(
            access.QUERIES["create_service_account"],
            uuid.uuid4(), project, new.name, new.role.value, principal(request).actor,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise Conflict(f"service account {new.name} exists already", field="$.name") from None
    assert row is not None
    return json_response(msgspec.convert(dict(row), ServiceAccount), status=201)


async def list_service_accounts(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}/service-accounts."""
    project = await _existing_project(request, Role.ADMIN)
    rows = await request.app[SERVICE].pool.fetch(access.QUERIES["list_service_accounts"], project)
    return json_response(
        ServiceAccountList([msgspec.convert(dict(r), ServiceAccount) for r in rows])
    )


async def _service_account(request: web.Request, project: str) -> asyncpg.Record:
    name = request.match_info["account"]
    row = await request.app[SERVICE].pool.fetchrow(access.QUERIES["service_account"], project, name)
    if row is None:
        raise NotFound(f"no service account {name!r} in project {project}")
    return row


async def issue_token(request: web.Request) -> web.Response:
    """POST /api/v1/projects/{project}/service-accounts/{account}/tokens: the secret is in
    this response only."""
    project = await _existing_project(request, Role.ADMIN)
    account = await _service_account(request, project)
    body = await request.read()
    new = decode_body(body, NewToken) if body.strip() else NewToken()
    pool = request.app[SERVICE].pool
    expires_at = None
    if new.expires_in_seconds is not None:
        now: datetime = await pool.fetchval("SELECT clock_timestamp()")
        expires_at = now + timedelta(seconds=new.expires_in_seconds)
    token, row = await access.issue_token(
        pool,
        service_account_id=account["id"],
        created_by=principal(request).actor,
        description=new.description,
        expires_at=expires_at,
    )
    issued = IssuedToken(
        id=row["id"],
        token=token,
        service_account=account["name"],
        project=project,
        expires_at=row["expires_at"],
    )
    return json_response(issued, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}/service-accounts/{account}/tokens (no secrets)."""
    project = await _existing_project(request, Role.ADMIN)
    account = await _service_account(request, project)
    rows = await request.app[SERVICE].pool.fetch(access.QUERIES["list_tokens"], account["id"])
    return json_response(TokenList([msgspec.convert(dict(r), TokenInfo) for r in rows]))


async def revoke_token(request: web.Request) -> web.Response:
    """DELETE /api/v1/projects/{project}/tokens/{token_id}: it stops working at once."""
    project = await _existing_project(request, Role.ADMIN)
    raw = request.match_info["token_id"]
    try:
        token_id = uuid.UUID(raw)
    except ValueError:
        raise InvalidInput(f"token id {raw!r} is not a UUID", field="path.token_id") from None
    row = await request.app[SERVICE].pool.fetchrow(
        access.QUERIES["revoke_token"], token_id, project
    )
    if row is None:
        raise NotFound("no such token in this project", token_id=raw)
    return json_response(RevokedToken(row["id"], row["revoked_at"]))


_BASE = "/api/v1/projects/{project}"

ROUTES = (
    Route("POST", "/api/v1/projects", create_project, "Create a project", body=NewProject,
          response=ProjectView, status=201, role=None),
    Route("GET", "/api/v1/projects", list_projects, "List projects", response=ProjectList),
    Route("GET", _BASE, get_project, "A project's limits and counts", response=ProjectView),
    Route("PUT", f"{_BASE}/limits", put_limits, "Set a project's limits", body=ProjectLimits,
          response=ProjectView, role="admin"),
    Route("POST", f"{_BASE}/service-accounts", create_service_account,
          "Create a service account", body=NewServiceAccount, response=ServiceAccount,
          status=201, role="admin"),
    Route("GET", f"{_BASE}/service-accounts", list_service_accounts, "List service accounts",
          response=ServiceAccountList, role="admin"),
    Route("POST", f"{_BASE}/service-accounts/{{account}}/tokens", issue_token,
          "Issue a token (its secret is in this answer only)", body=NewToken, body_optional=True,
          response=IssuedToken, status=201, role="admin"),
    Route("GET", f"{_BASE}/service-accounts/{{account}}/tokens", list_tokens,
          "List a service account's tokens", response=TokenList, role="admin"),
    Route("DELETE", f"{_BASE}/tokens/{{token_id}}", revoke_token, "Revoke a token",
          response=RevokedToken, role="admin"),
)  # fmt: skip
