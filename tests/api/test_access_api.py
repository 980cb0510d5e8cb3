"""Access control: tokens, roles, and projects that cannot see each other."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.api.routes import OPENAPI_PATH
from jobledger.store.logs import LogLine, append_log_batch
from tests.conftest import ADMIN_TOKEN

Client = TestClient[web.Request, web.Application]
SOME_UUID = "01a2087c-db01-725b-b63a-f89db42493f1"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    client: Client, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    headers = auth(token) if token is not None else {"Authorization": ""}
    resp = await client.request(method, path, json=body, headers=headers)
    text = await resp.text()
    return resp.status, (
        await resp.json()
    ) if text and resp.content_type == "application/json" else text


async def project_with_accounts(client: Client, name: str) -> dict[str, str]:
    """A project and a token per role; the test client is the server admin."""
    resp = await client.post("/api/v1/projects", json={"name": name})
    assert resp.status == 201, await resp.text()
    tokens = {}
    for role in ("viewer", "operator", "admin"):
        r = await client.post(
            f"/api/v1/projects/{name}/service-accounts", json={"name": f"{role}-bot", "role": role}
        )
        assert r.status == 201, await r.text()
        r = await client.post(
            f"/api/v1/projects/{name}/service-accounts/{role}-bot/tokens",
            json={"description": "test"},
        )
        assert r.status == 201
        tokens[role] = (await r.json())["token"]
    return tokens


def routes(app: web.Application) -> list[tuple[str, str]]:
    """Every /api/v1 route of the app with its path parameters filled in."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or not path or not path.startswith("/api/v1"):
            continue
        if path == OPENAPI_PATH:
            continue  # public by design
        out.append(
            (
                route.method,
                re.sub(r"\{[^}]+\}", lambda m: SOME_UUID if "id" in m.group() else "p1", path),
            )
        )
    return out


async def test_every_api_route_needs_a_token(client: Client) -> None:
    checked = routes(client.app)  # type: ignore[arg-type]
    assert len(checked) >= 18  # jobs 6, logs 3, projects 9
    for method, path in checked:
        for token in (None, "jl_not-a-real-token", "Basic abc"):
            status, body = await call(client, method, path, token)
            assert status == 401, (method, path, status, body)
            assert body["error"]["code"] == "unauthenticated"
    assert (await client.get("/healthz", headers={"Authorization": ""})).status == 200


async def test_token_flow_end_to_end(client: Client) -> None:
    tokens = await project_with_accounts(client, "p1")
    op = tokens["operator"]
    status, job = await call(client, "POST", "/api/v1/jobs", op, {"image": "busybox"})
    assert status == 201 and job["project"] == "p1" and job["submitted_by"] == "p1/operator-bot"
    status, events = await call(client, "GET", f"/api/v1/jobs/{job['id']}/events", tokens["viewer"])
    meta = events["events"][0]["meta"]
    assert status == 200 and meta["actor"] == "p1/operator-bot" and uuid.UUID(meta["token_id"])
    # Tokens are listed without their secrets.
    status, listed = await call(
        client, "GET", "/api/v1/projects/p1/service-accounts/operator-bot/tokens", tokens["admin"]
    )
    assert status == 200 and len(listed["tokens"]) == 1 and op not in str(listed)
    token_id = listed["tokens"][0]["id"]
    status, revoked = await call(
        client, "DELETE", f"/api/v1/projects/p1/tokens/{token_id}", tokens["admin"]
    )
    assert status == 200 and revoked["revoked_at"]
    assert (await call(client, "GET", "/api/v1/jobs", op))[0] == 401  # at once


