"""Retention through the API (issue 19): a project's `retention_days` is one of its limits,
and a pruned job's output is the one line saying so, in the JSON and text logs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.runtime.retention import Retention
from jobledger.service import JobService
from tests.store.test_retention import DAYS, finished_at, job_with_output

Client = TestClient[web.Request, web.Application]


async def test_retention_days_is_a_project_limit(client: Client) -> None:
    resp = await client.post("/api/v1/projects", json={"name": "etl"})
    assert resp.status == 201
    assert (await resp.json())["retention_days"] is None  # the server's --retention-days
    resp = await client.put("/api/v1/projects/etl/limits", json={"retention_days": 7})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["retention_days"] == 7
    view = await (await client.get("/api/v1/projects/etl")).json()
    assert (view["retention_days"], view["max_running_jobs"]) == (7, 10)
    listed = await (await client.get("/api/v1/projects")).json()
    assert {p["name"]: p["retention_days"] for p in listed["projects"]}["etl"] == 7
    # The change is an event of the project's stream, with its actor.
    audit = await (await client.get("/api/v1/audit?type=ProjectLimitsChanged")).json()
    assert any(e["data"].get("retention_days") == 7 for e in audit["events"]), audit


@pytest.mark.parametrize("value", [-1, 36_501, "7", 1.5])
async def test_bad_retention_days(client: Client, value: Any) -> None:
    resp = await client.put("/api/v1/projects/default/limits", json={"retention_days": value})
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["field"] == "$.retention_days"


async def test_a_pruned_jobs_logs_say_so(client: Client, service: JobService) -> None:
    job = await job_with_output(service)
    as_of = await finished_at(service.pool, job) + timedelta(days=DAYS, seconds=1)
    await Retention(service.pool, DAYS).round(as_of=as_of)
    page = await (await client.get(f"/api/v1/jobs/{job}/logs")).json()
    [line] = page["lines"]
    assert (line["seq"], line["stream"]) == (6, "system")
    assert line["text"].startswith("output pruned at ") and "5 lines" in line["text"]
    text = await (await client.get(f"/api/v1/jobs/{job}/logs.txt")).text()
    assert "output pruned at " in text
    # The job itself is as it was: its state, exit code and usage summary stay.
    detail = await (await client.get(f"/api/v1/jobs/{job}")).json()
    assert (detail["state"], detail["exit_code"]) == ("succeeded", 0)
