"""What handlers share: the app keys, JSON responses, and the metadata of a request's events."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from ..administration import AccessService
from ..domain.errors import InvalidInput
from ..domain.jobs import unstorable_path
from ..projections.reads import JobReads
from ..service import JobService
from .lookups import Lookups

#: Commands: submit, cancel.
SERVICE = web.AppKey("service", JobService)
#: Reads of jobs, events, logs, audit, project views.
READS = web.AppKey("reads", JobReads)
#: Projects, service accounts, tokens.
ACCESS = web.AppKey("access", AccessService)
LOOKUPS = web.AppKey("lookups", Lookups)
REQUEST_ID = web.RequestKey("request_id", str)

#: What a client-given id (X-Request-Id, X-Correlation-Id) may be: printable ASCII, short,
#: so that it goes back into a header and the log unchanged.
_CLIENT_ID = re.compile(r"[!-~]{1,128}")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
T = TypeVar("T")


def client_id(request: web.Request, header: str) -> str | None:
    """An id the client sent in `header`, if it is one we can echo (else None: make one)."""
    value = request.headers.get(header)
    return value if value is not None and _CLIENT_ID.fullmatch(value) else None


def json_response(value: Any, status: int = 200) -> web.Response:
    """Encode with msgspec (structs, datetimes, UUIDs, enums) into a JSON response."""
    return web.Response(status=status, body=_encoder.encode(value), content_type="application/json")


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def decode_body(data: bytes, type_: type[T]) -> T:
    """Decode a JSON body into `type_`, validating it; what the database or the clock could
    not hold (invalid UTF-8, nesting too deep, NUL, a time outside years 1-9999 in UTC) is a
    400 here rather than an error further in. JSON Schema (and so our OpenAPI document)
    counts `3.0` as an integer; msgspec does not, so a body refused for a float is decoded
    once more with integral floats made ints."""
    try:
        value = _decode(data, type_)
        # An escape could make a NUL or a lone surrogate.
        bad = unstorable_path(msgspec.json.decode(data), "$") if b"\\u" in data else None
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply") from None
    if bad:
        raise InvalidInput(
            "text must be UTF-8 without NUL characters (\\u0000) or lone surrogates", field=bad
        )
    if path := _unrepresentable_time(value, "$"):
        raise InvalidInput("time is out of range once converted to UTC", field=path)
    return value


def _decode(data: bytes, type_: type[T]) -> T:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        if "got `float`" not in str(exc):
            raise
    return msgspec.convert(_integral(msgspec.json.decode(data)), type_)


def _unrepresentable_time(value: Any, path: str) -> str | None:
    """The path of the first aware time that has no UTC form (e.g. year 1 at +01:00)."""
    if isinstance(value, datetime):
        try:
            value.astimezone(UTC)
        except OverflowError:
            return path
        return None
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            if found := _unrepresentable_time(getattr(value, name), f"{path}.{name}"):
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if found := _unrepresentable_time(v, f"{path}[{i}]"):
                return found
    elif isinstance(value, dict):
        for k, v in value.items():
            if found := _unrepresentable_time(v, f"{path}.{k}"):
                return found
    return None
