"""Secret routes: admins set and delete, viewers list, nobody reads a value back; submits
refer to secrets by name and are refused (422, naming the variable) when there is none."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jobledger.api.app import create_app
from jobledger.domain.secrets import SECRET
from jobledger.replay.archive import export
from jobledger.replay.verify import Verifier
from jobledger.service import JobService
from jobledger.store.secretbox import SecretBox
from tests.api.test_access_api import call, project_with_accounts
from tests.conftest import ADMIN_TOKEN, SECRETS_BOX

Client = TestClient[web.Request, web.Application]
VALUE = "pg-pass-7f3a9c"
BASE = "/api/v1/projects/p1/secrets"


async def put(client: Client, name: str, value: Any, token: str = ADMIN_TOKEN) -> tuple[int, Any]:
    return await call(client, "PUT", f"{BASE}/{name}", token, {"value": value})


async def test_set_list_delete_and_set_again_continue_the_versions(
    client: Client, pool: asyncpg.Pool
) -> None:
    await project_with_accounts(client, "p1")
    status, v1 = await put(client, "db-password", VALUE)
    assert status == 201, v1  # created
    assert (v1["name"], v1["version"], v1["updated_by"]) == ("db-password", 1, "admin")
    assert v1["fingerprint"] == SECRETS_BOX.fingerprint(VALUE)
    status, v2 = await put(client, "db-password", VALUE + "-2")
    assert (status, v2["version"]) == (200, 2)
    assert v2["fingerprint"] != v1["fingerprint"]

    status, listed = await call(client, "GET", BASE, ADMIN_TOKEN)
    assert status == 200
    assert [(s["name"], s["version"]) for s in listed["secrets"]] == [("db-password", 2)]

    status, _ = await call(client, "DELETE", f"{BASE}/db-password", ADMIN_TOKEN)
    assert status == 204
    assert (await call(client, "GET", BASE, ADMIN_TOKEN))[1] == {"secrets": []}
    assert await pool.fetchval("SELECT count(*) FROM secret_values") == 0  # values gone too
    status, body = await call(client, "DELETE", f"{BASE}/db-password", ADMIN_TOKEN)
    assert (status, body["error"]["code"]) == (404, "not_found")

    status, v3 = await put(client, "db-password", VALUE)
    assert (status, v3["version"]) == (201, 3)  # created again: the stream and its numbers continue
    sid = SECRET.stream_id("p1", "db-password")
    types = [r["type"] for r in await pool.fetch(
        "SELECT type FROM events WHERE stream_id = $1 ORDER BY version", sid
    )]  # fmt: skip
    assert types == ["SecretSet", "SecretSet", "SecretDeleted", "SecretSet"]
    # The events have the fingerprint, never the value; verify folds them like any kind.
    data = " ".join(r["data"] for r in await pool.fetch("SELECT data::text FROM events"))
    assert VALUE not in data and v3["fingerprint"] in data
    assert [p async for p in Verifier(pool).problems()] == []
    assert not any(VALUE.encode() in line for line in [x async for x in export(pool)])


async def test_roles_admins_set_and_delete_viewers_list(client: Client) -> None:
    tokens = await project_with_accounts(client, "p1")
    for role in ("viewer", "operator"):
        status, body = await put(client, "db-password", VALUE, tokens[role])
        assert (status, body["error"]["code"]) == (403, "forbidden"), role
        status, _ = await call(client, "DELETE", f"{BASE}/db-password", tokens[role])
        assert status == 403
    status, body = await put(client, "db-password", VALUE, tokens["admin"])
    assert status == 201 and body["updated_by"].endswith("admin-bot")
    status, listed = await call(client, "GET", BASE, tokens["viewer"])
    assert status == 200 and listed["secrets"][0]["name"] == "db-password"
    assert VALUE not in json.dumps(listed)
    # Another project's admin sees nothing here.
    other = await project_with_accounts(client, "p2")
    status, _ = await call(client, "GET", BASE, other["admin"])
    assert status == 403


async def test_bad_input_is_a_4xx_naming_the_field(client: Client) -> None:
    await project_with_accounts(client, "p1")
    status, body = await put(client, "db-password", "")
    assert (status, body["error"]["details"]["field"]) == (422, "$.value")
    status, body = await put(client, "db-password", "x" * 40_000)
    assert (status, body["error"]["details"]["field"]) == (422, "$.value")
    status, body = await put(client, "db-password", "é" * 20_000)  # 40,000 bytes of UTF-8
    assert (status, body["error"]["details"]["field"]) == (400, "$.value")
    status, body = await put(client, "db-password", 5)
    assert (status, body["error"]["details"]["field"]) == (422, "$.value")
    status, body = await call(client, "PUT", f"{BASE}/db-password", ADMIN_TOKEN, {"v": 1})
    assert status == 422
    status, body = await put(client, "Bad_Name", VALUE)
    assert (status, body["error"]["details"]["field"]) == (400, "path.secret")
    status, body = await call(client, "PUT", "/api/v1/projects/nope/secrets/x", ADMIN_TOKEN,
                              {"value": VALUE})  # fmt: skip
    assert status == 404


async def test_a_server_without_a_key_lists_and_deletes_but_cannot_set(
    service: JobService, dsn: str
) -> None:
    app = create_app(service, dsn, admin_token=ADMIN_TOKEN)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with TestClient(TestServer(app), headers=headers) as keyless:
        resp = await keyless.put("/api/v1/projects/default/secrets/x", json={"value": VALUE})
        body = await resp.json()
        assert (resp.status, body["error"]["code"]) == (409, "no_secrets_key")
        assert "JOBLEDGER_SECRETS_KEY" in body["error"]["message"]
        assert (await keyless.get("/api/v1/projects/default/secrets")).status == 200


async def test_a_submit_naming_an_unknown_secret_or_version_is_refused(client: Client) -> None:
    await put(client, "db-password", VALUE)  # of project p1: not the default project's
    await project_with_accounts(client, "p1")
    await put(client, "db-password", VALUE)

    def job(env: dict[str, Any], project: str = "p1") -> dict[str, Any]:
        return {"image": "b", "project": project, "env": env}

    resp = await client.post("/api/v1/jobs", json=job({"DB_PASSWORD": {"secret": "nope"}}))
    body = await resp.json()
    assert resp.status == 422, body
    assert body["error"]["code"] == "unknown_secret"
    assert body["error"]["details"]["field"] == "$.env.DB_PASSWORD"
    assert "'nope'" in body["error"]["message"]
    pinned = job({"DB_PASSWORD": {"secret": "db-password", "version": 2}})
    resp = await client.post("/api/v1/jobs", json=pinned)
    body = await resp.json()
    assert resp.status == 422 and "no version 2" in body["error"]["message"]
    keyed = {**job({"X": {"secret": "nope"}}), "idempotency_key": "k1"}
    resp = await client.post("/api/v1/jobs", json=keyed)
    assert (resp.status, (await resp.json())["error"]["details"]["field"]) == (422, "$.env.X")
    batch = {"jobs": [job({"A": "plain"}), job({"A": {"secret": "db-password"}}),
                      job({"B": {"secret": "gone"}})]}  # fmt: skip
    resp = await client.post("/api/v1/jobs:batch", json=batch)
    body = await resp.json()
    assert (resp.status, body["error"]["details"]["field"]) == (422, "$.jobs[2].env.B")
    assert (await client.get("/api/v1/jobs")).status == 200
    assert (await (await client.get("/api/v1/jobs")).json())["jobs"] == []  # none created

    ok = job({"DB_PASSWORD": {"secret": "db-password"}, "MODE": "prod"})
    resp = await client.post("/api/v1/jobs", json=ok)
    created = await resp.json()
    assert resp.status == 201, created
    # Viewers see the reference; the value is nowhere in the job.
    assert created["spec"]["env"]["DB_PASSWORD"] == {"secret": "db-password", "version": None}
    assert VALUE not in json.dumps(created)


async def test_the_keys_of_two_servers_differ_by_id(client: Client) -> None:
    assert SecretBox(bytes(32)).key_id != SECRETS_BOX.key_id