async def test_concurrent_requests_checked_together_each_get_their_own_answer(
    client: Client, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    await pool.execute(
        "UPDATE api_tokens SET revoked_at = clock_timestamp() WHERE id = "
        "(SELECT t.id FROM api_tokens t JOIN service_accounts s ON s.id = t.service_account_id "
        "WHERE s.name = 'admin-bot')"
    )
    asked = [tokens["viewer"], tokens["admin"], "jl_unknown", tokens["operator"]] * 5
    results = await asyncio.gather(*(call(client, "GET", "/api/v1/jobs", t) for t in asked))
    assert [status for status, _ in results] == [200, 401, 401, 200] * 5
    # Token use is still remembered, once per token.
    used = await pool.fetchval("SELECT count(*) FROM api_tokens WHERE last_used_at IS NOT NULL")
    assert used == 2  # the viewer and the operator; the revoked one is not touched


async def test_expired_tokens_are_refused(client: Client, pool: asyncpg.Pool) -> None:
    tokens = await project_with_accounts(client, "p1")
    await pool.execute("UPDATE api_tokens SET expires_at = clock_timestamp() - interval '1 second'")
    assert (await call(client, "GET", "/api/v1/jobs", tokens["viewer"]))[0] == 401


ROLE_CASES = [
    # (role, method, path, body, allowed)
    ("viewer", "GET", "/api/v1/jobs", None, True),
    ("viewer", "POST", "/api/v1/jobs", {"image": "b"}, False),
    ("viewer", "GET", "/api/v1/projects/p1", None, True),
    ("operator", "POST", "/api/v1/jobs", {"image": "b"}, True),
    ("operator", "PUT", "/api/v1/projects/p1/limits", {"max_running_jobs": 3}, False),
    (
        "operator",
        "POST",
        "/api/v1/projects/p1/service-accounts",
        {"name": "x", "role": "viewer"},
        False,
    ),
    ("admin", "PUT", "/api/v1/projects/p1/limits", {"max_running_jobs": 3}, True),
    (
        "admin",
        "POST",
        "/api/v1/projects/p1/service-accounts",
        {"name": "x", "role": "viewer"},
        True,
    ),
    ("admin", "POST", "/api/v1/projects", {"name": "p9"}, False),
]


@pytest.mark.parametrize(("role", "method", "path", "body", "allowed"), ROLE_CASES)
async def test_roles(
    client: Client, role: str, method: str, path: str, body: Any, allowed: bool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    status, answer = await call(client, method, path, tokens[role], body)
    if allowed:
        assert status in (200, 201), answer
    else:
        assert status == 403 and answer["error"]["code"] == "forbidden"


async def test_viewer_cannot_cancel_but_sees_the_job(client: Client) -> None:
    tokens = await project_with_accounts(client, "p1")
    _, job = await call(client, "POST", "/api/v1/jobs", tokens["operator"], {"image": "b"})
    assert (await call(client, "GET", f"/api/v1/jobs/{job['id']}", tokens["viewer"]))[0] == 200
    assert (await call(client, "POST", f"/api/v1/jobs/{job['id']}/cancel", tokens["viewer"]))[
        0
    ] == 403


async def test_another_projects_jobs_do_not_exist_for_you(
    client: Client, pool: asyncpg.Pool
) -> None:
    p1 = await project_with_accounts(client, "p1")
    p2 = await project_with_accounts(client, "p2")
    _, job = await call(
        client, "POST", "/api/v1/jobs", p1["operator"], {"image": "b", "labels": {"x": "1"}}
    )
    line = LogLine(seq=1, stream="stdout", ts=datetime.now(UTC), text="secret")
    await append_log_batch(pool, uuid.UUID(job["id"]), 1, [line])
    jid = job["id"]
    for method, path in [
        ("GET", f"/api/v1/jobs/{jid}"),
        ("GET", f"/api/v1/jobs/{jid}/events"),
        ("GET", f"/api/v1/jobs/{jid}/usage"),
        ("GET", f"/api/v1/jobs/{jid}/timeline"),
        ("GET", f"/api/v1/jobs/{jid}/logs"),
        ("GET", f"/api/v1/jobs/{jid}/logs.txt"),
        ("GET", f"/api/v1/jobs/{jid}/logs/ws"),
        ("POST", f"/api/v1/jobs/{jid}/cancel"),
    ]:
        status, body = await call(client, method, path, p2["admin"])
        assert status == 404, (path, status, body)
        assert "secret" not in str(body)
    status, page = await call(client, "GET", "/api/v1/jobs", p2["admin"])
    assert status == 200 and page["jobs"] == []
    assert (await call(client, "GET", "/api/v1/jobs?project=p1", p2["admin"]))[0] == 403
    assert (
        await call(client, "POST", "/api/v1/jobs", p2["operator"], {"image": "b", "project": "p1"})
    )[0] == 403
    assert (await call(client, "GET", "/api/v1/projects/p1", p2["admin"]))[0] == 403
    assert (await call(client, "GET", "/api/v1/projects/p1/service-accounts", p2["admin"]))[
        0
    ] == 403
    status, projects = await call(client, "GET", "/api/v1/projects", p2["viewer"])
    assert [p["name"] for p in projects["projects"]] == ["p2"]
    assert (await call(client, "GET", f"/api/v1/jobs/{jid}", p1["viewer"]))[0] == 200


async def test_websocket_takes_the_token_from_the_query(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = await project_with_accounts(client, "p1")
    _, job = await call(client, "POST", "/api/v1/jobs", tokens["operator"], {"image": "b"})
    url = f"/api/v1/jobs/{job['id']}/logs/ws?access_token={tokens['viewer']}"
    ws = await client.ws_connect(url, headers={"Authorization": ""})
    await ws.close()
    bad = await client.get(
        f"/api/v1/jobs/{job['id']}/logs?access_token={tokens['viewer']}",
        headers={"Authorization": ""},
    )
    assert bad.status == 401  # only the WebSocket reads the query parameter
    captured = capsys.readouterr()
    for token in tokens.values():
        assert token not in captured.out + captured.err  # never logged


async def test_guessing_tokens_gets_nowhere(client: Client) -> None:
    tokens = await project_with_accounts(client, "p1")
    real = tokens["admin"]
    guesses = [
        real[:-1],
        real[:-1] + ("A" if real[-1] != "A" else "B"),
        real.upper(),
        real + "x",
        "jl_",
        "",
    ]
    guesses += [f"jl_{n:043d}" for n in range(50)]
    for guess in guesses:
        assert (await call(client, "GET", "/api/v1/jobs", guess))[0] == 401


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "Bad Name"}, 422, "$.name"),
        ({"name": "ok", "max_running_jobs": -1}, 422, "$.max_running_jobs"),
        ({"name": "ok", "extra": 1}, 422, "$.extra"),
    ],
)
async def test_bad_project_bodies(client: Client, body: Any, status: int, field: str) -> None:
    resp = await client.post("/api/v1/projects", json=body)
    assert resp.status == status and (await resp.json())["error"]["details"]["field"] == field


