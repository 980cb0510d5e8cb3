"""Secret routes: admins set and delete a project's secrets; viewers list them. No route
ever returns a value."""

from __future__ import annotations

from aiohttp import web

from ..domain.secrets import Secret
from ..secretservice import SecretService
from ..wire import Role, SecretList, SecretOut, SecretValue
from .auth import event_meta
from .context import decode_body, json_response
from .params import PATH
from .projects import existing_project
from .routes import Route

#: Sets, deletes and lists secrets (its key encrypts the values).
SECRETS = web.AppKey("secrets", SecretService)


def secret_out(state: Secret) -> SecretOut:
    return SecretOut(
        project=state.project, name=state.name, version=state.version,
        fingerprint=state.fingerprint, updated_by=state.updated_by, updated_at=state.updated_at,
    )  # fmt: skip


async def put_secret(request: web.Request) -> web.Response:
    """PUT /api/v1/projects/{project}/secrets/{secret}: a new version (admin); 201 if it
    creates the secret (first set, or set again after a delete)."""
    project = await existing_project(request, Role.ADMIN)
    body = decode_body(await request.read(), SecretValue)
    state = await request.app[SECRETS].set(
        project, request[PATH]["secret"], body.value, event_meta(request)
    )
    return json_response(
        secret_out(state), status=201 if state.version == state.first_version else 200
    )


async def list_secrets(request: web.Request) -> web.Response:
    """GET /api/v1/projects/{project}/secrets: names, versions, fingerprints, who, when."""
    project = await existing_project(request, Role.VIEWER)
    return json_response(SecretList(await request.app[SECRETS].list(project)))


async def delete_secret(request: web.Request) -> web.Response:
    """DELETE /api/v1/projects/{project}/secrets/{secret}: the secret and all its versions
    (admin); jobs that refer to it and have not started fail to start."""
    project = await existing_project(request, Role.ADMIN)
    await request.app[SECRETS].delete(project, request[PATH]["secret"], event_meta(request))
    return web.Response(status=204)


_BASE = "/api/v1/projects/{project}/secrets"

ROUTES = (
    Route("PUT", f"{_BASE}/{{secret}}", put_secret, "Set a secret (a new version)",
          body=SecretValue, response=SecretOut, status=201, also=(200,), role="admin",
          tags=("secrets",)),
    Route("GET", _BASE, list_secrets, "List a project's secrets (never their values)",
          response=SecretList, tags=("secrets",)),
    Route("DELETE", f"{_BASE}/{{secret}}", delete_secret,
          "Delete a secret and every version of it", status=204, role="admin",
          tags=("secrets",)),
)  # fmt: skip
