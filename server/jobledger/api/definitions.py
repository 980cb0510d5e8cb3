"""Definition and environment routes (viewers read, admins change them), and the submit of
a job by reference to a definition (operators)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from ..catalog import Catalog
from ..domain.definitions import Definition, Environment
from ..domain.errors import Forbidden, NotFound, RateLimited
from ..domain.specs import DEFAULT_PROJECT
from ..domain.templates import DefinitionSpec, DefinitionSubmit, EnvironmentSpec, diff
from ..wire import (
    DefinitionList,
    DefinitionOut,
    DiffOut,
    DisableRequest,
    EnvironmentList,
    EnvironmentOut,
    Role,
    VersionInfo,
    VersionList,
)  # fmt: skip
from .auth import event_meta, principal
from .context import ACCESS, LOOKUPS, decode_body, json_response
from .jobs import submitted_out
from .params import PATH, QUERY
from .projects import existing_project
from .ratelimit import SUBMIT_LIMITER
from .routes import Query, Route

CATALOG = web.AppKey("catalog", Catalog)


class _Probe(msgspec.Struct):
    """Just enough of a submit's body to tell a submit by reference from a spec."""

    definition: object = None


_probe = msgspec.json.Decoder(_Probe)


def is_by_reference(body: bytes) -> bool:
    """Whether a submit's body names a definition (else it is a job spec). A body that is
    not a JSON object is left to the spec's decoder to refuse."""
    try:
        return _probe.decode(body).definition is not None
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return False


async def submit_by_reference(request: web.Request, body: bytes) -> web.Response:
    """POST /api/v1/jobs with `{"definition": NAME, "params": {...}}`: 201 with the new job,
    200 with the earlier one for a repeated idempotency key and the same request."""
    submit = decode_body(body, DefinitionSubmit)
    who = principal(request)
    # As for a spec: a service account's jobs go to its own project unless it says otherwise.
    project = submit.project or who.project or DEFAULT_PROJECT
    if not who.may(project, Role.OPERATOR):
        raise Forbidden(f"{who.actor} may not submit jobs to project {project}", field="$.project")
    if not await request.app[LOOKUPS].project_exists(project):
        raise NotFound(f"project {project} does not exist", field="$.project")
    wait = await request.app[SUBMIT_LIMITER].retry_after(request.app[ACCESS], project, 1)
    if wait is not None:
        raise RateLimited(
            f"project {project} submits too fast; retry in {wait:.2f} s", retry_after=round(wait, 3)
        )
    done = await request.app[CATALOG].submit(
        submit, project, event_meta(request), parent_job=who.job_id
    )
    return json_response(submitted_out(done), status=201 if done.created else 200)


# ---- definitions ------------------------------------------------------------------------------


def _definition_out(state: Definition, version: int | None = None) -> DefinitionOut:
    shown = state.at(version)
    return DefinitionOut(
        project=state.project, name=state.name, version=shown.version,
        saved_by=shown.saved_by, saved_at=shown.saved_at, definition=shown.content,
        latest_version=state.current.version, disabled=state.disabled,
        disabled_reason=state.disabled_reason, updated_by=state.updated_by,
        updated_at=state.updated_at,
    )  # fmt: skip


async def _named(request: web.Request, role: Role, key: str) -> tuple[str, str]:
    project = await existing_project(request, role)
    name: str = request[PATH][key]
    return project, name


async def put_definition(request: web.Request) -> web.Response:
    """PUT .../definitions/{definition}: a new version (201 if it creates the definition;
    the same content as the latest version records nothing and answers 200)."""
    project, name = await _named(request, Role.ADMIN, "definition")
    content = decode_body(await request.read(), DefinitionSpec)
    state, created = await request.app[CATALOG].save_definition(
        project, name, content, event_meta(request)
    )
    return json_response(_definition_out(state), status=201 if created else 200)


async def list_definitions(request: web.Request) -> web.Response:
    """GET .../definitions."""
    project = await existing_project(request, Role.VIEWER)
    return json_response(DefinitionList(await request.app[CATALOG].definitions(project)))


