"""POST /api/v1/jobs:batch: many specs in one transaction, all or none."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.api.test_access_api import auth, project_with_accounts

Client = TestClient[web.Request, web.Application]
BATCH = "/api/v1/jobs:batch"


async def post(client: Client, body: Any, status: int, token: str | None = None) -> Any:
    resp = await client.post(BATCH, json=body, headers=auth(token) if token else None)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def count(pool: asyncpg.Pool) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM events) AS events"
    )
    return row["jobs"], row["events"]


async def test_a_batch_creates_every_job_in_order(client: Client, pool: asyncpg.Pool) -> None:
    specs = [{"image": "b", "labels": {"n": str(n)}} for n in range(500)]
    body = await post(client, {"jobs": specs}, 201)
    assert body["created"] == 500
    assert [j["labels"]["n"] for j in body["jobs"]] == [str(n) for n in range(500)]
    assert {j["state"] for j in body["jobs"]} == {"queued"}
    assert len({j["id"] for j in body["jobs"]}) == 500
    assert await count(pool) == (500, 500)
    # One transaction: every event of the batch has the same transaction id.
    assert await pool.fetchval("SELECT count(DISTINCT txid) FROM events") == 1
    listed = await (await client.get("/api/v1/jobs?limit=500")).json()
    assert {j["id"] for j in listed["jobs"]} == {j["id"] for j in body["jobs"]}


async def test_one_bad_spec_refuses_the_whole_batch(client: Client, pool: asyncpg.Pool) -> None:
    good = {"image": "b"}
    for bad, status, field in [
        ({"image": ""}, 422, "$.jobs[2].image"),
        ({"image": "b", "resources": {"cpu": -1}}, 422, "$.jobs[2].resources.cpu"),
        ({"image": "b", "labels": {"k": "nul\u0000"}}, 400, "$.jobs[2].labels.k"),
        ({"image": "b", "surprise": 1}, 422, "$.jobs[2].surprise"),
    ]:
        body = await post(client, {"jobs": [good, good, bad]}, status)
        assert body["error"]["details"]["field"] == field, (bad, body)
    for body, field in [
        ({"jobs": []}, "$.jobs"),
        ({"jobs": [good] * 1001}, "$.jobs"),
        ({"jobs": good}, "$.jobs"),
        ({"specs": [good]}, "$.specs"),
    ]:
        assert (await post(client, body, 422))["error"]["details"]["field"] == field
    assert await count(pool) == (0, 0)


async def test_idempotency_keys_in_a_batch(client: Client, pool: asyncpg.Pool) -> None:
    first = await post(client, {"jobs": [{"image": "b", "idempotency_key": "k1"}]}, 201)
    again = await post(
        client,
        {"jobs": [
            {"image": "b", "idempotency_key": "k1"},  # exists: the same job
            {"image": "b", "idempotency_key": "k2"},  # new
            {"image": "b", "idempotency_key": "k2"},  # repeated in the batch: the same new job
        ]},
        201,
    )  # fmt: skip
    ids = [j["id"] for j in again["jobs"]]
    assert ids[0] == first["jobs"][0]["id"] and ids[1] == ids[2] and ids[0] != ids[1]
    assert again["created"] == 1
    replay = await post(client, {"jobs": [{"image": "b", "idempotency_key": "k2"}]}, 200)
    assert replay["created"] == 0 and replay["jobs"][0]["id"] == ids[1]
    conflict = await post(
        client, {"jobs": [{"image": "b"}, {"image": "other", "idempotency_key": "k1"}]}, 409
    )
    assert conflict["error"]["details"]["field"] == "$.jobs[1].idempotency_key"
    inside = await post(
        client,
        {
            "jobs": [
                {"image": "b", "idempotency_key": "k3"},
                {"image": "c", "idempotency_key": "k3"},
            ]
        },
        409,
    )
    assert inside["error"]["details"]["field"] == "$.jobs[1].idempotency_key"
    assert (await count(pool))[0] == 2


async def test_batch_permissions_and_rate_limits(client: Client, pool: asyncpg.Pool) -> None:
    p1 = await project_with_accounts(client, "p1")
    p2 = await project_with_accounts(client, "p2")
    resp = await client.put(
        "/api/v1/projects/p1/limits", json={"submit_rate": 1, "submit_burst": 5}
    )
    assert resp.status == 200

    refused = await post(client, {"jobs": [{"image": "b"}] * 3}, 403, p2["viewer"])
    assert refused["error"]["code"] == "forbidden"
    other = await post(
        client, {"jobs": [{"image": "b"}, {"image": "b", "project": "p1"}]}, 403, p2["operator"]
    )
    assert other["error"]["details"]["field"] == "$.jobs[1].project"
    mine = await post(client, {"jobs": [{"image": "b"}] * 3}, 201, p2["operator"])
    assert {j["project"] for j in mine["jobs"]} == {"p2"}

    # A batch larger than the burst goes through on a full bucket; the next one waits.
    await post(client, {"jobs": [{"image": "b"}] * 8}, 201, p1["operator"])
    limited = await post(client, {"jobs": [{"image": "b"}]}, 429, p1["operator"])
    assert limited["error"]["details"]["retry_after"] > 2
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE project = 'p1'") == 8


async def test_a_spec_for_an_unknown_project_is_named_by_its_place(
    client: Client, pool: asyncpg.Pool
) -> None:
    for specs, at in (
        ([{"image": "b", "project": "ghost"}], "$.jobs[0].project"),
        ([{"image": "b"}, {"image": "b", "project": "ghost"}], "$.jobs[1].project"),
    ):
        resp = await client.post("/api/v1/jobs:batch", json={"jobs": specs})
        assert resp.status == 404
        assert (await resp.json())["error"]["details"]["field"] == at
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
