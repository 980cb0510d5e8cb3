"""What handlers share: the app keys, JSON responses, and the metadata of a request's events."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from aiohttp import web

from ..projections.reads import JobReads
from ..service import JobService
from ..store.access import AccessStore
from .lookups import Lookups

#: Commands: submit, cancel.
SERVICE = web.AppKey("service", JobService)
#: Reads of jobs, events, logs, audit, project views.
READS = web.AppKey("reads", JobReads)
#: Projects, service accounts, tokens.
ACCESS = web.AppKey("access", AccessStore)
LOOKUPS = web.AppKey("lookups", Lookups)
REQUEST_ID = web.RequestKey("request_id", str)

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
T = TypeVar("T")


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
    """Decode a JSON body into `type_`, validating it. JSON Schema (and so our OpenAPI
    document) counts `3.0` as an integer; msgspec does not, so a body refused for a float
    is decoded once more with integral floats made ints."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        if "got `float`" not in str(exc):
            raise
    return msgspec.convert(_integral(msgspec.json.decode(data)), type_)
