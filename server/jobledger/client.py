"""A small HTTP client of the jobledger API (aiohttp), for the CLI's client verbs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import msgspec

from .domain.workflows import RUN_TERMINAL
from .wire import (
    AuditPage,
    EndMessage,
    JobList,
    JobOut,
    LinesMessage,
    LogEvent,
    LogLine,
    LogMessage,
    LogPage,
    WorkflowRunOut,
)  # fmt: skip

DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds between the client's pings on a followed stream (a silent server is dropped).
HEARTBEAT_SECONDS = 30.0
#: Lines asked for per page when reading a whole log.
PAGE = 5000
#: Largest page of the job list the server gives.
MAX_JOBS_PAGE = 500
#: `after` past every possible seq (a bigint): the log stream then sends only its end, which
#: is how `wait` learns a job ended without downloading its output.
_NO_LINES = 2**63 - 1

T = TypeVar("T")
Params = Mapping[str, str | int] | Sequence[tuple[str, str | int]]

_error_decoder = msgspec.json.Decoder(dict[str, Any])
_page_decoder = msgspec.json.Decoder(LogPage)
_message_decoder: msgspec.json.Decoder[LogMessage] = msgspec.json.Decoder(LogMessage)
_job_decoder = msgspec.json.Decoder(JobOut)
_list_decoder = msgspec.json.Decoder(JobList)
_audit_decoder = msgspec.json.Decoder(AuditPage)
_run_decoder = msgspec.json.Decoder(WorkflowRunOut)
#: Seconds a workflow run's long-poll waits for a change (the server takes up to 25).
RUN_WAIT_SECONDS = 20.0


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
    """One session with a jobledger server; use as `async with Client(url, token=...) as c`.
    The token goes in an `Authorization: Bearer` header on every request, the log
    WebSocket's included."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
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

    async def request_raw(
        self, method: str, path: str, *, params: Params | None = None, body: Any = None
    ) -> bytes:
        """The body of a request (`body` sent as JSON); raises `ClientError` with the server's
        message on an error status, `ServerUnreachable` when nothing answers."""
        url = f"{self.base_url}{path}"
        data = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self.session.request(
                method, url, params=params, data=data, headers=headers
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise ClientError(_error_message(raw, resp.reason), resp.status)
                return raw
        except aiohttp.ClientConnectionError as exc:
            raise ServerUnreachable(f"cannot reach the server at {self.base_url}: {exc}") from exc
        except aiohttp.InvalidURL as exc:
            raise ClientError(f"not a valid server URL: {self.base_url}") from exc

    async def get_raw(self, path: str, params: Params | None = None) -> bytes:
        """The body of a GET; raises `ClientError` with the server's message on an error."""
        return await self.request_raw("GET", path, params=params)

    async def get_json(self, path: str, params: Params | None = None) -> Any:
        """A GET's decoded JSON body; raises `ClientError` with the server's message."""
        return msgspec.json.decode(await self.get_raw(path, params))

    def _decode(self, decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
        try:
            return decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ClientError(f"unexpected answer from {self.base_url}: {exc}") from exc

    # ---- jobs ---------------------------------------------------------------------------

    async def submit(self, spec: Mapping[str, Any]) -> JobOut:
        """Submit a job spec (the API's JSON fields; the server fills in defaults and
        validates); the new job, or the earlier one for a repeated idempotency key."""
        return self._decode(_job_decoder, await self.request_raw("POST", "/api/v1/jobs", body=spec))

    async def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        project: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        schedule: str | None = None,
        definition: str | None = None,
        parent_job: str | None = None,
    ) -> JobList:
        """One page of the job list, newest first; pass its `next_cursor` as `cursor`.
        `schedule`: the jobs that schedule (of `project`) made; `definition`: the jobs made
        from that definition."""
        params: list[tuple[str, str | int]] = [("state", s) for s in states]
        params += [("label", f"{k}={v}") for k, v in (labels or {}).items()]
        for name, value in (
            ("project", project), ("limit", limit), ("cursor", cursor), ("schedule", schedule),
            ("definition", definition), ("parent_job", parent_job),
        ):  # fmt: skip
            if value is not None:
                params.append((name, value))
        return self._decode(_list_decoder, await self.get_raw("/api/v1/jobs", params))

    async def iter_jobs(
        self,
        *,
        states: Sequence[str] = (),
        project: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int = MAX_JOBS_PAGE,
        schedule: str | None = None,
        definition: str | None = None,
        parent_job: str | None = None,
    ) -> AsyncIterator[list[JobOut]]:
        """Every matching job, page by page, following the cursor to the end."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(
                states=states, project=project, labels=labels, limit=page_size, cursor=cursor,
                schedule=schedule, definition=definition, parent_job=parent_job,
            )  # fmt: skip
            if page.jobs:
                yield page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def iter_audit(
        self, filters: Sequence[tuple[str, str | int]], page_size: int = MAX_JOBS_PAGE
    ) -> AsyncIterator[list[LogEvent]]:
        """Events matching the audit filters (query parameters), newest first, page by page."""
        cursor: int | None = None
        while True:
            params = [*filters, ("limit", page_size)]
            if cursor is not None:
                params.append(("cursor", cursor))
            page = self._decode(_audit_decoder, await self.get_raw("/api/v1/audit", params))
            if page.events:
                yield page.events
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get_job(self, job_id: str) -> JobOut:
        """One job."""
        return self._decode(_job_decoder, await self.get_raw(f"/api/v1/jobs/{job_id}"))

    async def cancel(self, job_id: str, reason: str | None = None) -> JobOut:
        """Ask for a job's cancel; the job afterwards (`cancelled`, or `cancelling` while its
        container stops). A finished job is a 409 `ClientError`."""
        body = {"reason": reason} if reason is not None else {}
        raw = await self.request_raw("POST", f"/api/v1/jobs/{job_id}/cancel", body=body)
        return self._decode(_job_decoder, raw)

    async def rerun(self, job_id: str) -> JobOut:
        """Run an ended job again (issue 16): the new job, linked by `rerun_of`."""
        raw = await self.request_raw("POST", f"/api/v1/jobs/{job_id}/rerun")
        return self._decode(_job_decoder, raw)

    async def wait(
        self, job_id: str, on_lines: Callable[[list[LogLine]], None] | None = None
    ) -> JobOut:
        """Wait for the job to end (told by its log stream's end message, so at once, and
        across dropped connections) and return it. With `on_lines`, the job's whole output
        is handed to it on the way, batch by batch."""
        after = 0 if on_lines is not None else _NO_LINES
        async for message in self.follow_logs(job_id, after=after):
            if isinstance(message, LinesMessage) and on_lines is not None:
                on_lines(message.lines)
        return await self.get_job(job_id)

    # ---- logs ---------------------------------------------------------------------------

    async def read_logs(self, job_id: str, after: int = 0) -> AsyncIterator[list[LogLine]]:
        """A job's stored lines after seq `after`, page by page."""
        while True:
            raw = await self.get_raw(f"/api/v1/jobs/{job_id}/logs", {"after": after, "limit": PAGE})
            page = self._decode(_page_decoder, raw)
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
                    raise ClientError(
                        f"server refused the log stream: {exc.message}", exc.status
                    ) from exc
                reason = f"server answered {exc.status}"
            except aiohttp.ClientConnectionError as exc:
                if not connected_once:
                    raise ServerUnreachable(
                        f"cannot reach the server at {self.base_url}: {exc}"
                    ) from exc
                reason = str(exc) or type(exc).__name__
            except aiohttp.InvalidURL as exc:
                raise ClientError(f"not a valid server URL: {self.base_url}") from exc
            failures += 1
            if failures > retries:
                raise ConnectionDropped(f"lost the log stream after seq {after}: {reason}")
            await asyncio.sleep(min(max_backoff, 0.125 * 2**failures))

    # ---- workflow runs ------------------------------------------------------------------

    async def get_workflow(self, run_id: str) -> WorkflowRunOut:
        """One workflow run with its steps."""
        return self._decode(_run_decoder, await self.get_raw(f"/api/v1/workflows/{run_id}"))

    async def watch_workflow(
        self, run_id: str, *, retries: int = 8, max_backoff: float = 2.0
    ) -> AsyncIterator[WorkflowRunOut]:
        """The run now, then again each time it changes, until it has ended. Changes come by
        long-poll (`after_version`, `wait`: the server answers as soon as the run changes),
        not by polling at an interval. A dropped connection or a restarting server is
        retried up to `retries` times in a row with growing pauses; the version asked
        about makes the retry miss nothing."""
        path = f"/api/v1/workflows/{run_id}"
        version: int | None = None
        failures = 0
        while True:
            params = {} if version is None else {"after_version": version,
                                                 "wait": RUN_WAIT_SECONDS}  # fmt: skip
            try:
                run = self._decode(_run_decoder, await self.get_raw(path, params))
            except ClientError as exc:
                gone = isinstance(exc, ServerUnreachable) or (exc.status or 0) >= 500
                if version is None or not gone:
                    raise
                failures += 1
                if failures > retries:
                    raise ConnectionDropped(f"lost workflow run {run_id}: {exc.message}") from exc
                await asyncio.sleep(min(max_backoff, 0.125 * 2**failures))
                continue
            failures = 0
            if version is None or run.version > version:
                yield run
            version = run.version
            if run.state in RUN_TERMINAL:
                return


def _error_message(body: bytes, reason: str | None) -> str:
    try:
        error = _error_decoder.decode(body)["error"]
        message = str(error["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return reason or "error"
    details = error.get("details")
    field = details.get("field") if isinstance(details, dict) else None
    # Validation messages do not name the field they are about; the details do.
    return f"{message} (at {field})" if field and str(field) not in message else message


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
