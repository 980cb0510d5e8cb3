"""Schedule routes: operators change, viewers read; bad settings are 422 naming the field; a
trigger makes one job carrying the schedule and occurrence; the log verifies, rebuilds and
shows a schedule at a past time."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.api.schedules import SCHEDULES
from jobledger.domain.events import EventMeta
from jobledger.domain.schedules import SCHEDULE, Bound, Trigger
from jobledger.domain.schedules import run_id as schedule_run_id
from jobledger.domain.workflows import StepJobStarted, child_job_id
from jobledger.replay.archive import stream_at
from jobledger.replay.rebuild import rebuild
from jobledger.replay.verify import Verifier
from jobledger.scheduleservice import QUERIES, ScheduleService
from jobledger.service import JobService
from jobledger.wire import NewSchedule
from tests.api.test_access_api import call, project_with_accounts

Client = TestClient[web.Request, web.Application]
META = EventMeta(actor="test")
BASE = "/api/v1/projects/p1/schedules"
DEFS = "/api/v1/projects/p1/definitions"


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
        assert status == 422, (sent, err)
        assert err["error"]["details"]["field"] == field, (sent, err)
    status, err = await call(client, "GET", f"{BASE}/nightly?preview=500", tokens["viewer"])
    assert status == 400 and err["error"]["details"]["field"] == "query.preview", err
    status, err = await call(client, "POST", f"{BASE}/none/trigger", tokens["operator"])
    assert status == 404, err


# ---- a schedule that runs a definition -------------------------------------------------------

LOAD: dict[str, Any] = {
    "image": "jobledger-test:latest",
    "command": ["sh", "-c", "echo load {{params.day}} rows={{params.rows}}"],
    "params": [
        {"name": "day", "type": "string", "required": True},
        {"name": "rows", "type": "integer", "default": 10},
    ],
}
DEF_RUN: dict[str, Any] = {
    "definition": "load", "params": {"day": "today", "rows": 5}, "priority": 7,
    "labels": {"team": "data"},
}  # fmt: skip


async def wait_due(pool: asyncpg.Pool, sid: uuid.UUID) -> None:
    """Until the schedule's next occurrence is due by the database's clock (a time, not an
    event, is awaited)."""
    for _ in range(100):
        if await pool.fetchval(
            "SELECT next_due_at <= clock_timestamp() FROM schedules WHERE stream_id = $1", sid
        ):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the schedule never fell due")


async def test_a_schedule_runs_a_definition_resolved_at_each_occurrence(
    client: Client, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    op = tokens["operator"]
    status, saved = await call(client, "PUT", DEFS + "/load", tokens["admin"], LOAD)
    assert status == 201, saved
    cases = [
        (body(run={**DEF_RUN, "params": {"day": 3}}), 422, "$.run.params.day"),
        (body(run={**DEF_RUN, "params": {"rows": 1}}), 422, "$.run.params.day"),
        (body(run={**DEF_RUN, "params": {"day": "x", "nope": 1}}), 422, "$.run.params.nope"),
        (body(run={**DEF_RUN, "definition": "missing"}), 422, "$.run.definition"),
        (body(run={**DEF_RUN, "definition_version": 9}), 422, "$.run.definition_version"),
        (body(run={**DEF_RUN, "environment": "none"}), 422, "$.run.environment"),
        (body(run={**DEF_RUN, "spec": {"image": "x"}}), 422, "$.run"),
        (body(run={}), 422, "$.run"),
        (body(run={"spec": {"image": "x"}, "params": {"a": 1}}), 422, "$.run.params"),
    ]  # fmt: skip
    for sent, want, field in cases:
        status, err = await call(client, "POST", BASE, op, sent)
        assert (status, err["error"]["details"].get("field")) == (want, field), (sent, err)

    status, created = await call(client, "POST", BASE, op, body(run=DEF_RUN))
    assert status == 201, created
    assert created["run"] == DEF_RUN
    status, trig = await call(client, "POST", f"{BASE}/nightly/trigger", op)
    assert status == 201, trig
    status, job = await call(client, "GET", f"/api/v1/jobs/{trig['job_id']}", tokens["viewer"])
    assert status == 200, job
    assert (job["definition"], job["definition_version"]) == ("load", 1)
    assert job["source"]["params"] == {"day": "today", "rows": 5}
    assert job["spec"]["command"] == ["sh", "-c", "echo load today rows=5"]
    env = job["spec"]["env"]
    assert env["JOBLEDGER_PARAM_DAY"] == "today" and env["JOBLEDGER_SCHEDULE"] == "nightly"
    occurrence = env["JOBLEDGER_OCCURRENCE"]
    assert job["labels"] == {"team": "data", "jobledger.schedule": "nightly",
                             "jobledger.occurrence": occurrence}  # fmt: skip
    assert job["priority"] == 7
    # The schedule's own concurrency, not the definition's `definition:p1/load`.
    assert (job["concurrency_key"], job["concurrency_limit"]) == ("schedule:p1/nightly", 1)
    assert job["idempotency_key"].startswith("schedule/nightly/manual/")
    status, page = await call(client, "GET", "/api/v1/jobs?project=p1&definition=load",
                              tokens["viewer"])  # fmt: skip
    assert [j["id"] for j in page["jobs"]] == [trig["job_id"]]

    # Each occurrence resolves the latest version.
    v2 = {**LOAD, "command": ["echo", "v2", "{{params.day}}"]}
    status, _ = await call(client, "PUT", DEFS + "/load", tokens["admin"], v2)
    assert status == 200
    status, trig2 = await call(client, "POST", f"{BASE}/nightly/trigger", op)
    status, job2 = await call(client, "GET", f"/api/v1/jobs/{trig2['job_id']}", op)
    assert job2["definition_version"] == 2 and job2["spec"]["command"] == ["echo", "v2", "today"]
    # An update is checked like a create.
    settings = {k: v for k, v in body(run={**DEF_RUN, "params": {}}).items() if k != "name"}
    status, err = await call(client, "PUT", f"{BASE}/nightly", op, settings)
    assert status == 422 and err["error"]["details"]["field"] == "$.run.params.day", err
    assert [p async for p in Verifier(pool).problems()] == []


async def test_a_disabled_or_deleted_definition_skips_the_occurrence_with_the_reason(
    client: Client, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    op = tokens["operator"]
    status, _ = await call(client, "PUT", f"{DEFS}/load", tokens["admin"], LOAD)
    assert status == 201
    status, created = await call(client, "POST", BASE, op, body(cron="* * * * * *", run=DEF_RUN))
    assert status == 201, created
    status, _ = await call(
        client, "POST", f"{DEFS}/load/disable", tokens["admin"], {"reason": "migrating"}
    )
    assert status == 200
    schedules = client.app[SCHEDULES]
    sid = SCHEDULE.stream_id("p1", "nightly")
    await wait_due(pool, sid)
    assert await schedules.fire(sid, "test") == []
    status, occ = await call(client, "GET", f"{BASE}/nightly/occurrences", tokens["viewer"])
    newest = occ["occurrences"][0]
    assert (newest["outcome"], newest["reason"]) == ("skipped", "definition_disabled"), occ
    assert "disabled: mig" in newest["detail"]
    # A manual run is refused outright rather than recorded without a job.
    status, err = await call(client, "POST", f"{BASE}/nightly/trigger", op)
    assert status == 409 and err["error"]["details"]["field"] == "$.run.definition", err

    status, _ = await call(client, "POST", f"{DEFS}/load/enable", tokens["admin"])
    assert status == 200
    await wait_due(pool, sid)
    [fired] = await schedules.fire(sid, "test")
    status, job = await call(client, "GET", f"/api/v1/jobs/{fired.job_id}", op)
    assert status == 200 and job["definition"] == "load", job

    status, _ = await call(client, "DELETE", f"{DEFS}/load", tokens["admin"])
    assert status == 204
    await wait_due(pool, sid)
    assert await schedules.fire(sid, "test") == []
    status, occ = await call(client, "GET", f"{BASE}/nightly/occurrences", tokens["viewer"])
    assert occ["occurrences"][0]["reason"] == "definition_deleted", occ
    assert not any(o["outcome"] == "fired" and o.get("job_state") is None
                   for o in occ["occurrences"])  # fmt: skip


# ---- a schedule that runs a workflow ---------------------------------------------------------

WF_RUN: dict[str, Any] = {"workflow": {"steps": [
    {"name": "extract", "spec": {"image": "jobledger-test:latest", "command": ["true"]}},
    {"name": "load", "spec": {"image": "jobledger-test:latest", "command": ["true"]},
     "needs": ["extract"]},
]}}  # fmt: skip


def wf_step(**kw: Any) -> dict[str, Any]:
    return {"name": "a", "spec": {"image": "x"}, **kw}


async def test_a_schedule_runs_a_workflow_and_a_bad_one_is_422_naming_the_field(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    tokens = await project_with_accounts(client, "p1")
    op = tokens["operator"]
    cases = [
        (body(run={**WF_RUN, "spec": {"image": "x"}}), "$.run"),
        (body(run={**WF_RUN, "priority": 3}), "$.run.priority"),
        (body(run={"workflow": {"steps": []}}), "$.run.workflow.steps"),
        (body(run={"workflow": {"steps": [wf_step(needs=["zz"])]}}),
         "$.run.workflow.steps[0].needs[0]"),
        (body(run={"workflow": {"steps": [wf_step(needs=["b"]), wf_step(name="b", needs=["a"])]}}),
         "$.run.workflow.steps[0].needs[0]"),
        (body(run={"workflow": {"steps": [wf_step(condition="sometimes")]}}),
         "$.run.workflow.steps[0].condition"),
        (body(run={"workflow": {"steps": [{"name": "a", "definition": {"definition": "nope"}}]}}),
         "$.run.workflow.steps[0].definition"),
        (body(run={"workflow": {"steps": [wf_step()], "project": "p2"}}),
         "$.run.workflow.project"),
    ]  # fmt: skip
    for sent, field in cases:
        status, err = await call(client, "POST", BASE, op, sent)
        assert (status, err["error"]["details"].get("field")) == (422, field), (sent, err)

    status, created = await call(client, "POST", BASE, op, body(run=WF_RUN))
    assert status == 201, created
    assert [s["name"] for s in created["run"]["workflow"]["steps"]] == ["extract", "load"]
    status, trig = await call(client, "POST", f"{BASE}/nightly/trigger", op)
    assert status == 201, trig
    assert "job_id" not in trig
    sid = SCHEDULE.stream_id("p1", "nightly")
    run_id = trig["workflow_run"]
    occurrence = (await ScheduleService(service).streams.load("schedule", sid))[0].recent[-1]
    assert run_id == str(schedule_run_id(sid, occurrence.occurrence, manual=True))
    status, run = await call(client, "GET", f"/api/v1/workflows/{run_id}", tokens["viewer"])
    assert status == 200, run
    assert run["project"] == "p1" and run["schedule"] == "nightly"
    assert run["occurrence"] == occurrence.occurrence.isoformat().replace("+00:00", "Z")
    assert [s["state"] for s in run["steps"]] == ["ready", "waiting"]
    # The ScheduleFired caused the WorkflowSubmitted.
    fired = await pool.fetchrow(
        "SELECT event_id FROM events WHERE type = 'ScheduleFired' AND stream_id = $1", sid
    )
    submitted = await pool.fetchrow(
        "SELECT meta FROM events WHERE stream_id = $1 AND version = 1", uuid.UUID(run_id)
    )
    assert f'"causation_id": "{fired["event_id"]}"' in submitted["meta"]

    status, page = await call(client, "GET", f"{BASE}/nightly/occurrences", tokens["viewer"])
    [occ] = page["occurrences"]
    assert (occ["outcome"], occ["workflow_run"], occ["workflow_run_state"]) == (
        "fired",
        run_id,
        "running",
    )
    assert "job_id" not in occ and occ["job_lag_seconds"] >= 0
    for query, want in (("schedule=nightly", [run_id]), ("schedule=other", [])):
        status, runs = await call(client, "GET", f"/api/v1/workflows?{query}", tokens["viewer"])
        assert status == 200 and [r["id"] for r in runs["runs"]] == want, runs
    assert [p async for p in Verifier(pool).problems()] == []


async def test_a_run_not_started_before_a_crash_is_started_once_by_the_repair(
    client: Client, service: JobService, pool: asyncpg.Pool
) -> None:
    """A process died between the ScheduleFired and the run's creation: `unsubmitted`
    finds the schedule, and repairs from several processes at once start the run once."""
    await project_with_accounts(client, "p1")
    schedules = ScheduleService(service)
    settings = msgspec.convert(body(run=WF_RUN), NewSchedule).settings()
    await schedules.create("p1", "nightly", settings, META)
    sid = SCHEDULE.stream_id("p1", "nightly")
    now = await pool.fetchval("SELECT clock_timestamp()")
    # What `trigger` records before it creates the run; the "crash" is not creating it.
    state = await schedules.streams.execute("schedule", sid, Bound(sid, Trigger(now=now)), META)
    run_id = state.recent[-1].workflow_run
    assert run_id is not None
    assert await schedules.unsubmitted() == [sid]
    others = [ScheduleService(service) for _ in range(3)]
    made = await asyncio.gather(*(s.ensure_jobs(sid, state, f"repair-{n}")
                                  for n, s in enumerate(others)))  # fmt: skip
    assert sorted(made) == [0, 0, 1]
    assert await schedules.ensure_jobs(sid, state, "again") == 0
    assert await schedules.unsubmitted() == []
    submitted = await pool.fetch(
        "SELECT meta FROM events WHERE type = 'WorkflowSubmitted' AND stream_id = $1", run_id
    )
    assert len(submitted) == 1 and str(state.recent[-1].event_id) in submitted[0]["meta"]
    run = await schedules.workflows.load(run_id)
    assert (run.schedule, run.occurrence) == ("nightly", now)
    # The overlap policy's facts: a run waits until one of its steps has started.
    counts = QUERIES["run_counts"]
    assert tuple(await pool.fetchrow(counts, "p1", "nightly")) == (0, 1)
    job = child_job_id(run_id, "extract")
    await schedules.workflows._execute(run_id, StepJobStarted(step="extract", job_id=job), META)
    assert tuple(await pool.fetchrow(counts, "p1", "nightly")) == (1, 0)
    await schedules.workflows.cancel(run_id, None, META)
    assert tuple(await pool.fetchrow(counts, "p1", "nightly")) == (1, 0)  # cancelling
