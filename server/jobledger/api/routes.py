"""The route table: each API module lists its routes once, with the types of their bodies
and answers; the router and the OpenAPI document are both made from it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from .params import PATH, QUERY, parse_path, parse_query

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Where the OpenAPI document is served (without a token).
OPENAPI_PATH = "/api/v1/openapi.json"


@dataclass(frozen=True)
class Query:
    """A query parameter: its name, JSON-schema type and what it does."""

    name: str
    schema: dict[str, Any]
    description: str
    repeated: bool = False
    #: The value when it is absent (a repeated one is then []).
    default: Any = None


@dataclass(frozen=True)
class Route:
    """One operation of the API."""

    method: str
    path: str
    handler: Handler
    summary: str
    #: msgspec type of the JSON body, if it takes one.
    body: Any = None
    #: Other msgspec types the body may have instead (the document says `oneOf`; the handler
    #: tells them apart).
    body_also: tuple[Any, ...] = ()
    #: Whether the body may be left out (defaults apply).
    body_optional: bool = False
    #: msgspec type of the success answer (None: no JSON body).
    response: Any = None
    status: int = 200
    #: Other success statuses with the same body (e.g. 200 for a repeated idempotent submit).
    also: tuple[int, ...] = ()
    query: tuple[Query, ...] = ()
    #: How the answer is carried.
    kind: Literal["json", "text", "websocket"] = "json"
    #: The role the caller needs, for the documentation; None: the server admin.
    role: str | None = "viewer"
    tags: tuple[str, ...] = field(default=())

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)


def register(router: web.UrlDispatcher, routes: Iterable[Route]) -> None:
    """Add the routes to an aiohttp router; each request's query and path parameters are
    parsed by the route's declarations before its handler runs (`params.QUERY`, `PATH`)."""

    def bind(route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            request[PATH] = parse_path(request, route)
            request[QUERY] = parse_query(request, route.query)
            return await route.handler(request)

        handle.__name__ = route.handler.__name__
        return handle

    for r in routes:
        router.add_route(r.method, r.path, bind(r))