async def get_definition(request: web.Request) -> web.Response:
    """GET .../definitions/{definition}?version=N (default: the latest)."""
    project, name = await _named(request, Role.VIEWER, "definition")
    state = await request.app[CATALOG].definition(project, name)
    return json_response(_definition_out(state, _version(state, request[QUERY]["version"])))


def _version(state: Definition | Environment, version: int | None) -> int | None:
    """A version asked for, checked (404 naming `query.version` for one never saved)."""
    if version is not None and not any(v.version == version for v in state.versions):
        raise NotFound(
            f"{state.name} has no version {version} (latest: {state.current.version})",
            field="query.version",
        )
    return version


async def definition_versions(request: web.Request) -> web.Response:
    """GET .../definitions/{definition}/versions: who saved each version, when."""
    project, name = await _named(request, Role.VIEWER, "definition")
    state = await request.app[CATALOG].definition(project, name)
    return json_response(_versions(state))


def _versions(state: Definition | Environment) -> VersionList:
    return VersionList(
        name=state.name,
        versions=[VersionInfo(version=v.version, saved_by=v.saved_by, saved_at=v.saved_at)
                  for v in state.versions],
    )  # fmt: skip


async def definition_diff(request: web.Request) -> web.Response:
    """GET .../definitions/{definition}/diff?from=N&to=M (to: default the latest)."""
    project, name = await _named(request, Role.VIEWER, "definition")
    state = await request.app[CATALOG].definition(project, name)
    return json_response(_diff(state, request[QUERY]))


def _diff(state: Definition | Environment, query: dict[str, int | None]) -> DiffOut:
    old = state.at(_version_at(state, query["from"], "from"))
    new = state.at(_version_at(state, query["to"], "to"))
    changes = diff(msgspec.to_builtins(old.content), msgspec.to_builtins(new.content))
    return DiffOut(
        name=state.name, from_version=old.version, to_version=new.version, changes=changes
    )


def _version_at(state: Definition | Environment, version: int | None, name: str) -> int | None:
    if version is not None and not any(v.version == version for v in state.versions):
        raise NotFound(f"{state.name} has no version {version}", field=f"query.{name}")
    return version


async def disable_definition(request: web.Request) -> web.Response:
    """POST .../definitions/{definition}/disable: submits are refused (409) until enabled."""
    project, name = await _named(request, Role.ADMIN, "definition")
    body = await request.read()
    reason = decode_body(body, DisableRequest).reason if body.strip() else None
    state = await request.app[CATALOG].disable_definition(
        project, name, reason, event_meta(request)
    )
    return json_response(_definition_out(state))


async def enable_definition(request: web.Request) -> web.Response:
    """POST .../definitions/{definition}/enable."""
    project, name = await _named(request, Role.ADMIN, "definition")
    state = await request.app[CATALOG].enable_definition(project, name, event_meta(request))
    return json_response(_definition_out(state))


async def delete_definition(request: web.Request) -> web.Response:
    """DELETE .../definitions/{definition}: its versions stay in the log (and in the jobs
    made from them); saving the name again continues its numbering."""
    project, name = await _named(request, Role.ADMIN, "definition")
    await request.app[CATALOG].delete_definition(project, name, event_meta(request))
    return web.Response(status=204)


# ---- environments -----------------------------------------------------------------------------


def _environment_out(state: Environment, version: int | None = None) -> EnvironmentOut:
    shown = state.at(version)
    return EnvironmentOut(
        project=state.project, name=state.name, version=shown.version,
        saved_by=shown.saved_by, saved_at=shown.saved_at, environment=shown.content,
        latest_version=state.current.version, updated_by=state.updated_by,
        updated_at=state.updated_at,
    )  # fmt: skip


async def put_environment(request: web.Request) -> web.Response:
    """PUT .../environments/{environment}: a new version (201 if it creates it)."""
    project, name = await _named(request, Role.ADMIN, "environment")
    content = decode_body(await request.read(), EnvironmentSpec)
    state, created = await request.app[CATALOG].save_environment(
        project, name, content, event_meta(request)
    )
    return json_response(_environment_out(state), status=201 if created else 200)


