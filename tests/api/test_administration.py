"""Administration is event-sourced (issue 14): projects and their limits, service accounts
and API tokens are streams whose events carry their actor; `projects`, `service_accounts` and
`api_tokens` are their projections, verified, rebuilt, and readable at any past time. A
token's secret and hash never enter the log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from jobledger.administration import AccessService
from jobledger.domain.access import SERVICE_ACCOUNT, project_stream
from jobledger.replay.archive import export, stream_at
from jobledger.replay.rebuild import rebuild
from jobledger.replay.verify import Verifier
from jobledger.store.access import token_hash
from tests.api.test_access_api import Client, call, project_with_accounts
from tests.conftest import ADMIN_TOKEN


async def stream_events(pool: asyncpg.Pool, stream_id: object) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT stream_type, type, data, meta, recorded_at FROM events"
        " WHERE stream_id = $1 ORDER BY version",
        stream_id,
    )
    return [{**dict(r), "data": json.loads(r["data"]), "meta": json.loads(r["meta"])} for r in rows]


async def problems(pool: asyncpg.Pool) -> list[tuple[str, str, str]]:
    return [(p.kind, p.stream_type, p.detail) async for p in Verifier(pool).problems()]


async def test_every_administrative_change_is_an_event_with_its_actor(
    client: Client, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "etl")
    admin_bot = tokens["admin"]
    # The project's own admin raises its limit; then issues and revokes a token.
    status, _ = await call(
        client, "PUT", "/api/v1/projects/etl/limits", admin_bot,
        {"max_running_jobs": 7, "submit_rate": 0.1},
    )  # fmt: skip
    assert status == 200
    status, issued = await call(
        client, "POST", "/api/v1/projects/etl/service-accounts/viewer-bot/tokens", admin_bot,
        {"description": "for grafana", "expires_in_seconds": 3600},
    )  # fmt: skip
    assert status == 201
    status, revoked = await call(
        client, "DELETE", f"/api/v1/projects/etl/tokens/{issued['id']}", admin_bot
    )
    assert status == 200
    bot_id = await pool.fetchval(
        "SELECT t.id FROM api_tokens t JOIN service_accounts s ON s.id = t.service_account_id"
        " WHERE s.name = 'admin-bot'"
    )

    project = await stream_events(pool, project_stream("etl"))
    assert [(e["stream_type"], e["type"], e["meta"]["actor"]) for e in project] == [
        ("project", "ProjectCreated", "admin"),
        ("project", "ProjectLimitsChanged", "etl/admin-bot"),
    ]
    assert project[0]["data"]["max_running_jobs"] == 10
    # Only what changed, and by which token, in which request.
    assert project[1]["data"] == {
        "type": "ProjectLimitsChanged", "max_running_jobs": 7, "log_limit_bytes": None,
        "submit_rate": 0.1, "submit_burst": None, "retention_days": None,
    }  # fmt: skip
    assert project[1]["meta"]["token_id"] == str(bot_id)
    assert project[1]["meta"]["request_id"]

    account = await stream_events(pool, SERVICE_ACCOUNT.stream_id("etl", "viewer-bot"))
    assert [(e["type"], e["meta"]["actor"], e["data"]["role"]) for e in account] == [
        ("ServiceAccountCreated", "admin", "viewer")
    ]

    token = await stream_events(pool, issued["id"])
    assert [(e["stream_type"], e["type"], e["meta"]["actor"]) for e in token] == [
        ("token", "TokenIssued", "etl/admin-bot"),
        ("token", "TokenRevoked", "etl/admin-bot"),
    ]
    assert token[0]["data"]["project"] == "etl"
    assert token[0]["data"]["service_account"] == "viewer-bot"
    assert token[0]["data"]["description"] == "for grafana"
    assert token[0]["data"]["expires_at"] == issued["expires_at"]
    assert revoked["revoked_at"] is not None

    # The tables are the fold of these streams, and the answers are what they always were.
    assert await problems(pool) == []
    row = await pool.fetchrow("SELECT * FROM projects WHERE name = 'etl'")
    assert (row["max_running_jobs"], row["submit_rate"], row["stream_id"]) == (
        7, 0.1, project_stream("etl"),
    )  # fmt: skip
    status, again = await call(
        client, "DELETE", f"/api/v1/projects/etl/tokens/{issued['id']}", admin_bot
    )
    assert (status, again) == (200, revoked)  # revoking again records nothing
    assert len(await stream_events(pool, issued["id"])) == 2
    status, _ = await call(client, "PUT", "/api/v1/projects/etl/limits", admin_bot,
                           {"max_running_jobs": 7})  # fmt: skip
    assert status == 200 and len(await stream_events(pool, project_stream("etl"))) == 2


async def test_a_second_create_is_a_conflict_and_records_nothing(
    client: Client, pool: asyncpg.Pool
) -> None:
    await project_with_accounts(client, "p1")
    events = await pool.fetchval("SELECT count(*) FROM events")
    status, body = await call(client, "POST", "/api/v1/projects", ADMIN_TOKEN, {"name": "p1"})
    assert (status, body["error"]["details"]["field"]) == (409, "$.name")
    status, body = await call(
        client, "POST", "/api/v1/projects/p1/service-accounts", ADMIN_TOKEN,
        {"name": "viewer-bot", "role": "admin"},
    )  # fmt: skip
    assert (status, body["error"]["details"]["field"]) == (409, "$.name")
    assert await pool.fetchval("SELECT count(*) FROM events") == events
    # A job's id is no token: revoking it is "not found", as any unknown id.
    job = await (
        await client.post("/api/v1/jobs", json={"image": "busybox", "project": "p1"})
    ).json()
    status, _ = await call(client, "DELETE", f"/api/v1/projects/p1/tokens/{job['id']}", ADMIN_TOKEN)
    assert status == 404


async def test_the_bootstrap_token_is_issued_by_bootstrap_and_works(
    client: Client, pool: asyncpg.Pool
) -> None:
    access = AccessService(pool)
    token = await access.bootstrap_admin_token()
    assert token is not None and await access.bootstrap_admin_token() is None
    token_id = await pool.fetchval("SELECT id FROM api_tokens WHERE hash = $1", token_hash(token))
    [issued] = await stream_events(pool, token_id)
    assert (issued["type"], issued["meta"], issued["data"]["service_account"]) == (
        "TokenIssued", {"actor": "bootstrap"}, None,
    )  # fmt: skip
    assert (await call(client, "GET", "/api/v1/projects", token))[0] == 200
    assert await problems(pool) == []


async def test_the_builtin_default_project_stands_without_events_until_changed(
    client: Client, pool: asyncpg.Pool
) -> None:
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    assert await problems(pool) == []
    status, _ = await call(client, "POST", "/api/v1/projects", ADMIN_TOKEN, {"name": "default"})
    assert status == 409
    await pool.execute("UPDATE projects SET max_running_jobs = 3 WHERE name = 'default'")
    assert await problems(pool) == [
        ("projection_differs", "project", "projects row differs in: max_running_jobs")
    ]
    await rebuild(pool)
    assert await problems(pool) == []

    status, _ = await call(client, "PUT", "/api/v1/projects/default/limits", ADMIN_TOKEN,
                           {"max_running_jobs": 4})  # fmt: skip
    assert status == 200
    events = await stream_events(pool, project_stream("default"))
    assert [(e["type"], e["data"]["max_running_jobs"]) for e in events] == [
        ("ProjectLimitsChanged", 4)
    ]
    assert await pool.fetchval("SELECT max_running_jobs FROM projects WHERE name = 'default'") == 4
    assert await problems(pool) == []


async def test_verify_names_a_tampered_row_and_a_rebuild_keeps_tokens_working(
    client: Client, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    status, _ = await call(client, "PUT", "/api/v1/projects/p1/limits", ADMIN_TOKEN,
                           {"max_running_jobs": 2})  # fmt: skip
    assert status == 200
    await call(client, "GET", "/api/v1/projects/p1", tokens["viewer"])  # sets last_used_at
    # Rows changed behind the log's back.
    await pool.execute("UPDATE projects SET max_running_jobs = 50 WHERE name = 'p1'")
    await pool.execute("UPDATE service_accounts SET role = 'admin' WHERE name = 'viewer-bot'")
    await pool.execute("UPDATE api_tokens SET revoked_at = now() WHERE description = 'test'")
    found = sorted(await problems(pool))
    assert found == sorted(
        [("projection_differs", "project", "projects row differs in: max_running_jobs")]
        + [("projection_differs", "service_account", "service_accounts row differs in: role")]
        + [("projection_differs", "token", "api_tokens row differs in: revoked_at")] * 3
    )
    assert (await call(client, "GET", "/api/v1/projects/p1", tokens["viewer"]))[0] == 401

    report = await rebuild(pool)
    assert report.tables == {
        "projects": 2, "service_accounts": 3, "api_tokens": 3,
        "secrets": 0, "definitions": 0, "environments": 0, "schedules": 0, "workflow_runs": 0,
    }  # fmt: skip
    assert await problems(pool) == []
    # The hashes, kept beside the log, survived: every token works again, with its role.
    for role, token in tokens.items():
        assert (await call(client, "GET", "/api/v1/projects/p1", token))[0] == 200, role
    assert (await call(client, "PUT", "/api/v1/projects/p1/limits", tokens["viewer"],
                       {"max_running_jobs": 1}))[0] == 403  # fmt: skip
    assert await pool.fetchval("SELECT max_running_jobs FROM projects WHERE name = 'p1'") == 2
    assert await pool.fetchval("SELECT count(last_used_at) FROM api_tokens") >= 1


async def test_time_travel_answers_what_the_limit_was(client: Client, pool: asyncpg.Pool) -> None:
    await call(client, "POST", "/api/v1/projects", ADMIN_TOKEN,
               {"name": "etl", "max_running_jobs": 2})  # fmt: skip
    marks = []
    for n in (5, 9):
        await asyncio.sleep(0.01)  # distinct recorded_at times to travel between
        marks.append(await pool.fetchval("SELECT clock_timestamp()"))
        await call(client, "PUT", "/api/v1/projects/etl/limits", ADMIN_TOKEN,
                   {"max_running_jobs": n})  # fmt: skip
    sid = project_stream("etl")
    then = [(await stream_at(pool, "project", sid, at=t)).state.max_running_jobs for t in marks]
    assert then == [2, 5]
    assert (await stream_at(pool, "project", sid)).state.max_running_jobs == 9


async def test_no_token_or_hash_in_the_export(client: Client, pool: asyncpg.Pool) -> None:
    tokens = await project_with_accounts(client, "p1")
    await AccessService(pool).bootstrap_admin_token()
    hashes = [bytes(r["hash"]) for r in await pool.fetch("SELECT hash FROM api_tokens")]
    assert len(hashes) == 4
    exported = [line async for line in export(pool)]
    assert [json.loads(line)["type"] for line in exported].count("TokenIssued") == 4
    lines = b"".join(exported)
    for token in tokens.values():
        assert token.encode() not in lines
    for digest in hashes:
        assert digest.hex().encode() not in lines and digest not in lines


async def test_who_raised_the_limit_and_who_issued_the_token_of_a_job_are_one_query_each(
    client: Client,
) -> None:
    tokens = await project_with_accounts(client, "etl")
    await call(client, "PUT", "/api/v1/projects/etl/limits", ADMIN_TOKEN, {"submit_burst": 5})
    await call(client, "PUT", "/api/v1/projects/etl/limits", tokens["admin"],
               {"max_running_jobs": 20})  # fmt: skip
    _, job = await call(client, "POST", "/api/v1/jobs", tokens["operator"], {"image": "b"})

    async def audit(query: str) -> list[dict[str, Any]]:
        status, page = await call(client, "GET", f"/api/v1/audit?{query}", ADMIN_TOKEN)
        assert status == 200, page
        events: list[dict[str, Any]] = page["events"]
        return events

    raised = await audit("stream_type=project&stream=etl&type=ProjectLimitsChanged")
    assert [(e["meta"]["actor"], e["data"]["max_running_jobs"]) for e in raised] == [
        ("etl/admin-bot", 20), ("admin", None),
    ]  # fmt: skip
    # The same stream by its id, or written PROJECT/NAME.
    by_id = await audit(f"stream={project_stream('etl')}&type=ProjectLimitsChanged")
    assert (
        by_id
        == raised
        == await audit("stream_type=project&stream=etl/etl&type=ProjectLimitsChanged")
    )

    [issued] = await audit(f"tokens_of_job={job['id']}&type=TokenIssued")
    assert issued["stream_type"] == "token" and issued["meta"]["actor"] == "admin"
    assert issued["data"]["service_account"] == "operator-bot"
    assert issued["stream_id"] == job_token(await audit(f"job={job['id']}"))

    for query in ("stream=etl", "stream_type=job&stream=etl", "stream_type=nope&stream=a/b"):
        status, body = await call(client, "GET", f"/api/v1/audit?{query}", ADMIN_TOKEN)
        assert (status, body["error"]["details"]["field"]) == (400, "query.stream"), query


def job_token(events: list[dict[str, Any]]) -> str:
    [token_id] = {e["meta"]["token_id"] for e in events}
    return str(token_id)
