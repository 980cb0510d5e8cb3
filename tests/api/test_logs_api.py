"""Log routes: JSON pages, the text log, and the WebSocket that follows a job live (backlog,
live batches, end, resume without gap or duplicate, many clients on one LISTEN connection)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from jobledger.api.app import create_app
from jobledger.api.loghub import LOG_HUB, LogHub
from jobledger.domain.events import EventMeta, FailureReason
from jobledger.domain.jobs import Fail, Finish, RequestCancel, Start
from jobledger.service import JobService
from jobledger.store.logs import LogLine, Stream, append_log_batch
from tests.conftest import ADMIN_TOKEN
from tests.factories import spec

Client = TestClient[web.Request, web.Application]
WS = aiohttp.ClientWebSocketResponse

META = EventMeta(actor="test")
T0 = datetime(2030, 1, 1, tzinfo=UTC)
MISSING = "01a2087c-db01-725b-b63a-f89db42493f1"
#: A failsafe against a hung test, never a timing assertion.
PATIENCE = 20


def text_of(seq: int) -> str:
    return f"line {seq} ünïcode"


def make_lines(first: int, last: int, stream: Stream = "stdout", width: int = 0) -> list[LogLine]:
    pad = "x" * width
    return [
        LogLine(seq=s, stream=stream, ts=T0 + timedelta(milliseconds=s), text=text_of(s) + pad)
        for s in range(first, last + 1)
    ]


async def write(
    service: JobService, job_id: uuid.UUID, first: int, last: int, *, batch: int = 100, **kw: Any
) -> None:
    """Store lines first..last the way a worker does: in batches, one NOTIFY each."""
    for start in range(first, last + 1, batch):
        await append_log_batch(
            service.pool, job_id, 1, make_lines(start, min(start + batch - 1, last), **kw)
        )


async def new_job(service: JobService, *, started: bool = True) -> uuid.UUID:
    view, _ = await service.submit(spec(), META)
    if started:
        await service.execute(view.id, Start(worker_id="w1"), META)
    return view.id


def hub_of(client: Client) -> LogHub:
    return client.app[LOG_HUB]


async def receive(ws: WS) -> dict[str, Any]:
    async with asyncio.timeout(PATIENCE):
        msg = await ws.receive()
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def lines_until(ws: WS, last_seq: int) -> list[dict[str, Any]]:
    """Every line the socket sends up to seq `last_seq` (no `end` may come first)."""
    out: list[dict[str, Any]] = []
    while not out or out[-1]["seq"] < last_seq:
        message = await receive(ws)
        assert message["type"] == "lines", message
        assert message["lines"], "a lines message is never empty"
        out.extend(message["lines"])
    return out


async def end_and_close(ws: WS) -> dict[str, Any]:
    """The `end` message, then a normal close by the server."""
    end = await receive(ws)
    assert end["type"] == "end", end
    async with asyncio.timeout(PATIENCE):
        closing = await ws.receive()
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED), closing
    assert ws.close_code == aiohttp.WSCloseCode.OK
    return end


def seqs(lines: list[dict[str, Any]]) -> list[int]:
    return [ln["seq"] for ln in lines]


async def no_followers_left(hub: LogHub) -> None:
    async with asyncio.timeout(PATIENCE):
        await hub.wait_idle()
    assert hub.subscriber_count() == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ws-reader")]


# ---- JSON and text ------------------------------------------------------------------------


async def test_json_pages_by_after_and_limit(client: Client, service: JobService) -> None:
    job = await new_job(service, started=False)
    await write(service, job, 1, 25, batch=7)
    page = await (await client.get(f"/api/v1/jobs/{job}/logs?limit=10")).json()
    assert seqs(page["lines"]) == list(range(1, 11))
    assert page["next_after"] == 10 and page["state"] == "queued"
    assert page["lines"][0] == {
        "seq": 1,
        "stream": "stdout",
        "ts": "2030-01-01T00:00:00.001000Z",
        "text": text_of(1),
        "attempt": 1,
    }
    page = await (await client.get(f"/api/v1/jobs/{job}/logs?after=10&limit=10")).json()
    assert seqs(page["lines"]) == list(range(11, 21)) and page["next_after"] == 20
    page = await (await client.get(f"/api/v1/jobs/{job}/logs?after=20&limit=10")).json()
    assert seqs(page["lines"]) == list(range(21, 26)) and page["next_after"] == 25
    page = await (await client.get(f"/api/v1/jobs/{job}/logs?after=25")).json()
    assert page["lines"] == [] and page["next_after"] == 25
    everything = await (await client.get(f"/api/v1/jobs/{job}/logs")).json()
    assert seqs(everything["lines"]) == list(range(1, 26))


async def test_json_shows_the_final_state(client: Client, service: JobService) -> None:
    job = await new_job(service)
    await write(service, job, 1, 3)
    await service.execute(job, Fail(reason=FailureReason.TIMEOUT), META)
    page = await (await client.get(f"/api/v1/jobs/{job}/logs")).json()
    assert page["state"] == "failed" and seqs(page["lines"]) == [1, 2, 3]


async def test_text_log_streams_every_line(client: Client, service: JobService) -> None:
    job = await new_job(service)
    await write(service, job, 1, 12_000, batch=500)  # more than one page of the stream
    await write(service, job, 12_001, 12_010, stream="stderr")
    await service.execute(job, Finish(exit_code=0), META)
    resp = await client.get(f"/api/v1/jobs/{job}/logs.txt")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await resp.text() == "".join(f"{text_of(s)}\n" for s in range(1, 12_011))
    tail = await client.get(f"/api/v1/jobs/{job}/logs.txt?after=12005")
    assert await tail.text() == "".join(f"{text_of(s)}\n" for s in range(12_006, 12_011))


async def test_text_log_of_a_running_job_is_what_is_stored_so_far(
    client: Client, service: JobService
) -> None:
    job = await new_job(service)
    resp = await client.get(f"/api/v1/jobs/{job}/logs.txt")
    assert resp.status == 200 and await resp.text() == ""
    await write(service, job, 1, 5)
    resp = await client.get(f"/api/v1/jobs/{job}/logs.txt")
    assert await resp.text() == "".join(f"{text_of(s)}\n" for s in range(1, 6))


# ---- WebSocket ----------------------------------------------------------------------------


async def test_ws_sends_backlog_after_then_live_batches_then_end(
    client: Client, service: JobService
) -> None:
    job = await new_job(service)
    await write(service, job, 1, 100)
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws?after=40") as ws:
        assert seqs(await lines_until(ws, 100)) == list(range(41, 101))
        await write(service, job, 101, 150, batch=10)  # while connected
        live = await lines_until(ws, 150)
        assert seqs(live) == list(range(101, 151))
        assert live[0] == {
            "seq": 101,
            "stream": "stdout",
            "ts": "2030-01-01T00:00:00.101000Z",
            "text": text_of(101),
            "attempt": 1,
        }
        await service.execute(job, Finish(exit_code=0), META)
        end = await end_and_close(ws)
    assert end == {
        "type": "end",
        "state": "succeeded",
        "exit_code": 0,
        "failure_reason": None,
        "last_seq": 150,
    }
    await no_followers_left(hub_of(client))


async def test_ws_of_a_finished_job_sends_all_then_end(client: Client, service: JobService) -> None:
    job = await new_job(service)
    await write(service, job, 1, 20)
    await service.execute(job, Finish(exit_code=3), META)
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws") as ws:
        assert seqs(await lines_until(ws, 20)) == list(range(1, 21))
        end = await end_and_close(ws)
    assert end["state"] == "failed" and end["exit_code"] == 3
    assert end["failure_reason"] == "exit_code" and end["last_seq"] == 20
    # Resuming past the end: nothing more, straight to `end`.
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws?after=20") as ws:
        assert (await end_and_close(ws))["last_seq"] == 20


async def test_reconnect_after_the_last_seq_seen_continues_exactly(
    client: Client, service: JobService
) -> None:
    job = await new_job(service)
    # Long lines: the backlog takes several frames, so the client leaves in the middle.
    await write(service, job, 1, 300, batch=50, width=10_000)
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws") as ws:
        first = await receive(ws)
        assert first["type"] == "lines" and 0 < len(first["lines"]) < 300
        seen = first["lines"]
    await no_followers_left(hub_of(client))
    last = seen[-1]["seq"]
    assert seqs(seen) == list(range(1, last + 1))
    await write(service, job, 301, 400, batch=25, width=10_000)  # while nobody follows
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws?after={last}") as ws:
        rest = await lines_until(ws, 400)
        await service.execute(job, Finish(exit_code=0), META)
        end = await end_and_close(ws)
    assert seqs(seen + rest) == list(range(1, 401))  # no gap, no duplicate
    assert end["last_seq"] == 400


async def test_two_clients_on_one_job_both_get_everything(
    client: Client, service: JobService
) -> None:
    job = await new_job(service)
    await write(service, job, 1, 10)
    async with (
        client.ws_connect(f"/api/v1/jobs/{job}/logs/ws") as a,
        client.ws_connect(f"/api/v1/jobs/{job}/logs/ws") as b,
    ):
        for ws in (a, b):
            assert seqs(await lines_until(ws, 10)) == list(range(1, 11))
        await write(service, job, 11, 500, batch=70)
        await service.execute(job, Finish(exit_code=0), META)
        for ws in (a, b):
            assert seqs(await lines_until(ws, 500)) == list(range(11, 501))
            assert (await end_and_close(ws))["last_seq"] == 500
    await no_followers_left(hub_of(client))


async def test_a_job_not_started_yet_waits_then_streams(
    client: Client, service: JobService
) -> None:
    job = await new_job(service, started=False)
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws") as ws:
        await service.execute(job, Start(worker_id="w1"), META)
        await write(service, job, 1, 30, batch=10)
        assert seqs(await lines_until(ws, 30)) == list(range(1, 31))
        await service.execute(job, Finish(exit_code=0), META)
        assert (await end_and_close(ws))["state"] == "succeeded"


async def test_a_queued_job_cancelled_ends_with_no_lines(
    client: Client, service: JobService
) -> None:
    job = await new_job(service, started=False)
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws") as ws:
        await service.execute(job, RequestCancel(reason="not needed"), META)
        end = await end_and_close(ws)
    assert end == {
        "type": "end",
        "state": "cancelled",
        "exit_code": None,
        "failure_reason": None,
        "last_seq": 0,
    }


async def test_many_lines_go_in_few_frames(client: Client, service: JobService) -> None:
    job = await new_job(service)
    await write(service, job, 1, 50_000, batch=1000)
    await service.execute(job, Finish(exit_code=0), META)
    frames = 0
    received: list[int] = []
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws") as ws:
        while not received or received[-1] < 50_000:
            message = await receive(ws)
            frames += 1
            received.extend(ln["seq"] for ln in message["lines"])
        assert (await end_and_close(ws))["last_seq"] == 50_000
    assert received == list(range(1, 50_001))
    assert frames <= 50  # batched, never one frame per line


async def test_one_listen_connection_for_any_number_of_sockets(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    hub = hub_of(client)
    jobs = [await new_job(service) for _ in range(3)]
    sockets = [await client.ws_connect(f"/api/v1/jobs/{jobs[i % 3]}/logs/ws") for i in range(8)]
    try:
        async with asyncio.timeout(PATIENCE):
            await hub.started()
        listening = await pool.fetch(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'jobledger-%'"
        )
        assert [r["application_name"] for r in listening] == [hub.application_name]
        for job in jobs:
            await write(service, job, 1, 5)
        for ws in sockets:
            assert len(await lines_until(ws, 5)) == 5
    finally:
        for ws in sockets:
            await ws.close()
    await no_followers_left(hub)


async def test_followers_resume_after_the_listen_connection_drops(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    hub = hub_of(client)
    job = await new_job(service)
    async with client.ws_connect(f"/api/v1/jobs/{job}/logs/ws") as ws:
        async with asyncio.timeout(PATIENCE):
            await hub.started()
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            hub.application_name,
        )
        await write(service, job, 1, 40, batch=10)  # maybe while the hub is deaf
        assert seqs(await lines_until(ws, 40)) == list(range(1, 41))
        await service.execute(job, Finish(exit_code=0), META)
        assert (await end_and_close(ws))["last_seq"] == 40


async def test_server_shutdown_closes_followers_as_going_away(
    service: JobService, dsn: str
) -> None:
    job = await new_job(service)
    await write(service, job, 1, 3)
    test_client = TestClient(
        TestServer(create_app(service, dsn, admin_token=ADMIN_TOKEN)),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    await test_client.start_server()
    ws = await test_client.ws_connect(f"/api/v1/jobs/{job}/logs/ws")
    try:
        assert seqs(await lines_until(ws, 3)) == [1, 2, 3]
        stopping = asyncio.create_task(test_client.server.close())
        async with asyncio.timeout(PATIENCE):
            msg = await ws.receive()
            await stopping
        assert msg.type is WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    finally:
        await ws.close()
        await test_client.close()


# ---- bad requests -------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["logs", "logs.txt", "logs/ws"])
async def test_unknown_job_is_404(client: Client, route: str) -> None:
    resp = await client.get(f"/api/v1/jobs/{MISSING}/{route}")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"]["code"] == "not_found" and body["error"]["message"] == "job not found"


async def test_ws_refused_before_the_upgrade(client: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(f"/api/v1/jobs/{MISSING}/logs/ws")
    assert info.value.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(f"/api/v1/jobs/{MISSING}/logs/ws?after=x")
    assert info.value.status == 400


async def test_a_plain_get_of_the_ws_route_is_400(client: Client, service: JobService) -> None:
    job = await new_job(service)
    resp = await client.get(f"/api/v1/jobs/{job}/logs/ws")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"


ROUTES = ["logs", "logs.txt", "logs/ws"]
BAD_AFTER = ["after=-1", "after=x", "after=1&after=2", "after=99999999999999999999"]
BAD_LIMIT = ["limit=0", "limit=10001", "limit=ten"]


@pytest.mark.parametrize(
    ("route", "query", "field"),
    [(r, q, "query.after") for r in ROUTES for q in BAD_AFTER]
    + [("logs", q, "query.limit") for q in BAD_LIMIT],
)
async def test_bad_parameters_name_the_field(
    client: Client, service: JobService, route: str, query: str, field: str
) -> None:
    job = await new_job(service)
    resp = await client.get(f"/api/v1/jobs/{job}/{route}?{query}")
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_input" and error["details"] == {"field": field}


@pytest.mark.parametrize("route", ROUTES)
async def test_bad_uuid_is_400(client: Client, route: str) -> None:
    resp = await client.get(f"/api/v1/jobs/not-a-uuid/{route}")
    assert resp.status == 400
    assert (await resp.json())["error"]["details"] == {"field": "path.id"}
