"""Log routes: a page of lines as JSON, the whole log as text, and a WebSocket that follows a
job live (backlog, then new lines as they are stored, then an `end` message)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import msgspec
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from ..domain.jobs import TERMINAL_STATES
from ..projections.reads import JobReads
from ..store.db import DB_ERRORS
from ..wire import EndMessage, LinesMessage, LogLine, LogPage
from .auth import job_for
from .context import READS, SERVICE, json_response
from .jobs import job_id_of
from .loghub import LOG_HUB, LogHub, Subscription
from .params import QUERY
from .routes import Query, Route
from .sockets import open_socket, reading_client

log = structlog.get_logger(__name__)

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
#: Largest `after` accepted: seq is a PostgreSQL bigint.
MAX_SEQ = 2**63 - 1
#: A follower re-checks this often even without a notification (one may be lost).
SAFETY_RECHECK_SECONDS = 5.0
#: Lines read from the database at once while streaming, and their most text in bytes:
#: together they bound the memory each follower holds, however long the log or its lines.
STREAM_PAGE = 20_000
STREAM_PAGE_BYTES = 1024 * 1024
#: A `lines` frame is cut after about this many bytes of text, so frames stay far below
#: clients' message size limits (aiohttp's default is 4 MiB) however long the lines are.
FRAME_BYTES = 256 * 1024

_encoder = msgspec.json.Encoder()


async def get_logs(request: web.Request) -> web.Response:
    """GET /api/v1/jobs/{id}/logs?after=SEQ&limit=N: up to `limit` lines after `after`."""
    job_id = job_id_of(request)
    after, limit = request[QUERY]["after"], request[QUERY]["limit"]
    # State before lines: a terminal state read here guarantees the lines read next are all.
    view = await job_for(request, job_id)
    lines = await request.app[READS].logs(job_id, after, limit)
    return json_response(
        LogPage(lines=lines, next_after=lines[-1].seq if lines else after, state=view.state)
    )


async def get_logs_text(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/jobs/{id}/logs.txt?after=SEQ: the lines stored so far, as plain text,
    streamed page by page so a huge log costs constant memory."""
    job_id = job_id_of(request)
    after = request[QUERY]["after"]
    await job_for(request, job_id)
    reads = request.app[READS]
    # "So far": stop at what is stored now, even if a running job keeps printing.
    upto = await reads.last_log_seq(job_id)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    cursor = after
    try:
        while cursor < upto:
            page = await reads.logs(job_id, cursor, STREAM_PAGE, STREAM_PAGE_BYTES)
            lines = [ln for ln in page if ln.seq <= upto]
            if not lines:
                break
            await response.write("".join(f"{ln.text}\n" for ln in lines).encode())
            cursor = lines[-1].seq
    except DB_ERRORS as exc:
        log.warning("log text stream failed", job_id=str(job_id), error=str(exc))
        # The status is sent already: cut the connection so the client sees a truncated
        # body rather than a complete-looking one.
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def _frames(lines: list[LogLine]) -> Iterator[list[LogLine]]:
    start = size = 0
    for i, line in enumerate(lines):
        size += len(line.text) + 64  # + the fields around the text
        if size >= FRAME_BYTES:
            yield lines[start : i + 1]
            start, size = i + 1, 0
    if start < len(lines):
        yield lines[start:]


async def follow_logs(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/jobs/{id}/logs/ws?after=SEQ: a WebSocket sending `lines` messages (the
    backlog after `after`, then live lines) and an `end` message once the job is finished."""
    job_id = job_id_of(request)
    after = request[QUERY]["after"]
    await job_for(request, job_id)
    hub = request.app[LOG_HUB]
    ws = await open_socket(request, hub)
    # Register before reading the backlog: a batch stored in between then wakes us.
    sockets = request.app[SERVICE].metrics.websockets.labels("logs")
    with hub.subscribe(job_id) as sub, sockets.track_inprogress():
        code, why = WSCloseCode.OK, b""
        async with reading_client(ws, sub.wake.set, f"ws-reader-{job_id}"):
            try:
                code, why = await _stream(ws, hub, sub, request.app[READS], job_id, after)
            except DB_ERRORS as exc:
                log.warning("log stream failed", job_id=str(job_id), error=str(exc))
                # The client resumes after the last line it got, once the database answers.
                code, why = WSCloseCode.TRY_AGAIN_LATER, b"database unavailable"
            except ConnectionResetError:
                pass  # the client went away in the middle of a send
    if not ws.closed:
        await ws.close(code=code, message=why)
    return ws


async def _stream(
    ws: web.WebSocketResponse,
    hub: LogHub,
    sub: Subscription,
    reads: JobReads,
    job_id: uuid.UUID,
    cursor: int,
) -> tuple[WSCloseCode, bytes]:
    """Send lines after `cursor` until the job is finished and all are sent, then `end`;
    returns how to close the socket."""
    while True:
        sub.clear()  # before reading: whatever is stored after this wakes us again
        if ws.closed:
            return WSCloseCode.OK, b""
        if hub.closing:
            return WSCloseCode.GOING_AWAY, b"server shutting down"
        # State before lines: once a job is terminal all its lines are stored, so an empty
        # read after a terminal state means the log is complete.
        view = await reads.job(job_id)
        while True:
            lines = await reads.logs(job_id, cursor, STREAM_PAGE, STREAM_PAGE_BYTES)
            for frame in _frames(lines):
                # Awaiting the send is the backpressure: a slow client slows only its reads.
                await ws.send_frame(_encoder.encode(LinesMessage(frame)), WSMsgType.TEXT)
                cursor = frame[-1].seq
            if not lines or ws.closed:
                break
        if view is not None and view.state in TERMINAL_STATES and not ws.closed:
            end = EndMessage(
                state=view.state,
                exit_code=view.exit_code,
                failure_reason=view.failure_reason,
                last_seq=cursor,
            )
            await ws.send_frame(_encoder.encode(end), WSMsgType.TEXT)
            return WSCloseCode.OK, b""
        await sub.wait(SAFETY_RECHECK_SECONDS)


_AFTER = Query(
    "after",
    {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
    "only lines after this seq",
    default=0,
)

ROUTES = (
    Route("GET", "/api/v1/jobs/{id}/logs", get_logs, "A page of a job's output",
          response=LogPage, query=(
              _AFTER,
              Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size",
                    default=DEFAULT_PAGE),
          )),
    Route("GET", "/api/v1/jobs/{id}/logs.txt", get_logs_text, "A job's output as plain text",
          kind="text", query=(_AFTER,)),
    Route("GET", "/api/v1/jobs/{id}/logs/ws", follow_logs,
          "Follow a job's output (WebSocket: `lines` messages, then `end`)",
          response=LinesMessage | EndMessage, kind="websocket", query=(
              _AFTER,
              Query("access_token", {"type": "string"}, "the token, for browsers"),
          )),
)  # fmt: skip
