"""`jobledger schedules create --definition NAME --param k=v` as a user runs it against
`jobledger serve` (no-op executor): the parameters typed as the definition declares them,
a bad one refused naming it, the trigger's job listed by `jobs --schedule` and
`jobs --definition`, and a disabled definition's occurrence skipped with its reason."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, ok, serving
from tests.e2e.conftest import run_cli as run


@pytest.fixture
async def server(dsn: str) -> AsyncIterator[Server]:
    async with serving(
        "--database-url", dsn, "--executor", "noop", "--worker-id", "sched-cli"
    ) as srv:
        yield srv


async def test_a_schedule_of_a_definition_from_the_cli(server: Server, tmp_path: Path) -> None:
    url = ("--url", server.url)
    load = {
        "image": "busybox:1",
        "command": ["echo", "{{params.day}}", "{{params.rows}}"],
        "params": [{"name": "day", "required": True},
                   {"name": "rows", "type": "integer", "default": 10}],
    }  # fmt: skip
    path = tmp_path / "load.json"
    path.write_text(json.dumps(load))
    await ok("definitions", "put", "load", "-f", str(path), *url)

    code, _, err = await run("schedules", "create", "daily", "--cron", "@daily",
                             "--definition", "load", "--param", "rows=many", *url)  # fmt: skip
    assert code == 1 and "$.run.params.rows" in err, err
    code, _, err = await run("schedules", "create", "daily", "--cron", "@daily",
                             "--definition", "nope", *url)  # fmt: skip
    assert code == 1 and "$.run.definition" in err, err
    code, _, err = await run("schedules", "create", "daily", "--cron", "@daily",
                             "--image", "busybox", "--param", "day=x", *url)  # fmt: skip
    assert code == 2 and "--param go with --definition" in err, err

    out = await ok("schedules", "create", "daily", "--cron", "@daily", "--definition", "load",
                   "--param", "day=today", "--param", "rows=3", "--label", "team=data",
                   *url)  # fmt: skip
    assert "runs definition load (latest) day=today rows=3" in out, out
    shown = json.loads(await ok("schedules", "show", "daily", "--json", *url))
    assert shown["run"]["params"] == {"day": "today", "rows": 3}  # rows typed as declared

    trig = await ok("schedules", "trigger", "daily", *url)
    job_id = trig.split("job ")[-1].strip()
    [job] = json.loads(await ok("jobs", "--schedule", "daily", "--project", "default",
                                "--json", *url))  # fmt: skip
    assert job["id"] == job_id and job["definition"] == "load", job
    assert job["spec"]["command"] == ["echo", "today", "3"]
    assert job["labels"]["team"] == "data"
    assert [j["id"] for j in json.loads(await ok("jobs", "--definition", "load", "--json",
                                                 *url))] == [job_id]  # fmt: skip
    assert json.loads(await ok("jobs", "--schedule", "other", "--json", *url)) == []

    # Every second, then the definition disabled: occurrences are skipped, saying why (a
    # schedule is not created on a disabled definition: it is refused up front).
    await ok("schedules", "create", "often", "--cron", "* * * * * *", "--definition", "load",
             "--param", "day=d", *url)  # fmt: skip
    await ok("definitions", "disable", "load", "--reason", "migrating", *url)
    code, _, err = await run("schedules", "create", "later", "--cron", "@daily",
                             "--definition", "load", "--param", "day=d", *url)  # fmt: skip
    assert code == 1 and "disabled: migrating" in err, err
    skipped: list[dict[str, str]] = []
    for _ in range(100):
        occ = json.loads(await ok("schedules", "occurrences", "often", "--json", *url))
        skipped = [o for o in occ["occurrences"] if o.get("reason") == "definition_disabled"]
        if skipped:
            break
        await asyncio.sleep(0.2)
    assert skipped and "migrating" in skipped[0]["detail"], occ
    table = await ok("schedules", "occurrences", "often", *url)
    assert "definition_disabled: definition load is disabled: migrating" in table, table


async def test_a_schedule_of_a_workflow_from_the_cli(server: Server, tmp_path: Path) -> None:
    url = ("--url", server.url)
    flow = {"steps": [
        {"name": "extract", "spec": {"image": "busybox:1", "command": ["echo", "e"]}},
        {"name": "load", "spec": {"image": "busybox:1", "command": ["echo", "l"]},
         "needs": ["extract"]},
    ]}  # fmt: skip
    path = tmp_path / "etl.json"
    path.write_text(json.dumps(flow))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": [flow["steps"][0], {**flow["steps"][1], "needs": ["x"]}]}))
    code, _, err = await run("schedules", "create", "etl", "--cron", "@daily", "--workflow",
                             str(bad), *url)  # fmt: skip
    assert code == 1 and "$.run.workflow.steps[1].needs[0]" in err, err
    code, _, err = await run("schedules", "create", "etl", "--cron", "@daily", "--workflow",
                             str(path), "--env", "A=1", *url)  # fmt: skip
    assert code == 2 and "--env do not go with --workflow" in err, err

    out = await ok("schedules", "create", "etl", "--cron", "@daily", "--workflow", str(path),
                   *url)  # fmt: skip
    assert "runs a workflow of 2 steps: extract, load" in out, out
    trig = await ok("schedules", "trigger", "etl", *url)
    assert "workflow run " in trig, trig
    run_id = trig.split("workflow run ")[-1].strip()
    shown: dict[str, object] = {}
    for _ in range(150):
        shown = json.loads(await ok("workflows", "show", run_id, "--json", *url))
        if shown["state"] == "succeeded":
            break
        await asyncio.sleep(0.2)
    assert shown["state"] == "succeeded" and shown["schedule"] == "etl", shown
    table = await ok("schedules", "occurrences", "etl", *url)
    assert f"run {run_id}" in table, table
