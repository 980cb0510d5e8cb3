"""The jobs watch WebSocket (issue 17): hello, then job changes pushed from the events
channel, filtered and scoped; resync after a lost LISTEN connection; slow clients dropped."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from jobledger.api.loghub import LOG_HUB
from jobledger.api.watch import WATCH_HUB, WatchHub
from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import Finish, RequestCancel, Start
from jobledger.service import JobService
from tests.api.test_access_api import project_with_accounts
from tests.factories import spec

Client = TestClient[web.Request, web.Application]
WS = aiohttp.ClientWebSocketResponse
META = EventMeta(actor="test")
#: A failsafe against a hung test, never a timing assertion.
PATIENCE = 20


def hub_of(client: Client) -> WatchHub:
    return client.app[WATCH_HUB]


async def receive(ws: WS) -> dict[str, Any]:
    async with asyncio.timeout(PATIENCE):
        msg = await ws.receive()
    assert msg.type is WSMsgType.TEXT, (msg.type, msg.data)
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def watching(client: Client, query: str = "", **kw: Any) -> WS:
    """A watch socket past its `hello`, with the hub listening (so no `resync` of its
    first connection comes after)."""
    async with asyncio.timeout(PATIENCE):
        await client.app[LOG_HUB].started()
    ws = await client.ws_connect(f"/api/v1/jobs/watch{query}", **kw)
    assert await receive(ws) == {"type": "hello"}
    return ws


async def job_messages(ws: WS, job_id: uuid.UUID, until_state: str) -> list[dict[str, Any]]:
    """The messages about one job, up to the one with that state."""
    seen = []
    while True:
        message = await receive(ws)
        assert message["type"] == "job", message
        if message["job"]["id"] == str(job_id):
            seen.append(message)
            if message["job"]["state"] == until_state:
                return seen


async def test_a_job_is_pushed_at_each_change(client: Client, service: JobService) -> None:
    ws = await watching(client)
    try:
        view, _ = await service.submit(spec(), META)
        [queued] = await job_messages(ws, view.id, "queued")
        assert queued["matches"] is True and queued["job"]["version"] == 1
        assert queued["job"]["waiting_reason"]  # as GET /api/v1/jobs/{id} shows it
        detail = await (await client.get(f"/api/v1/jobs/{view.id}")).json()
        assert queued["job"] == detail
        await service.execute(view.id, Start(worker_id="w1"), META)
        await service.execute(view.id, Finish(exit_code=0), META)
        states = [m["job"]["state"] for m in await job_messages(ws, view.id, "succeeded")]
        assert states[-1] == "succeeded" and set(states) <= {"running", "succeeded"}
    finally:
        await ws.close()


async def test_filters_apply_and_a_job_leaving_the_state_filter_says_so(
    client: Client, service: JobService
) -> None:
    ws = await watching(client, "?state=queued,running&label=team=a")
    try:
        other, _ = await service.submit(spec(labels={"team": "b"}), META)
        mine, _ = await service.submit(spec(labels={"team": "a"}), META)
        [first] = await job_messages(ws, mine.id, "queued")  # `other` never comes
        assert first["matches"] is True
        await service.execute(other.id, RequestCancel(), META)
        await service.execute(mine.id, RequestCancel(), META)
        [gone] = await job_messages(ws, mine.id, "cancelled")
        assert gone["matches"] is False
    finally:
        await ws.close()


async def test_a_service_account_sees_its_project_only(client: Client, service: JobService) -> None:
    tokens = await project_with_accounts(client, "p1")
    auth = {"Authorization": ""}
    ws = await watching(client, f"?access_token={tokens['viewer']}", headers=auth)
    try:
        theirs, _ = await service.submit(spec(), META)  # project default
        mine, _ = await service.submit(spec(project="p1"), META)
        [message] = await job_messages(ws, mine.id, "queued")
        assert message["job"]["project"] == "p1"
        await service.execute(theirs.id, RequestCancel(), META)
        await service.execute(mine.id, RequestCancel(), META)
        await job_messages(ws, mine.id, "cancelled")  # nothing of `theirs` came between
    finally:
        await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(
            f"/api/v1/jobs/watch?project=default&access_token={tokens['viewer']}", headers=auth
        )
    assert info.value.status == 403


async def test_one_read_per_change_whatever_the_number_of_watchers(
    client: Client, service: JobService
) -> None:
    sockets = [await watching(client) for _ in range(6)]
    hub = hub_of(client)
    try:
        before = hub.reads_made
        view, _ = await service.submit(spec(), META)
        for ws in sockets:
            await job_messages(ws, view.id, "queued")
        assert hub.reads_made - before == 1
    finally:
        for ws in sockets:
            await ws.close()
    async with asyncio.timeout(PATIENCE):
        await hub.wait_idle()


async def test_resync_after_the_listen_connection_comes_back(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    ws = await watching(client)
    try:
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            client.app[LOG_HUB].application_name,
        )
        assert await receive(ws) == {"type": "resync"}
        view, _ = await service.submit(spec(), META)  # and it goes on after
        await job_messages(ws, view.id, "queued")
    finally:
        await ws.close()


async def test_a_client_that_does_not_read_is_dropped_not_buffered(
    client: Client, service: JobService
) -> None:
    hub = hub_of(client)
    hub.capacity = 3
    ws = await watching(client)
    try:
        [watcher] = hub._watchers
        # Changes arrive faster than they can be sent: the fourth waiting one ends it.
        for _ in range(5):
            watcher.send(b'{"type":"job"}')
        assert watcher.ended and watcher.queue.qsize() == 1  # only the close is left
        async with asyncio.timeout(PATIENCE):
            msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE and ws.close_code == 1013
    finally:
        await ws.close()
    async with asyncio.timeout(PATIENCE):
        await hub.wait_idle()


async def test_server_shutdown_closes_watchers_as_going_away(service: JobService, dsn: str) -> None:
    from aiohttp.test_utils import TestServer

    from jobledger.api.app import create_app
    from tests.conftest import ADMIN_TOKEN

    test_client = TestClient(
        TestServer(create_app(service, dsn, admin_token=ADMIN_TOKEN)),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    await test_client.start_server()
    ws = await watching(test_client)
    try:
        stopping = asyncio.create_task(test_client.server.close())
        async with asyncio.timeout(PATIENCE):
            msg = await ws.receive()
            await stopping
        assert msg.type is WSMsgType.CLOSE and ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    finally:
        await ws.close()
        await test_client.close()


async def test_refused_before_the_upgrade(client: Client) -> None:
    for query, status in (("?state=nope", 400), ("?parent_job=x", 400), ("?label=nokey", 400)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(f"/api/v1/jobs/watch{query}")
        assert info.value.status == status
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/api/v1/jobs/watch", headers={"Authorization": ""})
    assert info.value.status == 401
    resp = await client.get("/api/v1/jobs/watch")  # not an upgrade
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_request"
    # The token in the URL is for WebSockets only.
    resp = await client.get("/api/v1/jobs?access_token=x", headers={"Authorization": ""})
    assert resp.status == 401
