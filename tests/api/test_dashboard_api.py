"""Routes of the web dashboard (issue 17): whoami, counts per state, time travel with
`?at=`, and the one-job history check."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import Finish, RequestCancel, Start
from jobledger.service import JobService
from tests.api.test_access_api import call, project_with_accounts
from tests.conftest import ADMIN_TOKEN
from tests.factories import spec
from tests.replay.test_verify import behind_the_guard

Client = TestClient[web.Request, web.Application]
META = EventMeta(actor="test")
MISSING = "01a2087c-db01-725b-b63a-f89db42493f1"
STATES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def recorded_at(pool: asyncpg.Pool, job_id: uuid.UUID | str, version: int) -> datetime:
    t: datetime = await pool.fetchval(
        "SELECT recorded_at FROM events WHERE stream_id = $1 AND version = $2",
        uuid.UUID(str(job_id)),
        version,
    )
    return t


# ---- whoami -------------------------------------------------------------------------------


async def test_whoami_names_the_actor_role_and_project_of_each_token(client: Client) -> None:
    tokens = await project_with_accounts(client, "p1")
    for role, token in tokens.items():
        status, me = await call(client, "GET", "/api/v1/whoami", token)
        assert status == 200, me
        assert me["actor"] == f"p1/{role}-bot" and me["role"] == role and me["project"] == "p1"
        assert uuid.UUID(me["token_id"]) and me["expires_at"] is None
    status, me = await call(client, "GET", "/api/v1/whoami", ADMIN_TOKEN)
    assert status == 200
    assert me == {
        "actor": "admin", "role": "admin", "project": None, "token_id": None,
        "expires_at": None, "job_id": None,
    }  # fmt: skip


async def test_whoami_shows_when_a_token_expires(client: Client) -> None:
    await project_with_accounts(client, "p1")
    resp = await client.post(
        "/api/v1/projects/p1/service-accounts/viewer-bot/tokens", json={"expires_in_seconds": 3600}
    )
    issued = await resp.json()
    status, me = await call(client, "GET", "/api/v1/whoami", issued["token"])
    assert status == 200 and me["token_id"] == issued["id"]
    expires = datetime.fromisoformat(me["expires_at"])
    assert expires == datetime.fromisoformat(issued["expires_at"])


@pytest.mark.parametrize("token", [None, "jl_not-a-real-token"])
async def test_whoami_without_a_valid_token_is_401(client: Client, token: str | None) -> None:
    status, body = await call(client, "GET", "/api/v1/whoami", token)
    assert status == 401 and body["error"]["code"] == "unauthenticated"


# ---- counts -------------------------------------------------------------------------------


async def jobs_in_states(service: JobService, project: str = "default", **kw: Any) -> list[str]:
    """Jobs in: queued, running, succeeded, cancelled, and a second queued one."""
    ids = []
    for end in ("queued", "running", "succeeded", "cancelled", "queued"):
        view, _ = await service.submit(spec(project=project, **kw), META)
        if end in ("running", "succeeded"):
            await service.execute(view.id, Start(worker_id="w1"), META)
        if end == "succeeded":
            await service.execute(view.id, Finish(exit_code=0), META)
        if end == "cancelled":
            await service.execute(view.id, RequestCancel(), META)
        ids.append(str(view.id))
    return ids


async def test_counts_have_every_state_and_the_total(client: Client, service: JobService) -> None:
    await jobs_in_states(service)
    resp = await client.get("/api/v1/jobs/counts")
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "counts": {"queued": 2, "running": 1, "cancelling": 0, "succeeded": 1, "failed": 0,
                   "cancelled": 1},
        "total": 5,
    }  # fmt: skip


async def test_counts_take_the_list_filters(client: Client, service: JobService) -> None:
    await jobs_in_states(service, labels={"team": "a"})
    await jobs_in_states(service, labels={"team": "b"})
    body = await (await client.get("/api/v1/jobs/counts?label=team=a&state=queued,running")).json()
    assert body["total"] == 3 and body["counts"]["queued"] == 2 and body["counts"]["running"] == 1
    assert body["counts"]["succeeded"] == 0
    listed = await (await client.get("/api/v1/jobs?label=team=a&state=queued,running")).json()
    assert len(listed["jobs"]) == body["total"]


async def test_counts_are_scoped_like_the_list(client: Client, service: JobService) -> None:
    tokens = await project_with_accounts(client, "p1")
    await jobs_in_states(service, project="p1")
    await jobs_in_states(service)  # project default: not p1's to see
    status, body = await call(client, "GET", "/api/v1/jobs/counts", tokens["viewer"])
    assert status == 200 and body["total"] == 5
    path = "/api/v1/jobs/counts?project=default"
    status, body = await call(client, "GET", path, tokens["viewer"])
    assert status == 403 and body["error"]["details"] == {"field": "query.project"}
    assert (await (await client.get("/api/v1/jobs/counts")).json())["total"] == 10


# ---- time travel --------------------------------------------------------------------------


async def test_a_job_at_a_time_is_its_fold_up_to_then(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    [_, _, done, *_] = await jobs_in_states(service)
    submitted, started, finished = [await recorded_at(pool, done, v) for v in (1, 2, 3)]
    now = await (await client.get(f"/api/v1/jobs/{done}")).json()
    assert now["state"] == "succeeded"

    resp = await client.get(f"/api/v1/jobs/{done}", params={"at": iso(submitted)})
    then = await resp.json()
    assert resp.status == 200 and then["state"] == "queued" and then["version"] == 1
    assert then["started_at"] is None and then["waiting_reason"] is None
    assert then["spec"] == now["spec"] and then["created_at"] == now["created_at"]

    between = started + (finished - started) / 2
    then = await (await client.get(f"/api/v1/jobs/{done}", params={"at": iso(between)})).json()
    assert then["state"] == "running" and then["version"] == 2 and then["exit_code"] is None

    then = await (await client.get(f"/api/v1/jobs/{done}", params={"at": iso(finished)})).json()
    assert then == {**now, "waiting_reason": None}


async def test_a_job_before_it_existed_is_404(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    [job, *_] = await jobs_in_states(service)
    before = await recorded_at(pool, job, 1) - timedelta(microseconds=1)
    resp = await client.get(f"/api/v1/jobs/{job}", params={"at": iso(before)})
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "at", ["yesterday", "2030-01-01T00:00:00", "0001-01-01T00:00:00+01:00", ""]
)
async def test_an_unusable_at_names_the_parameter(
    client: Client, service: JobService, at: str
) -> None:
    [job, *_] = await jobs_in_states(service)
    for path in (f"/api/v1/jobs/{job}", "/api/v1/jobs"):
        resp = await client.get(path, params={"at": at})
        assert resp.status == 400, path
        error = (await resp.json())["error"]
        assert error["code"] == "invalid_input" and error["details"] == {"field": "query.at"}


async def test_the_list_at_a_time_folds_each_job_and_filters_by_its_state_then(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    first = await jobs_in_states(service)
    middle = await pool.fetchval("SELECT clock_timestamp()")
    later = await jobs_in_states(service)
    # The first jobs move on after `middle`; the later ones did not exist then.
    await service.execute(uuid.UUID(first[0]), RequestCancel(), META)

    body = await (await client.get("/api/v1/jobs", params={"at": iso(middle)})).json()
    assert [j["id"] for j in body["jobs"]] == first[::-1] and body["next_cursor"] is None
    assert [j["state"] for j in body["jobs"]][::-1] == [
        "queued", "running", "succeeded", "cancelled", "queued",
    ]  # fmt: skip
    assert not set(later) & {j["id"] for j in body["jobs"]}

    # The state filter applies to the state then: the first job was queued, not cancelled.
    queued = await (
        await client.get("/api/v1/jobs", params={"at": iso(middle), "state": "queued"})
    ).json()
    assert {j["id"] for j in queued["jobs"]} == {first[0], first[4]}
    now = await (await client.get("/api/v1/jobs", params={"state": "queued"})).json()
    assert first[0] not in {j["id"] for j in now["jobs"]}


async def test_the_list_at_a_time_pages_by_cursor(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    first = await jobs_in_states(service)
    at = iso(await pool.fetchval("SELECT clock_timestamp()"))
    await jobs_in_states(service)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"at": at, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/api/v1/jobs", params=params)).json()
        seen += [j["id"] for j in page["jobs"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == first[::-1]


async def test_time_travel_sees_only_the_callers_project(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    [other, *_] = await jobs_in_states(service)
    mine = await jobs_in_states(service, project="p1")
    at = iso(await pool.fetchval("SELECT clock_timestamp()"))
    status, _ = await call(client, "GET", f"/api/v1/jobs/{other}?at={at}", tokens["viewer"])
    assert status == 404
    status, body = await call(client, "GET", f"/api/v1/jobs?at={at}", tokens["viewer"])
    assert status == 200 and {j["id"] for j in body["jobs"]} == set(mine)


# ---- verify -------------------------------------------------------------------------------


async def test_an_untouched_job_is_verified(client: Client, service: JobService) -> None:
    [_, _, done, *_] = await jobs_in_states(service)
    resp = await client.get(f"/api/v1/jobs/{done}/verify")
    assert resp.status == 200
    body = await resp.json()
    assert body["verified"] is True and body["events"] == 3 and "problem" not in body
    assert datetime.fromisoformat(body["checked_at"]).tzinfo is not None


async def test_an_event_altered_behind_the_guard_is_not_verified(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    [_, _, done, *_] = await jobs_in_states(service)
    await behind_the_guard(
        pool,
        "UPDATE events SET data = jsonb_set(data, '{exit_code}', '77') "
        "WHERE stream_id = $1 AND version = 3",
        uuid.UUID(done),
    )
    body = await (await client.get(f"/api/v1/jobs/{done}/verify")).json()
    assert body["verified"] is False and body["events"] == 3
    assert body["problem"]["version"] == 3 and body["problem"]["kind"] == "broken_chain"
    assert body["problem"]["message"]


async def test_the_last_event_removed_is_not_verified(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    # A chain without its tail still links up: the jobs row's version tells it is short.
    [_, _, done, *_] = await jobs_in_states(service)
    await behind_the_guard(
        pool, "DELETE FROM events WHERE stream_id = $1 AND version = 3", uuid.UUID(done)
    )
    body = await (await client.get(f"/api/v1/jobs/{done}/verify")).json()
    assert body["verified"] is False and body["events"] == 2
    assert body["problem"]["kind"] == "events_missing"


async def test_verify_of_a_job_the_caller_cannot_see_is_404(
    client: Client, service: JobService
) -> None:
    tokens = await project_with_accounts(client, "p1")
    [other, *_] = await jobs_in_states(service)
    assert (await call(client, "GET", f"/api/v1/jobs/{other}/verify", tokens["viewer"]))[0] == 404
    assert (await client.get(f"/api/v1/jobs/{MISSING}/verify")).status == 404
    assert (await client.get("/api/v1/jobs/nope/verify")).status == 400


async def test_now_and_then_agree_for_every_version(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    """The slider's stops: at each event's recorded time the job is at that version."""
    [_, _, done, *_] = await jobs_in_states(service)
    events = (await (await client.get(f"/api/v1/jobs/{done}/events")).json())["events"]
    for event in events:
        at = event["recorded_at"]
        then = await (await client.get(f"/api/v1/jobs/{done}", params={"at": at})).json()
        assert then["version"] >= event["version"]
        assert then["last_position"] >= event["position"]
