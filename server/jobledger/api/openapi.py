"""The OpenAPI 3.1 document, made from the route table and the msgspec types of bodies and
answers (never written by hand), served at /api/v1/openapi.json without a token."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from aiohttp import web

from .errors import ErrorResponse
from .params import PATH_PARAMS
from .routes import OPENAPI_PATH, Route

__all__ = ["OPENAPI_PATH", "document", "openapi_json"]

OPENAPI_DOC = web.AppKey("openapi_doc", bytes)
_REF = "#/components/schemas/{name}"
_ERRORS = {
    "400": "malformed request or query/path parameter",
    "401": "no token, or an unknown, expired or revoked one",
    "403": "the caller's role does not allow this",
    "404": "no such thing (or it belongs to another project)",
    "409": "conflict with the current state",
    "422": "a body field of the wrong type, out of range or unknown",
    "503": "the database is unavailable: retry after `Retry-After` seconds",
}


def _version() -> str:
    try:
        return version("jobledger")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


def document(routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI document of these routes."""
    routes = list(routes)
    types: list[Any] = [ErrorResponse]
    for r in routes:
        types += [t for t in (r.body, r.response, *r.body_also) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref = dict(zip(map(repr, types), schemas, strict=True))
    error = {"content": {"application/json": {"schema": ref[repr(ErrorResponse)]}}}
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        params: list[dict[str, Any]] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": PATH_PARAMS[p],
            }
            for p in r.path_params
        ]
        for q in r.query:
            schema = {"type": "array", "items": q.schema} if q.repeated else q.schema
            if q.default is not None:
                schema = {**schema, "default": q.default}
            params.append({"name": q.name, "in": "query", "required": False, "schema": schema,
                           "description": q.description, "explode": True})  # fmt: skip
        responses: dict[str, Any] = {}
        for status in (r.status, *r.also):
            answer: dict[str, Any] = {"description": r.summary}
            if r.kind == "json" and r.response is not None:
                answer["content"] = {"application/json": {"schema": ref[repr(r.response)]}}
            elif r.kind == "text":
                answer["content"] = {"text/plain": {"schema": {"type": "string"}}}
            elif r.kind == "websocket":
                answer["description"] += "; upgrade with a WebSocket handshake"
                answer["x-websocket-message"] = ref[repr(r.response)]
            responses[str(status)] = answer
        for code, why in _ERRORS.items():
            responses[code] = {"description": why, **error}
        op: dict[str, Any] = {
            "operationId": r.handler.__name__,
            "summary": r.summary,
            "parameters": params,
            "responses": responses,
            "security": [{"bearer": []}],
            "x-required-role": r.role or "server-admin",
        }
        if r.body is not None:
            op["requestBody"] = {
                "required": not r.body_optional,
                "content": {"application/json": {"schema": _body_schema(r, ref)}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobledger", "version": _version()},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _body_schema(r: Route, ref: dict[str, Any]) -> dict[str, Any]:
    """The schema of a route's body: its type's, or `oneOf` it and its alternatives."""
    if not r.body_also:
        return ref[repr(r.body)]  # type: ignore[no-any-return]
    return {"oneOf": [ref[repr(t)] for t in (r.body, *r.body_also)]}


def install(app: web.Application, routes: Iterable[Route]) -> None:
    """Render the document once and serve it."""
    app[OPENAPI_DOC] = msgspec.json.encode(document(routes))
    app.router.add_get(OPENAPI_PATH, openapi_json)


async def openapi_json(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json."""
    return web.Response(body=request.app[OPENAPI_DOC], content_type="application/json")
