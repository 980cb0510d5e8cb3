"""The one mapping from errors to HTTP responses: `{"error": {code, message, details}}`."""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
from aiohttp import web

from ..domain import errors as domain
from ..domain.secrets import UnknownSecret
from ..store.db import RETRY_AFTER_SECONDS
from ..wire import ErrorBody, ErrorResponse

STATUS: dict[type[domain.DomainError], int] = {
    domain.NotFound: 404,
    domain.Unauthenticated: 401,
    domain.Forbidden: 403,
    domain.Conflict: 409,
    domain.RateLimited: 429,
    domain.InvalidValue: 422,  # before its base, InvalidInput
    domain.InvalidInput: 400,
    domain.InvalidTransition: 409,
    domain.IdempotencyConflict: 409,
    domain.ConcurrencyError: 409,
    domain.CorruptLog: 500,
    UnknownSecret: 422,
}

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}

# msgspec says e.g. "Expected `int`, got `str` - at `$.resources.memory_mb`".
# For a bad key of a map: "... - at `key` in `$.env`".
_AT = re.compile(r" - at (?P<key>`key` in )?`(?P<path>\$[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


def error_response(status: int, code: str, message: str, **details: Any) -> web.Response:
    body = ErrorResponse(ErrorBody(code=code, message=message, details=details))
    return web.Response(
        status=status, body=msgspec.json.encode(body), content_type="application/json"
    )


def from_domain(exc: domain.DomainError) -> web.Response:
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    response = error_response(status, exc.code, exc.message, **exc.details)
    if status == 401:  # RFC 9110: a 401 names the scheme it wants
        response.headers["WWW-Authenticate"] = 'Bearer realm="jobledger"'
    if "retry_after" in exc.details:
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.details["retry_after"])))
    return response


def unavailable(message: str = "the database is unavailable; retry later") -> web.Response:
    """503 with `Retry-After`: the database is away or busy, nothing was done (or, for a
    request that writes, what was done is what a retry with its idempotency key finds)."""
    response = error_response(503, "unavailable", message, retry_after=RETRY_AFTER_SECONDS)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def from_validation(exc: msgspec.ValidationError) -> web.Response:
    """422 naming the field at fault as a JSON path (`$.resources.cpu`)."""
    text = str(exc)
    path = "$"
    if m := _AT.search(text):
        path = m.group("path")
        text = text[: m.start()] + (" (in a key)" if m.group("key") else "")
    if m := _UNKNOWN.match(text) or _MISSING.match(text):
        path = f"{path}.{m.group('name')}"
    return error_response(422, "validation_error", text, field=path)


def from_http(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "http_error")
    response = error_response(exc.status, code, exc.reason)
    if "Allow" in exc.headers:  # a 405 says which methods the path takes
        response.headers["Allow"] = exc.headers["Allow"]
    return response
