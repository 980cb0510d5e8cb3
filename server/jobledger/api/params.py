"""Query and path parameters, parsed once for every route from what its table entry
declares (type, bounds, enum, format, default): the same schema the OpenAPI document shows
is the one requests are held to. A bad value is a 400 naming `query.NAME` or `path.NAME`."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..domain.errors import InvalidInput
from ..domain.specs import PROJECT_NAME

if TYPE_CHECKING:
    from .routes import Query, Route

#: The parsed query parameters of a request (absent ones: their default, or [] if repeated).
QUERY = web.RequestKey("query", dict)
#: The parsed path parameters of a request.
PATH = web.RequestKey("path", dict)

#: The schema of each path parameter, by name: what requests are held to and what the
#: OpenAPI document shows.
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "format": "uuid"},
    "token_id": {"type": "string", "format": "uuid"},
    "project": {"type": "string", "pattern": PROJECT_NAME, "maxLength": 63},
    "account": {"type": "string"},
    "secret": {"type": "string", "pattern": PROJECT_NAME, "maxLength": 63},
    "definition": {"type": "string", "pattern": PROJECT_NAME, "maxLength": 63},
    "environment": {"type": "string", "pattern": PROJECT_NAME, "maxLength": 63},
    "schedule": {"type": "string", "pattern": PROJECT_NAME, "maxLength": 63},
    "run": {"type": "string", "format": "uuid"},
}

_patterns: dict[str, re.Pattern[str]] = {}


def _bad(where: str, message: str) -> InvalidInput:
    return InvalidInput(message, field=where)


def _time(raw: str, name: str, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(where, f"{name} is not an ISO 8601 time: {raw!r}") from None
    if value.tzinfo is None:
        raise _bad(where, f"{name} needs a timezone offset, e.g. {raw}Z")
    try:  # an instant near year 1 or 9999 may not exist in UTC
        return value.astimezone(UTC)
    except OverflowError:
        raise _bad(where, f"{name} is out of range: {raw!r}") from None


def _number(raw: str, name: str, where: str, integer: bool) -> int | float:
    try:
        value: int | float = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise _bad(where, f"{name} is not {kind}: {raw!r}") from None
    if not math.isfinite(value):
        raise _bad(where, f"{name} must be a finite number")
    return value


def parse_value(schema: Mapping[str, Any], raw: str, name: str, where: str) -> Any:
    """One value by its JSON schema: integer/number with bounds, string with a format
    (date-time with an offset, uuid), an enum or a pattern."""
    kind = schema.get("type")
    if kind in ("integer", "number"):
        value = _number(raw, name, where, kind == "integer")
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f">= {low}"
            raise _bad(where, f"{name} must be {span}")
        return value
    if "enum" in schema and raw not in schema["enum"]:
        raise _bad(where, f"unknown {name} {raw!r}; one of: {', '.join(schema['enum'])}")
    if (pattern := schema.get("pattern")) is not None:
        compiled = _patterns.get(pattern) or _patterns.setdefault(pattern, re.compile(pattern))
        too_long = "maxLength" in schema and len(raw) > schema["maxLength"]
        if too_long or not compiled.match(raw):
            raise _bad(where, f"{name} {raw!r} is not of the form {pattern}")
    match schema.get("format"):
        case "date-time":
            return _time(raw, name, where)
        case "uuid":
            try:
                return uuid.UUID(raw)
            except ValueError:
                raise _bad(where, f"{name} {raw!r} is not a UUID") from None
    return raw


def parse_query(request: web.Request, queries: Sequence[Query]) -> dict[str, Any]:
    """The declared query parameters of a request; a repeated one with an enum also takes
    comma-separated values."""
    out: dict[str, Any] = {}
    for q in queries:
        where = f"query.{q.name}"
        values = request.query.getall(q.name, [])
        if not q.repeated:
            if len(values) > 1:
                raise _bad(where, f"query parameter {q.name!r} given more than once")
            out[q.name] = parse_value(q.schema, values[0], q.name, where) if values else q.default
            continue
        if "enum" in q.schema:
            values = [part for v in values for part in v.split(",")]
        out[q.name] = [parse_value(q.schema, v, q.name, where) for v in values]
    return out


def parse_path(request: web.Request, route: Route) -> dict[str, Any]:
    """The path parameters of a request, by the schemas in `PATH_PARAMS`."""
    return {
        name: parse_value(PATH_PARAMS[name], request.match_info[name], name, f"path.{name}")
        for name in route.path_params
    }