async def test_duplicates_conflict(client: Client) -> None:
    await project_with_accounts(client, "p1")
    assert (await client.post("/api/v1/projects", json={"name": "p1"})).status == 409
    r = await client.post(
        "/api/v1/projects/p1/service-accounts", json={"name": "viewer-bot", "role": "viewer"}
    )
    assert r.status == 409
    assert (
        await client.post(
            "/api/v1/projects/nope/service-accounts", json={"name": "a", "role": "viewer"}
        )
    ).status == 404


async def test_submits_beyond_a_projects_rate_get_429_with_retry_after(
    client: Client, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    await project_with_accounts(client, "p2")
    resp = await client.put(
        "/api/v1/projects/p1/limits", json={"submit_rate": 0.5, "submit_burst": 2}
    )
    assert resp.status == 200 and (await resp.json())["submit_rate"] == 0.5
    statuses = []
    for _ in range(3):
        r = await client.post("/api/v1/jobs", json={"image": "b"}, headers=auth(tokens["operator"]))
        statuses.append(r.status)
    assert statuses == [201, 201, 429]
    body = await r.json()
    assert body["error"]["code"] == "rate_limited" and body["error"]["details"]["retry_after"] > 0
    assert int(r.headers["Retry-After"]) >= 1
    assert (
        await pool.fetchval("SELECT count(*) FROM jobs WHERE project = 'p1'") == 2
    )  # nothing written
    other = await client.post("/api/v1/jobs", json={"image": "b", "project": "p2"})
    assert other.status == 201  # another project has its own bucket


async def test_an_unknown_project_is_not_found_everywhere(
    client: Client, pool: asyncpg.Pool
) -> None:
    """One rule: a project that does not exist is a 404 to every route that names it, and
    `default` exists from the first start."""
    listed = await (await client.get("/api/v1/projects")).json()
    assert "default" in [p["name"] for p in listed["projects"]]
    assert (await client.get("/api/v1/projects/default")).status == 200
    before = await pool.fetchval(
        "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM projects)"
    )
    for method, path, body in [
        ("POST", "/api/v1/jobs", {"image": "b", "project": "ghost"}),
        (
            "POST",
            "/api/v1/jobs:batch",
            {"jobs": [{"image": "b"}, {"image": "b", "project": "ghost"}]},
        ),
        ("GET", "/api/v1/projects/ghost", None),
        ("PUT", "/api/v1/projects/ghost/limits", {"max_running_jobs": 3}),
        ("POST", "/api/v1/projects/ghost/service-accounts", {"name": "bot", "role": "viewer"}),
        ("GET", "/api/v1/projects/ghost/service-accounts", None),
    ]:
        status, answer = await call(client, method, path, ADMIN_TOKEN, body)
        assert status == 404, (method, path, answer)
        assert answer["error"]["code"] == "not_found"
    after = await pool.fetchval(
        "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM projects)"
    )
    assert after == before
    assert "ghost" not in [
        p["name"] for p in (await (await client.get("/api/v1/projects")).json())["projects"]
    ]
    # Once created, it is there for all of them.
    assert (await client.post("/api/v1/projects", json={"name": "ghost"})).status == 201
    status, _ = await call(
        client, "POST", "/api/v1/jobs", ADMIN_TOKEN, {"image": "b", "project": "ghost"}
    )
    assert status == 201
