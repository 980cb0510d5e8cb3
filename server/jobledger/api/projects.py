"""Project administration: projects (server admin), their limits, service accounts and API
tokens (project admins)."""

from __future__ import annotations

from aiohttp import web

from ..domain.errors import Forbidden, NotFound
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
    TokenList,
)  # fmt: skip
from .auth import event_meta, principal, require
from .context import ACCESS, LOOKUPS, READS, decode_body, json_response
from .params import PATH
from .routes import Route


async def create_project(request: web.Request) -> web.Response:
    """POST /api/v1/projects: server admin only."""
    who = principal(request)
    if not who.is_server_admin:
        raise Forbidden("only a server admin may create projects")
    new = decode_body(await request.read(), NewProject)
    await request.app[ACCESS].create_project(
        new.name, new.max_running_jobs, new.log_limit_bytes, meta=event_meta(request)
    )
    return json_response(await request.app[READS].project(new.name), status=201)


async def list_projects(request: web.Request) -> web.Response:
    """GET /api/v1/projects: every project for a server admin, one's own otherwise."""
    return json_response(ProjectList(await request.app[READS].projects(principal(request).project)))


async def get_project(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}: limits, running and queued counts."""
    name = await existing_project(request, Role.VIEWER)
    return json_response(await request.app[READS].project(name))


async def put_limits(request: web.Request) -> web.Response:
    """PUT /api/v1/projects/{project}/limits."""
    name = await existing_project(request, Role.ADMIN)
    limits = decode_body(await request.read(), ProjectLimits)
    await request.app[ACCESS].set_limits(
        name, limits.max_running_jobs, limits.log_limit_bytes, limits.submit_rate,
        limits.submit_burst, limits.retention_days, meta=event_meta(request),
    )  # fmt: skip
    return json_response(await request.app[READS].project(name))


async def existing_project(request: web.Request, role: Role) -> str:
    """The `{project}` of the path, if the caller may act there with `role` (403) and it
    exists (404: one rule for an unknown project everywhere)."""
    name: str = request[PATH]["project"]
    require(request, name, role)
    if not await request.app[LOOKUPS].project_exists(name):
        raise NotFound(f"project {name} does not exist", project=name)
    return name


async def create_service_account(request: web.Request) -> web.Response:
    """POST /api/v1/projects/{project}/service-accounts."""
    project = await existing_project(request, Role.ADMIN)
    new = decode_body(await request.read(), NewServiceAccount)
    account = await request.app[ACCESS].create_service_account(
        project, new.name, new.role, meta=event_meta(request)
    )
    return json_response(account, status=201)


async def list_service_accounts(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}/service-accounts."""
    project = await existing_project(request, Role.ADMIN)
    accounts = await request.app[ACCESS].service_accounts(project)
    return json_response(ServiceAccountList(accounts))


async def _service_account(request: web.Request, project: str) -> access.ServiceAccount:
    name = request[PATH]["account"]
    account = await request.app[ACCESS].service_account(project, name)
    if account is None:
        raise NotFound(f"no service account {name!r} in project {project}")
    return account


async def issue_token(request: web.Request) -> web.Response:
    """POST /api/v1/projects/{project}/service-accounts/{account}/tokens: the secret is in
    this response only."""
    project = await existing_project(request, Role.ADMIN)
    account = await _service_account(request, project)
    body = await request.read()
    new = decode_body(body, NewToken) if body.strip() else NewToken()
    token, info = await request.app[ACCESS].issue_token(
        account,
        meta=event_meta(request),
        description=new.description,
        expires_in_seconds=new.expires_in_seconds,
    )
    issued = IssuedToken(
        id=info.id,
        token=token,
        service_account=account.name,
        project=project,
        expires_at=info.expires_at,
    )
    return json_response(issued, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}/service-accounts/{account}/tokens (no secrets)."""
    project = await existing_project(request, Role.ADMIN)
    account = await _service_account(request, project)
    tokens = await request.app[ACCESS].tokens(account.id)
    return json_response(TokenList(tokens))


async def revoke_token(request: web.Request) -> web.Response:
    """DELETE /api/v1/projects/{project}/tokens/{token_id}: it stops working at once."""
    project = await existing_project(request, Role.ADMIN)
    token_id = request[PATH]["token_id"]
    info = await request.app[ACCESS].revoke_token(token_id, project, meta=event_meta(request))
    if info is None:
        raise NotFound("no such token in this project", token_id=str(token_id))
    assert info.revoked_at is not None
    return json_response(RevokedToken(info.id, info.revoked_at))


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
