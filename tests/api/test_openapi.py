"""The OpenAPI document: made from the route table, complete, and true to real answers."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.api.app import ROUTES

Client = TestClient[web.Request, web.Application]


async def fetch_doc(client: Client) -> dict[str, Any]:
    resp = await client.get("/api/v1/openapi.json", headers={"Authorization": ""})  # no token
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]


async def test_every_route_is_documented(client: Client) -> None:
    doc = await fetch_doc(client)
    assert doc["openapi"] == "3.1.0"
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()  # type: ignore[union-attr]
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1")
        and route.method != "HEAD"
        and route.resource.canonical != "/api/v1/openapi.json"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented and len(served) == len(ROUTES)


async def test_every_reference_resolves(client: Client) -> None:
    doc = await fetch_doc(client)
    schemas = doc["components"]["schemas"]
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas


async def test_real_answers_decode_as_their_documented_types(client: Client) -> None:
    """Every JSON route, called for real, answers something its declared type accepts."""
    await client.post("/api/v1/projects", json={"name": "p1"})
    await client.post(
        "/api/v1/projects/p1/service-accounts", json={"name": "bot", "role": "viewer"}
    )
    token = await (await client.post("/api/v1/projects/p1/service-accounts/bot/tokens")).json()
    job = await (await client.post("/api/v1/jobs", json={"image": "b", "project": "p1"})).json()
    wf = {"project": "p1", "steps": [{"name": "a", "spec": {"image": "b"}}]}
    run = await (await client.post("/api/v1/workflows", json=wf)).json()
    values = {
        "run": run["id"],
        "id": job["id"], "project": "p1", "account": "bot", "token_id": token["id"],
        "secret": "db-password", "definition": "d1", "environment": "e1",
        "schedule": "nightly",
    }  # fmt: skip
    bodies: dict[str, Any] = {
        "submit": {"image": "b", "project": "p1"},
        "submit_batch": {"jobs": [{"image": "b", "project": "p1"}]},
        "create_project": {"name": "p2"},
        "put_limits": {"max_running_jobs": 3},
        "create_service_account": {"name": "bot2", "role": "operator"},
        "put_secret": {"value": "hunter2-hunter2"},
        "put_definition": {"image": "b", "params": [{"name": "n", "type": "integer"}]},
        "put_environment": {"env": {"A": "1"}},
        "create_schedule": {"name": "nightly", "cron": "@daily", "run": {"spec": {"image": "b"}}},
        "put_schedule": {"cron": "@hourly", "run": {"spec": {"image": "b"}}},
        "submit_workflow": wf,
    }
    checked = 0
    for route in ROUTES:
        if route.kind != "json" or route.response is None:
            continue
        path = route.path
        for name, value in values.items():
            path = path.replace("{" + name + "}", str(value))
        name = route.handler.__name__
        if name == "revoke_token":
            continue  # revoking would break the later calls; covered in the access tests
        resp = await client.request(route.method, path, json=bodies.get(name))
        assert resp.status in (route.status, *route.also), (name, resp.status, await resp.text())
        msgspec.json.decode(await resp.read(), type=route.response)  # raises if it does not fit
        checked += 1
    assert checked >= 14
