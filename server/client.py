"""A small HTTP client of the jobledger API (aiohttp), for the CLI's client verbs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import aiohttp
import msgspec

from .api.logs import EndMessage, LinesMessage, LogMessage, LogPage
from .store.logs import LogLine

DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds between the client's pings on a followed stream (a silent server is dropped).
HEARTBEAT_SECONDS = 30.0
#: Lines asked for per page when reading a whole log.
PAGE = 5000

_error_decoder = msgspec.json.Decoder(dict[str, Any])
_page_decoder = msgspec.json.Decoder(LogPage)
_message_decoder: msgspec.json.Decoder[LogMessage] = msgspec.json.Decoder(LogMessage)


class ClientError(Exception):
    """A request the server refused or could not answer; `message` is for people."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ServerUnreachable(ClientError):
    """No server answered at the URL."""


class ConnectionDropped(ClientError):
    """The server went away in the middle of a stream, and did not come back in time."""


class Client:
    """One session with a jobledger server; use as `async with Client(url) as c`."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Client(...)`"
        return self._session

    async def get_raw(self, path: str, params: Mapping[str, str | int] | None = None) -> bytes:
        """The body of a GET; raises `ClientError` with the server's message on an error."""
        url = f"{self.base_url}{path}"
        try:
            async with self.session.get(url, params=params) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise ClientError(_error_message(body, resp.reason), resp.status)
                return body
        except aiohttp.ClientConnectionError as exc:
            raise ServerUnreachable(f"cannot reach the server at {self.base_url}: {exc}") from exc

    async def get_json(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        """A GET's decoded JSON body; raises `ClientError` with the server's message."""
        return msgspec.json.decode(await self.get_raw(path, params))

    async def read_logs(self, job_id: str, after: int = 0) -> AsyncIterator[list[LogLine]]:
        """A job's stored lines after seq `after`, page by page."""
        while True:
            raw = await self.get_raw(f"/api/v1/jobs/{job_id}/logs", {"after": after, "limit": PAGE})
            page = _page_decoder.decode(raw)
            if not page.lines:
                return
            yield page.lines
            after = page.next_after

    async def follow_logs(
        self, job_id: str, after: int = 0, *, retries: int = 8, max_backoff: float = 2.0
    ) -> AsyncIterator[LogMessage]:
        """A job's lines after seq `after` as they are stored, then its `EndMessage`. A
        dropped connection is resumed after the last line yielded (no gap, no duplicate),
        up to `retries` times in a row with growing pauses."""
        url = f"{self.base_url}/api/v1/jobs/{job_id}/logs/ws"
        failures, connected_once = 0, False
        while True:
            try:
                # No size limit: the server bounds its frames; a long line must still pass.
                async with self.session.ws_connect(
                    url, params={"after": after}, max_msg_size=0, heartbeat=HEARTBEAT_SECONDS
                ) as ws:
                    connected_once = True
                    async for msg in ws:
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            break
                        message = _message_decoder.decode(msg.data)
                        failures = 0
                        if isinstance(message, EndMessage):
                            yield message
                            return
                        # Defensive: never hand out a line twice, whatever the server sends.
                        fresh = [ln for ln in message.lines if ln.seq > after]
                        if fresh:
                            yield LinesMessage(fresh)
                            after = fresh[-1].seq
                    reason = f"connection closed (code {ws.close_code})"
            except aiohttp.WSServerHandshakeError as exc:
                if 400 <= exc.status < 500:
                    # The upgrade was refused; the JSON route says why in the API's words.
                    await self.get_raw(f"/api/v1/jobs/{job_id}/logs", {"after": after, "limit": 1})
                    raise ClientError(f"server refused the log stream: {exc.message}") from exc
                reason = f"server answered {exc.status}"
            except aiohttp.ClientConnectionError as exc:
                if not connected_once:
                    raise ServerUnreachable(
                        f"cannot reach the server at {self.base_url}: {exc}"
                    ) from exc
                reason = str(exc) or type(exc).__name__
            failures += 1
            if failures > retries:
                raise ConnectionDropped(f"lost the log stream after seq {after}: {reason}")
            await asyncio.sleep(min(max_backoff, 0.125 * 2**failures))


def _error_message(body: bytes, reason: str | None) -> str:
    try:
        return str(_error_decoder.decode(body)["error"]["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return reason or "error"


def print_lines(lines: list[LogLine]) -> None:
    """Write lines the way the job printed them: stdout lines to stdout, the rest (stderr,
    jobledger's own system lines) to stderr."""
    out = "".join(f"{ln.text}\n" for ln in lines if ln.stream == "stdout")
    err = "".join(f"{ln.text}\n" for ln in lines if ln.stream != "stdout")
    # Flushed per batch, so a follower sees lines as they come, in their order per stream.
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()
