"""Workflow routes without a scheduler: validation naming the field, roles and projects,
the list's filters and pages, the jobs list's `workflow_run` filter."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from jobledger.api.loghub import LOG_HUB
from tests.api.test_access_api import call, project_with_accounts
from tests.api.test_jobs_api import Client


def wf(*names: str, **kw: Any) -> dict[str, Any]:
    return {"steps": [{"name": n, "spec": {"image": "b"}} for n in names], **kw}


async def test_bad_specs_are_422_naming_the_field(client: Client) -> None:
    cases = [
        ({"steps": []}, "$.steps"),
        ({"steps": [{"name": "a", "spec": {"image": "b"}, "needs": ["zz"]}]},
         "$.steps[0].needs[0]"),
        (wf("a", "a"), "$.steps[1].name"),
        ({"steps": [{"name": "a"}]}, "$.steps[0]"),
        ({"steps": [{"name": "a", "definition": {"definition": "nope"}}]},
         "$.steps[0].definition"),
        ({"steps": [{"name": "a", "spec": {"image": "b", "idempotency_key": "k"}}]},
         "$.steps[0].spec.idempotency_key"),
        ({"steps": [{"name": "a", "spec": {"image": "b"}, "condition": "sometimes"}]},
         "$.steps[0].condition"),
    ]  # fmt: skip
    for body, field in cases:
        resp = await client.post("/api/v1/workflows", json=body)
        err = await resp.json()
        assert resp.status == 422 and err["error"]["details"]["field"] == field, (body, err)
    assert (await (await client.get("/api/v1/workflows")).json())["runs"] == []


async def test_viewers_read_operators_submit_cancel_rerun_other_projects_see_nothing(
    client: Client,
) -> None:
    tokens = await project_with_accounts(client, "p1")
    assert (await call(client, "POST", "/api/v1/workflows", tokens["viewer"], wf("a")))[0] == 403
    status, run = await call(client, "POST", "/api/v1/workflows", tokens["operator"], wf("a"))
    assert status == 201 and run["project"] == "p1"  # the token's own project
    one = f"/api/v1/workflows/{run['id']}"
    for path in (one, f"{one}/events", "/api/v1/workflows"):
        assert (await call(client, "GET", path, tokens["viewer"]))[0] == 200
    assert (await call(client, "POST", f"{one}/cancel", tokens["viewer"]))[0] == 403
    status, events = await call(client, "GET", f"{one}/events", tokens["viewer"])
    assert [e["type"] for e in events["events"]] == ["WorkflowSubmitted", "StepReady"]
    other = await project_with_accounts(client, "p2")
    assert (await call(client, "GET", one, other["admin"]))[0] == 404
    assert (await call(client, "GET", "/api/v1/workflows?project=p1", other["admin"]))[0] == 403
    _, mine = await call(client, "GET", "/api/v1/workflows", other["admin"])
    assert mine["runs"] == []
    status, cancelled = await call(client, "POST", f"{one}/cancel", tokens["operator"])
    # Nothing ran (no scheduler here): the ready step is skipped, the run ends at once.
    assert status == 200 and cancelled["state"] == "cancelled"
    assert cancelled["steps"][0]["skip_reason"] == "cancelled"
    status, again = await call(client, "POST", f"{one}/rerun", tokens["operator"],
                               {"mode": "from_failure"})  # fmt: skip
    assert status == 201 and again["rerun_of"] == run["id"]
    status, err = await call(client, "POST", f"{one}/rerun", tokens["operator"], {"mode": "x"})
    assert status == 422 and err["error"]["details"]["field"] == "$.mode"


async def test_the_list_filters_and_pages(client: Client) -> None:
    ids = [(await (await client.post("/api/v1/workflows", json=wf("a"))).json())["id"]
           for _ in range(3)]  # fmt: skip
    await client.post(f"/api/v1/workflows/{ids[0]}/cancel")
    page = await (await client.get("/api/v1/workflows", params={"limit": "2"})).json()
    assert [r["id"] for r in page["runs"]] == ids[::-1][:2] and page["next_cursor"]
    rest = await (await client.get("/api/v1/workflows", params={
        "limit": "2", "cursor": page["next_cursor"]})).json()  # fmt: skip
    assert [r["id"] for r in rest["runs"]] == [ids[0]] and rest["next_cursor"] is None
    done = await (await client.get("/api/v1/workflows", params={"state": "cancelled"})).json()
    assert [r["id"] for r in done["runs"]] == [ids[0]]
    bad = await client.get("/api/v1/workflows", params={"cursor": "zz"})
    assert bad.status == 400
    jobs = await (await client.get("/api/v1/jobs", params={"workflow_run": ids[1]})).json()
    assert jobs["jobs"] == []  # no runtime here: a ready step has no job yet


async def test_a_long_poll_answers_once_the_run_changes(client: Client) -> None:
    run = await (await client.post("/api/v1/workflows", json=wf("a"))).json()
    one, version = f"/api/v1/workflows/{run['id']}", run["version"]
    # Already past the version asked about: at once.
    now = await (await client.get(one, params={"after_version": "0", "wait": "25"})).json()
    assert now["version"] == version
    # Not past it: waits, and is answered by the cancel's notification.
    poll = asyncio.create_task(client.get(one, params={"after_version": str(version),
                                                        "wait": "25"}))  # fmt: skip
    hub = client.server.app[LOG_HUB]
    async with asyncio.timeout(10):
        while hub.subscriber_count(uuid.UUID(run["id"])) == 0:
            await asyncio.sleep(0.01)
    assert not poll.done()
    await client.post(f"{one}/cancel")
    changed = await (await poll).json()
    assert changed["version"] > version and changed["state"] == "cancelled"
    # Nothing changes: answered after `wait` with the run as it is.
    same = await (await client.get(one, params={"after_version": str(changed["version"]),
                                                 "wait": "0.1"})).json()  # fmt: skip
    assert same["version"] == changed["version"]
    for params, field in (({"wait": "26", "after_version": "1"}, "query.wait"),
                          ({"after_version": "-1"}, "query.after_version")):  # fmt: skip
        resp = await client.get(one, params=params)
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["details"]["field"] == field