async def list_environments(request: web.Request) -> web.Response:
    """GET .../environments."""
    project = await existing_project(request, Role.VIEWER)
    return json_response(EnvironmentList(await request.app[CATALOG].environments(project)))


async def get_environment(request: web.Request) -> web.Response:
    """GET .../environments/{environment}?version=N."""
    project, name = await _named(request, Role.VIEWER, "environment")
    state = await request.app[CATALOG].environment(project, name)
    return json_response(_environment_out(state, _version(state, request[QUERY]["version"])))


async def environment_versions(request: web.Request) -> web.Response:
    """GET .../environments/{environment}/versions."""
    project, name = await _named(request, Role.VIEWER, "environment")
    return json_response(_versions(await request.app[CATALOG].environment(project, name)))


async def environment_diff(request: web.Request) -> web.Response:
    """GET .../environments/{environment}/diff?from=N&to=M."""
    project, name = await _named(request, Role.VIEWER, "environment")
    state = await request.app[CATALOG].environment(project, name)
    return json_response(_diff(state, request[QUERY]))


async def delete_environment(request: web.Request) -> web.Response:
    """DELETE .../environments/{environment}: jobs already made keep what they resolved;
    a definition that names it can no longer be submitted until it exists again."""
    project, name = await _named(request, Role.ADMIN, "environment")
    await request.app[CATALOG].delete_environment(project, name, event_meta(request))
    return web.Response(status=204)


_VERSION = {"type": "integer", "minimum": 1}
_AT = (Query("version", _VERSION, "the version to show (default: the latest)"),)
_DIFF = (
    Query("from", _VERSION, "the older version (default: the latest)"),
    Query("to", _VERSION, "the newer version (default: the latest)"),
)
_D = "/api/v1/projects/{project}/definitions"
_E = "/api/v1/projects/{project}/environments"

ROUTES = (
    Route("GET", _D, list_definitions, "List a project's definitions", response=DefinitionList),
    Route("PUT", f"{_D}/{{definition}}", put_definition,
          "Save a definition (a new version if its content changed)", body=DefinitionSpec,
          response=DefinitionOut, status=201, also=(200,), role="admin"),
    Route("GET", f"{_D}/{{definition}}", get_definition, "A definition at a version",
          response=DefinitionOut, query=_AT),
    Route("DELETE", f"{_D}/{{definition}}", delete_definition, "Delete a definition",
          status=204, role="admin"),
    Route("GET", f"{_D}/{{definition}}/versions", definition_versions,
          "A definition's versions", response=VersionList),
    Route("GET", f"{_D}/{{definition}}/diff", definition_diff,
          "What changed between two versions of a definition", response=DiffOut, query=_DIFF),
    Route("POST", f"{_D}/{{definition}}/disable", disable_definition,
          "Disable a definition: its submits are refused", body=DisableRequest,
          body_optional=True, response=DefinitionOut, role="admin"),
    Route("POST", f"{_D}/{{definition}}/enable", enable_definition, "Enable a definition",
          response=DefinitionOut, role="admin"),
    Route("GET", _E, list_environments, "List a project's environments",
          response=EnvironmentList),
    Route("PUT", f"{_E}/{{environment}}", put_environment,
          "Save an environment (a new version if its content changed)", body=EnvironmentSpec,
          response=EnvironmentOut, status=201, also=(200,), role="admin"),
    Route("GET", f"{_E}/{{environment}}", get_environment, "An environment at a version",
          response=EnvironmentOut, query=_AT),
    Route("DELETE", f"{_E}/{{environment}}", delete_environment, "Delete an environment",
          status=204, role="admin"),
    Route("GET", f"{_E}/{{environment}}/versions", environment_versions,
          "An environment's versions", response=VersionList),
    Route("GET", f"{_E}/{{environment}}/diff", environment_diff,
          "What changed between two versions of an environment", response=DiffOut,
          query=_DIFF),
)  # fmt: skip
