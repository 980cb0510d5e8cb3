"""Definitions and environments over HTTP: versions, diffs, parameters, submit by reference,
disable, delete, roles, and what a job made from one records."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import Start
from jobledger.replay.verify import Verifier
from jobledger.service import JobService
from tests.api.test_access_api import call, project_with_accounts
from tests.api.test_jobs_api import Client

P = "/api/v1/projects/etl"
ETL: dict[str, Any] = {
    "description": "nightly load",
    "image": "jobledger-test:latest",
    "command": ["sh", "-c", "echo load {{params.day}} into {{ params.table }} {{{{raw}}"],
    "env": {"MODE": "full-{{params.mode}}"},
    "params": [
        {"name": "day", "type": "string", "required": True},
        {"name": "table", "type": "string", "default": "events"},
        {"name": "rows", "type": "integer", "default": 10},
        {"name": "ratio", "type": "number"},
        {"name": "dry", "type": "boolean", "default": False},
        {"name": "mode", "type": "enum", "values": ["full", "delta"], "default": "delta"},
    ],
}


async def put(client: Client, path: str, body: Any, status: int = 201) -> dict[str, Any]:
    resp = await client.put(f"{P}{path}", json=body)
    assert resp.status == status, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def get(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(path if path.startswith("/api") else f"{P}{path}")
    assert resp.status == status, await resp.text()
    return await resp.json()


async def post(client: Client, path: str, body: Any, status: int) -> dict[str, Any]:
    resp = await client.post(path, json=body)
    assert resp.status == status, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


@pytest.fixture
async def etl(client: Client) -> dict[str, Any]:
    assert (await client.post("/api/v1/projects", json={"name": "etl"})).status == 201
    return await put(client, "/definitions/nightly", ETL)


def run(**kw: Any) -> dict[str, Any]:
    return {"definition": "nightly", "project": "etl", "params": {"day": "2030-01-02"}, **kw}


async def test_versions_are_kept_shown_and_compared(client: Client, etl: dict[str, Any]) -> None:
    assert (etl["version"], etl["latest_version"], etl["saved_by"]) == (1, 1, "admin")
    # The same content again records nothing.
    again = await put(client, "/definitions/nightly", ETL, status=200)
    assert again["version"] == 1
    changed = {**ETL, "image": "busybox:1", "labels": {"team": "data"}}
    changed["params"] = [*ETL["params"], {"name": "extra", "description": "new"}]
    v2 = await put(client, "/definitions/nightly", changed, status=200)
    assert (v2["version"], v2["definition"]["image"]) == (2, "busybox:1")

    assert (await get(client, "/definitions/nightly?version=1"))["definition"]["image"] == (
        "jobledger-test:latest"
    )
    assert (await get(client, "/definitions/nightly"))["version"] == 2
    err = await get(client, "/definitions/nightly?version=9", status=404)
    assert err["error"]["details"]["field"] == "query.version"
    versions = await get(client, "/definitions/nightly/versions")
    assert [v["version"] for v in versions["versions"]] == [1, 2]

    diff = await get(client, "/definitions/nightly/diff?from=1&to=2")
    assert (diff["from_version"], diff["to_version"]) == (1, 2)
    assert diff["changes"] == [
        {"path": "$.image", "old": "jobledger-test:latest", "new": "busybox:1"},
        {"path": "$.labels", "new": {"team": "data"}},
        {"path": "$.params[6]", "new": {"name": "extra", "description": "new"}},
    ]
    audit = await get(client, "/api/v1/audit?type=DefinitionSaved")
    assert [(e["data"]["version"], e["meta"]["actor"]) for e in audit["events"]] == [
        (2, "admin"), (1, "admin"),
    ]  # fmt: skip
    listed = await get(client, "/definitions")
    assert [(d["name"], d["version"], d["params"]) for d in listed["definitions"]] == [
        ("nightly", 2, ["day", "table", "rows", "ratio", "dry", "mode", "extra"])
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image": "x", "params": [{"name": "a"}, {"name": "A"}]}, "$.params[1].name"),
        ({"image": "x", "params": [{"name": "a", "type": "enum"}]}, "$.params[0].values"),
        ({"image": "x", "params": [{"name": "a", "values": ["x"]}]}, "$.params[0].values"),
        ({"image": "x", "params": [{"name": "a", "type": "integer", "default": "1"}]},
         "$.params[0].default"),
        ({"image": "x", "params": [{"name": "a", "required": True, "default": "x"}]},
         "$.params[0].default"),
        ({"image": "x", "params": [{"name": "a", "type": "text"}]}, "$.params[0].type"),
        ({"image": "x", "command": ["echo", "{{params.nope}}"]}, "$.command[1]"),
        ({"image": "x", "command": ["echo", "{{ env.HOME }}"]}, "$.command[1]"),
        ({"image": "x", "command": ["echo {{params.a"], "params": [{"name": "a"}]},
         "$.command[0]"),
        ({"image": "x", "env": {"A": "{{params.b}}"}}, "$.env.A"),
        ({"image": "x", "env": {"JOBLEDGER_PARAM_X": "1"}}, "$.env.JOBLEDGER_PARAM_X"),
        ({"image": "x", "surprise": 1}, "$.surprise"),
    ],
)  # fmt: skip
async def test_a_bad_declaration_is_refused_naming_the_field(
    client: Client, etl: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    answer = await put(client, "/definitions/bad", body, status=422)
    assert answer["error"]["details"]["field"] == field, answer
    await get(client, "/definitions/bad", status=404)


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"day": "d", "nope": 1}, "$.params.nope", "unknown parameter"),
        ({"day": 3}, "$.params.day", "type string"),
        ({"day": "d", "rows": "ten"}, "$.params.rows", "type integer"),
        ({"day": "d", "rows": 1.5}, "$.params.rows", "type integer"),
        ({"day": "d", "ratio": "x"}, "$.params.ratio", "type number"),
        ({"day": "d", "dry": "yes"}, "$.params.dry", "type boolean"),
        ({"day": "d", "mode": "half"}, "$.params.mode", "one of: full, delta"),
        ({}, "$.params.day", "required"),
    ],
)
async def test_params_are_checked_against_the_declaration(
    client: Client, etl: dict[str, Any], params: dict[str, Any], field: str, words: str
) -> None:
    answer = await post(client, "/api/v1/jobs", run(params=params), 422)
    assert answer["error"]["details"]["field"] == field
    assert words in answer["error"]["message"]


async def test_a_job_by_reference_records_its_definition_version_and_params(
    client: Client, etl: dict[str, Any], pool: asyncpg.Pool, service: JobService
) -> None:
    job = await post(
        client, "/api/v1/jobs", run(params={"day": "d1", "rows": 3.0, "ratio": 2}, priority=5), 201
    )
    spec = job["spec"]
    assert spec["command"] == ["sh", "-c", "echo load d1 into events {{raw}}"]
    assert spec["env"] == {
        "MODE": "full-delta",
        "JOBLEDGER_PARAM_DAY": "d1",
        "JOBLEDGER_PARAM_TABLE": "events",
        "JOBLEDGER_PARAM_ROWS": "3",
        "JOBLEDGER_PARAM_RATIO": "2",
        "JOBLEDGER_PARAM_DRY": "false",
        "JOBLEDGER_PARAM_MODE": "delta",
    }
    assert (spec["priority"], spec["project"]) == (5, "etl")
    assert (spec["concurrency_key"], spec["concurrency_limit"]) == ("definition:etl/nightly", 1)
    assert (job["definition"], job["definition_version"]) == ("nightly", 1)
    assert job["source"]["params"] == {
        "day": "d1", "table": "events", "rows": 3, "ratio": 2, "dry": False, "mode": "delta"
    }  # fmt: skip

    # The definition changes while the job waits: the job keeps what it was made from.
    await put(client, "/definitions/nightly", {**ETL, "command": ["echo", "v2"]}, status=200)
    again = await get(client, f"/api/v1/jobs/{job['id']}")
    assert (again["definition_version"], again["spec"]["command"][0]) == (1, "sh")
    events = (await get(client, f"/api/v1/jobs/{job['id']}/events"))["events"]
    submitted = events[0]["data"]
    assert submitted["source"]["definition_version"] == 1
    assert submitted["spec"]["command"][2] == "echo load d1 into events {{raw}}"
    later = await post(client, "/api/v1/jobs", run(), 201)
    assert (later["definition_version"], later["spec"]["command"]) == (2, ["echo", "v2"])
    older = await post(client, "/api/v1/jobs", run(definition_version=1), 201)
    assert older["definition_version"] == 1

    # The list filters by definition; a plain job is not among them.
    await post(client, "/api/v1/jobs", {"image": "busybox", "project": "etl"}, 201)
    listed = (await get(client, "/api/v1/jobs?definition=nightly"))["jobs"]
    assert {j["id"] for j in listed} == {job["id"], later["id"], older["id"]}
    assert (await get(client, "/api/v1/jobs?definition=other"))["jobs"] == []

    # A second job of the definition waits for the first (its default concurrency key).
    await pool.execute(
        "INSERT INTO workers (id, tags, capacity, lease_seconds, executor, hostname, pid)"
        " VALUES ('w1', '{}', 4, 60, 'docker', 'here', 1)"
    )
    await service.execute(uuid.UUID(job["id"]), Start(worker_id="w1"), EventMeta(actor="w1"))
    waiting = await get(client, f"/api/v1/jobs/{later['id']}")
    assert "concurrency key 'definition:etl/nightly' has 1 running" in waiting["waiting_reason"]
    assert [p async for p in Verifier(pool).problems()] == []


async def test_an_idempotent_retry_compares_the_request_not_the_resolved_spec(
    client: Client, etl: dict[str, Any]
) -> None:
    first = await post(client, "/api/v1/jobs", run(idempotency_key="k1"), 201)
    await put(client, "/definitions/nightly", {**ETL, "image": "busybox:2"}, status=200)
    assert (await client.post(f"{P}/definitions/nightly/disable")).status == 200
    same = await post(client, "/api/v1/jobs", run(idempotency_key="k1"), 200)
    assert (same["id"], same["definition_version"]) == (first["id"], 1)
    other = await post(client, "/api/v1/jobs", run(idempotency_key="k1", priority=3), 409)
    assert other["error"]["code"] == "idempotency_conflict"


async def test_a_disabled_definition_refuses_submits_until_enabled(
    client: Client, etl: dict[str, Any]
) -> None:
    off = await post(client, f"{P}/definitions/nightly/disable", {"reason": "migrating"}, 200)
    assert (off["disabled"], off["disabled_reason"]) == (True, "migrating")
    refused = await post(client, "/api/v1/jobs", run(), 409)
    assert "disabled: migrating" in refused["error"]["message"]
    on = await post(client, f"{P}/definitions/nightly/enable", {}, 200)
    assert on["disabled"] is False
    await post(client, "/api/v1/jobs", run(), 201)


async def test_delete_and_save_again_continues_the_versions(
    client: Client, etl: dict[str, Any]
) -> None:
    assert (await client.delete(f"{P}/definitions/nightly")).status == 204
    await get(client, "/definitions/nightly", status=404)
    assert (await get(client, "/definitions"))["definitions"] == []
    missing = await post(client, "/api/v1/jobs", run(), 404)
    assert "no definition 'nightly'" in missing["error"]["message"]
    assert (await client.delete(f"{P}/definitions/nightly")).status == 404
    again = await put(client, "/definitions/nightly", ETL)
    assert again["version"] == 2


async def test_resolution_order_environment_definition_submit(
    client: Client, etl: dict[str, Any]
) -> None:
    prod = {
        "image": "busybox:env",
        "env": {"REGION": "eu", "MODE": "env", "DB_PASSWORD": {"secret": "db-password"}},
        "resources": {"cpu": 0.5, "memory_mb": 256},
    }
    assert (await put(client, "/environments/prod", prod))["version"] == 1
    # The secret exists by the submit (a reference to an unknown one is refused there).
    await put(client, "/secrets/db-password", {"value": "s3cret-value"})
    staging = {"image": "busybox:staging", "env": {"REGION": "us"}}
    await put(client, "/environments/staging", staging)
    definition = {
        "environment": "prod",
        "command": ["echo", "{{params.x}}"],
        "env": {"MODE": "def"},
        "labels": {"team": "data", "tier": "gold"},
        "params": [{"name": "x", "default": "1"}],
    }
    await put(client, "/definitions/layered", definition)
    job = await post(
        client, "/api/v1/jobs",
        {"definition": "layered", "project": "etl", "labels": {"tier": "silver"},
         "concurrency_key": "mine", "concurrency_limit": 2},
        201,
    )  # fmt: skip
    spec = job["spec"]
    assert spec["image"] == "busybox:env"  # only the environment gives one
    assert spec["env"].pop("DB_PASSWORD")["secret"] == "db-password"  # a reference, kept as such
    assert spec["env"] == {"REGION": "eu", "MODE": "def", "JOBLEDGER_PARAM_X": "1"}
    assert spec["resources"] == {"cpu": 0.5, "memory_mb": 256}
    assert spec["labels"] == {"team": "data", "tier": "silver"}
    assert (spec["concurrency_key"], spec["concurrency_limit"]) == ("mine", 2)
    assert (job["source"]["environment"], job["source"]["environment_version"]) == ("prod", 1)

    # The submit may name another environment; the definition's own fields still win.
    staged = {"definition": "layered", "project": "etl", "environment": "staging"}
    other = await post(client, "/api/v1/jobs", staged, 201)
    assert (other["spec"]["env"]["REGION"], other["spec"]["image"]) == ("us", "busybox:staging")
    assert other["source"]["environment"] == "staging"
    missing = await post(
        client, "/api/v1/jobs", {"definition": "layered", "project": "etl", "environment": "qa"},
        404,
    )  # fmt: skip
    assert missing["error"]["details"]["field"] == "$.environment"

    diff = await get(client, "/environments/prod/diff?from=1&to=1")
    assert diff["changes"] == []
    assert [e["name"] for e in (await get(client, "/environments"))["environments"]] == [
        "prod", "staging",
    ]  # fmt: skip
    bad = await put(client, "/environments/x", {"env": {"JOBLEDGER_X": "1"}}, status=422)
    assert bad["error"]["details"]["field"] == "$.env.JOBLEDGER_X"
    assert (await client.delete(f"{P}/environments/prod")).status == 204
    gone = await post(client, "/api/v1/jobs", {"definition": "layered", "project": "etl"}, 404)
    assert gone["error"]["details"]["field"] == "$.definition"


async def test_a_plain_spec_may_not_set_a_reserved_variable(client: Client) -> None:
    answer = await post(
        client, "/api/v1/jobs", {"image": "busybox", "env": {"JOBLEDGER_PARAM_DAY": "x"}}, 422
    )
    assert answer["error"]["details"]["field"] == "$.env.JOBLEDGER_PARAM_DAY"
    batch = await post(
        client, "/api/v1/jobs:batch",
        {"jobs": [{"image": "busybox"}, {"image": "busybox", "env": {"JOBLEDGER_X": "1"}}]}, 422,
    )  # fmt: skip
    assert batch["error"]["details"]["field"] == "$.jobs[1].env.JOBLEDGER_X"


async def test_roles_viewers_read_operators_submit_admins_change(client: Client) -> None:
    tokens = await project_with_accounts(client, "p1")
    base = "/api/v1/projects/p1/definitions/d"
    body = {"image": "busybox", "params": [{"name": "n", "type": "integer", "default": 1}]}
    for role in ("viewer", "operator"):
        assert (await call(client, "PUT", base, tokens[role], body))[0] == 403
    assert (await call(client, "PUT", base, tokens["admin"], body))[0] == 201
    by_ref = {"definition": "d", "params": {"n": 2}}
    assert (await call(client, "POST", "/api/v1/jobs", tokens["viewer"], by_ref))[0] == 403
    status, job = await call(client, "POST", "/api/v1/jobs", tokens["operator"], by_ref)
    assert status == 201 and job["spec"]["project"] == "p1"  # the token's own project
    for method, path in (("GET", base), ("GET", f"{base}/versions"), ("GET", base[:-2])):
        assert (await call(client, method, path, tokens["viewer"]))[0] == 200
    for method, path in (("POST", f"{base}/disable"), ("POST", f"{base}/enable"),
                         ("DELETE", base)):  # fmt: skip
        assert (await call(client, method, path, tokens["operator"]))[0] == 403
    assert (await call(client, "PUT", "/api/v1/projects/p1/environments/e", tokens["operator"],
                       {"env": {}}))[0] == 403  # fmt: skip
    other = await project_with_accounts(client, "p2")
    assert (await call(client, "GET", base, other["admin"]))[0] == 403
    assert (await call(client, "DELETE", base, tokens["admin"]))[0] == 204
