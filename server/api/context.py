"""What handlers share: the app keys, JSON responses, and the metadata of a request's events."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from ..service import JobService

SERVICE = web.AppKey("service", JobService)
REQUEST_ID = web.RequestKey("request_id", str)

_encoder = msgspec.json.Encoder()


def json_response(value: Any, status: int = 200) -> web.Response:
    """Encode with msgspec (structs, datetimes, UUIDs, enums) into a JSON response."""
    return web.Response(status=status, body=_encoder.encode(value), content_type="application/json")
