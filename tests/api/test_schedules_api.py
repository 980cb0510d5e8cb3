"""Schedule routes: operators change, viewers read; bad settings are 422 naming the field; a
trigger makes one job carrying the schedule and occurrence; the log verifies, rebuilds and
shows a schedule at a past time."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.domain.schedules import SCHEDULE
from jobledger.replay.archive import stream_at
from jobledger.replay.rebuild import rebuild
from jobledger.replay.verify import Verifier
from tests.api.test_access_api import call, project_with_accounts

Client = TestClient[web.Request, web.Application]
BASE = "/api/v1/projects/p1/schedules"


def body(**kw: Any) -> dict[str, Any]:
    return {
        "name": "nightly",
        "cron": "30 2 * * *",
        "timezone": "Europe/Prague",
        "run": {"spec": {"image": "jobledger-test:latest", "command": ["true"]}},
        **kw,
    }


async def test_create_read_preview_pause_resume_trigger_delete(
    client: Client, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    status, err = await call(client, "POST", BASE, tokens["viewer"], body())
    assert status == 403, err
    status, created = await call(client, "POST", BASE, tokens["operator"], body())
    assert status == 201, created
    assert created["cron"] == "30 2 * * *" and created["created_by"] == "p1/operator-bot"
    assert created["next_occurrence"] is not None and created["paused"] is False
    status, again = await call(client, "POST", BASE, tokens["operator"], body())
    assert status == 409, again

    status, shown = await call(client, "GET", f"{BASE}/nightly?preview=5", tokens["viewer"])
    assert status == 200 and len(shown["preview"]) == 5
    first = shown["preview"][0]
    assert first["local"].endswith(("T02:30:00+01:00", "T02:30:00+02:00", "T03:00:00+02:00"))
    assert first["utc"].endswith("+00:00") or first["utc"].endswith("Z")
    status, listed = await call(client, "GET", BASE, tokens["viewer"])
    assert [s["name"] for s in listed["schedules"]] == ["nightly"]

    status, paused = await call(client, "POST", f"{BASE}/nightly/pause", tokens["operator"])
    assert status == 200 and paused["paused"] and paused["next_due_at"] is None
    status, resumed = await call(client, "POST", f"{BASE}/nightly/resume", tokens["operator"])
    assert status == 200 and not resumed["paused"] and resumed["next_due_at"] is not None

    status, trig = await call(client, "POST", f"{BASE}/nightly/trigger", tokens["operator"])
    assert status == 201, trig
    job_id = trig["job_id"]
    status, job = await call(client, "GET", f"/api/v1/jobs/{job_id}", tokens["viewer"])
    assert status == 200, job
    assert job["project"] == "p1"
    assert job["spec"]["env"]["JOBLEDGER_SCHEDULE"] == "nightly"
    occurrence = job["spec"]["env"]["JOBLEDGER_OCCURRENCE"]
    assert job["labels"] == {"jobledger.schedule": "nightly", "jobledger.occurrence": occurrence}
    # The ScheduleFired caused the JobSubmitted.
    fired = await pool.fetchrow(
        "SELECT event_id, meta FROM events WHERE type = 'ScheduleFired' AND stream_id = $1",
        SCHEDULE.stream_id("p1", "nightly"),
    )
    submitted = await pool.fetchrow(
        "SELECT meta FROM events WHERE stream_id = $1 AND version = 1", uuid.UUID(job_id)
    )
    assert f'"causation_id": "{fired["event_id"]}"' in submitted["meta"]

    status, page = await call(client, "GET", "/api/v1/jobs?project=p1&schedule=nightly",
                              tokens["viewer"])  # fmt: skip
    assert [j["id"] for j in page["jobs"]] == [job_id]
    status, page = await call(client, "GET", "/api/v1/jobs?project=p1&schedule=other",
                              tokens["viewer"])  # fmt: skip
    assert page["jobs"] == []

    status, occ = await call(client, "GET", f"{BASE}/nightly/occurrences", tokens["viewer"])
    assert status == 200, occ
    [o] = occ["occurrences"]
    assert o["outcome"] == "fired" and o["manual"] and o["job_id"] == job_id
    assert o["job_lag_seconds"] is not None and o["job_lag_seconds"] >= 0

    settings = {k: v for k, v in body(cron="@hourly").items() if k != "name"}
    status, put = await call(client, "PUT", f"{BASE}/nightly", tokens["operator"], settings)
    assert status == 200 and put["cron"] == "@hourly", put
    before_delete = await pool.fetchval("SELECT clock_timestamp()")

    assert [p async for p in Verifier(pool).problems()] == []
    await pool.execute("UPDATE schedules SET fired = 99")
    assert [p async for p in Verifier(pool).problems()] != []
    await rebuild(pool)
    assert [p async for p in Verifier(pool).problems()] == []

    status, _ = await call(client, "DELETE", f"{BASE}/nightly", tokens["operator"])
    assert status == 204
    status, gone = await call(client, "GET", f"{BASE}/nightly", tokens["viewer"])
    assert status == 404, gone
    # The log keeps its occurrences, and shows it as it was.
    status, occ = await call(client, "GET", f"{BASE}/nightly/occurrences", tokens["viewer"])
    assert status == 200 and len(occ["occurrences"]) == 1
    past = await stream_at(pool, "schedule", SCHEDULE.stream_id("p1", "nightly"),
                           at=before_delete)  # fmt: skip
    assert past.state.settings.cron == "@hourly" and not past.state.deleted


async def test_bad_settings_are_422_naming_the_field(client: Client) -> None:
    tokens = await project_with_accounts(client, "p1")
    cases = [
        (body(cron="61 * * * *"), "$.cron"),
        (body(cron="not cron"), "$.cron"),
        (body(timezone="Mars/Olympus"), "$.timezone"),
        (body(overlap="sometimes"), "$.overlap"),
        (body(catch_up_limit=0), "$.catch_up_limit"),
        (body(run={"spec": {"image": "x", "env": {"JOBLEDGER_SCHEDULE": "x"}}}),
         "$.run.spec.env.JOBLEDGER_SCHEDULE"),
        (body(run={"spec": {}}), "$.run.spec.image"),
        (body(name="Bad Name"), "$.name"),
    ]  # fmt: skip
    for sent, field in cases:
        status, err = await call(client, "POST", BASE, tokens["operator"], sent)
        assert status in (400, 422), (sent, err)
        assert err["error"]["details"]["field"] == field, (sent, err)
    status, err = await call(client, "GET", f"{BASE}/nightly?preview=500", tokens["viewer"])
    assert status == 400 and err["error"]["details"]["field"] == "query.preview", err
    status, err = await call(client, "POST", f"{BASE}/none/trigger", tokens["operator"])
    assert status == 404, err
