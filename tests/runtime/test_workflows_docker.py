"""Workflow runs end to end: the API submits them, a scheduler runs their steps' child jobs
in real containers and a `WorkflowRuntime` moves them, as `serve` does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from jobledger.replay.verify import Verifier
from jobledger.runtime.docker import DockerExecutor
from jobledger.runtime.workflows import WorkflowRuntime
from jobledger.service import JobService
from jobledger.workflowservice import WorkflowService
from tests.docker_rig import left_behind
from tests.runtime.conftest import StartScheduler

ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture
async def running(
    service: JobService, dsn: str, start_scheduler: StartScheduler
) -> AsyncIterator[WorkflowRuntime]:
    """A Docker scheduler and a workflow runtime, as one `serve` process has."""
    await start_scheduler(DockerExecutor(), capacity=4, poll_interval=1.0)
    runtime = WorkflowRuntime(WorkflowService(service), dsn, "test-runtime", poll_interval=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    yield runtime
    stop.set()
    await task


#: A step's script that writes its inputs, wrapped under its own name, as its output.
WRAP = 'printf \'{"%s": %%s}\' "$(cat "$JOBLEDGER_INPUTS")" > "$JOBLEDGER_OUTPUT"'


def step(name: str, image: str, script: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "spec": {"image": image, "command": ["sh", "-c", script],
                                   "stop_grace_seconds": 1}, **kw}  # fmt: skip


async def submit(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/v1/workflows", json=body)
    assert resp.status == 201, await resp.text()
    run: dict[str, Any] = await resp.json()
    return run


async def until(client: Any, run_id: str, check: Any, seconds: float = 60) -> dict[str, Any]:
    """The run once `check(run)` holds (polled)."""
    async with asyncio.timeout(seconds):
        while True:
            run: dict[str, Any] = await (await client.get(f"/api/v1/workflows/{run_id}")).json()
            if check(run):
                return run
            await asyncio.sleep(0.2)


async def ended(client: Any, run_id: str) -> dict[str, Any]:
    return await until(client, run_id, lambda r: r["state"] in ENDED)


def steps(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["steps"]}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def child_jobs(client: Any, run_id: str) -> dict[str, dict[str, Any]]:
    page = await (await client.get("/api/v1/jobs", params={"workflow_run": run_id})).json()
    return {j["step"]: j for j in page["jobs"]}


async def test_a_diamond_runs_in_order_and_succeeds(
    client: Any, running: WorkflowRuntime, test_image: str, pool: asyncpg.Pool
) -> None:
    # Each step writes an output; b and c read a's from their inputs file, d reads both.
    # (busybox has no JSON tool: the steps copy what they read into their own output.)
    run = await submit(client, {"steps": [
        step("a", test_image, 'echo \'{"rows": 3}\' > "$JOBLEDGER_OUTPUT"'),
        step("b", test_image, WRAP % "b", needs=["a"]),
        step("c", test_image, WRAP % "c", needs=["a"]),
        step("d", test_image, 'cp "$JOBLEDGER_INPUTS" "$JOBLEDGER_OUTPUT"', needs=["b", "c"]),
    ]})  # fmt: skip
    first = steps(run)
    assert first["a"]["state"] == "ready" and first["b"]["waiting_reason"] == "waiting for a"
    assert first["d"]["waiting_reason"] == "waiting for b, c"
    assert [s["label"] for s in run["steps"]] == [f"{run['id'][:8]}.{n}" for n in (1, 2, 3, 4)]
    other = await submit(client, {"steps": [step("a", test_image, "true")]})
    assert other["steps"][0]["label"][:8] != run["id"][:8]  # runs of one minute differ

    done = await ended(client, run["id"])
    assert done["state"] == "succeeded", done
    s = steps(done)
    assert all(x["state"] == "succeeded" for x in s.values())
    # Outputs passed on: a's to b and c, theirs to d, each kept with its SHA-256.
    a_out = {"rows": 3}
    assert s["a"]["output"] == a_out
    assert s["b"]["output"] == {"b": {"a": a_out}} and s["c"]["output"] == {"c": {"a": a_out}}
    assert s["d"]["output"] == {"b": s["b"]["output"], "c": s["c"]["output"]}
    assert all(len(x["output_sha256"]) == 64 for x in s.values())
    for later, need in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
        assert at(s[later]["started_at"]) >= at(s[need]["finished_at"]), (later, need)
    jobs = await child_jobs(client, run["id"])
    assert set(jobs) == {"a", "b", "c", "d"}
    for name, job in jobs.items():
        assert job["id"] == s[name]["job_id"] and job["workflow_run"] == run["id"]
        assert job["labels"] == {"jobledger.workflow": run["id"], "jobledger.step": name}
        assert job["state"] == "succeeded"
    # Every run's row is its fold: replay verify finds nothing.
    verifier = Verifier(pool, batch=40)
    assert [p async for p in verifier.problems()] == []
    await pool.execute("UPDATE workflow_runs SET state = 'failed' WHERE stream_id = $1",
                       uuid.UUID(run["id"]))  # fmt: skip
    problems = [p async for p in Verifier(pool, batch=40).problems()]
    assert [str(p.stream_id) for p in problems] == [run["id"]], problems


@pytest.mark.parametrize("policy", ["stop", "continue"])
async def test_a_failing_step_with_either_policy_and_an_always_clean_up(
    client: Any, running: WorkflowRuntime, test_image: str, policy: str
) -> None:
    run = await submit(client, {"failure_policy": policy, "steps": [
        step("bad", test_image, "exit 3"),
        step("after_bad", test_image, "true", needs=["bad"]),
        step("slow", test_image, "sleep 2"),
        step("after_slow", test_image, "true", needs=["slow"]),
        step("cleanup", test_image, "true", needs=["after_bad", "after_slow"],
             condition="always"),
    ]})  # fmt: skip
    done = await ended(client, run["id"])
    s = steps(done)
    assert done["state"] == "failed"
    assert s["bad"]["state"] == "failed" and "exit_code" in s["bad"]["reason"]
    assert s["after_bad"]["state"] == "skipped"
    assert s["slow"]["state"] == "succeeded"  # it was running: a stop lets it finish
    if policy == "stop":
        assert s["after_slow"]["state"] == "skipped" and s["after_slow"]["skip_reason"] == "stopped"
    else:
        assert s["after_slow"]["state"] == "succeeded"
    assert s["cleanup"]["state"] == "succeeded"
    assert set(await child_jobs(client, run["id"])) == {
        n for n, x in s.items() if x["state"] != "skipped"
    }


async def test_cancel_while_two_steps_run(
    client: Any, running: WorkflowRuntime, test_image: str
) -> None:
    run = await submit(client, {"steps": [
        step("x", test_image, "sleep 30"),
        step("y", test_image, "sleep 30"),
        step("z", test_image, "true", needs=["x", "y"]),
        step("tidy", test_image, "true", needs=["z"], condition="always"),
    ]})  # fmt: skip

    async def both_running() -> None:
        async with asyncio.timeout(60):
            while True:
                jobs = await child_jobs(client, run["id"])
                if {j["state"] for n, j in jobs.items() if n in ("x", "y")} == {"running"} and \
                        len(jobs) == 2:  # fmt: skip
                    return
                await asyncio.sleep(0.2)

    await both_running()
    resp = await client.post(f"/api/v1/workflows/{run['id']}/cancel", json={"reason": "enough"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "cancelling"
    done = await ended(client, run["id"])
    s = steps(done)
    assert done["state"] == "cancelled"
    assert s["x"]["state"] == s["y"]["state"] == "cancelled"
    assert s["z"]["state"] == s["tidy"]["state"] == "skipped"  # nothing starts after a cancel
    jobs = await child_jobs(client, run["id"])
    assert set(jobs) == {"x", "y"} and {j["state"] for j in jobs.values()} == {"cancelled"}
    for job in jobs.values():
        assert await left_behind(f"jobledger.job_id={job['id']}") == []


async def test_rerun_from_failure_reuses_the_succeeded_steps(
    client: Any, running: WorkflowRuntime, test_image: str
) -> None:
    run = await submit(client, {"steps": [
        step("a", test_image, "true"),
        step("b", test_image, "exit 1", needs=["a"]),
        step("c", test_image, "true", needs=["b"]),
    ]})  # fmt: skip
    first = await ended(client, run["id"])
    assert first["state"] == "failed"

    resp = await client.post(f"/api/v1/workflows/{run['id']}/rerun", json={"mode": "from_failure"})
    assert resp.status == 201, await resp.text()
    again = await resp.json()
    assert again["rerun_of"] == run["id"] and again["id"] != run["id"]
    a = steps(again)["a"]
    assert a["state"] == "reused" and a["from_run"] == run["id"] and "job_id" not in a
    done = await ended(client, again["id"])
    s = steps(done)
    assert s["b"]["state"] == "failed" and s["b"]["job_id"] != steps(first)["b"]["job_id"]
    assert set(await child_jobs(client, again["id"])) == {"b"}  # a was not run again

    whole = await client.post(f"/api/v1/workflows/{run['id']}/rerun", json={"mode": "whole"})
    assert whole.status == 201 and steps(await whole.json())["a"]["state"] == "ready"


async def test_a_cycle_is_refused_naming_the_step(client: Any) -> None:
    resp = await client.post("/api/v1/workflows", json={"steps": [
        {"name": "a", "spec": {"image": "b"}, "needs": ["c"]},
        {"name": "b", "spec": {"image": "b"}, "needs": ["a"]},
        {"name": "c", "spec": {"image": "b"}, "needs": ["b"]},
    ]})  # fmt: skip
    assert resp.status == 422
    details = (await resp.json())["error"]["details"]
    assert details["field"] == "$.steps[0].needs[0]" and details["step"] == "a"
    assert details["cycle"] == ["a", "c", "b", "a"]
    listed = await (await client.get("/api/v1/workflows")).json()
    assert listed["runs"] == []


async def test_reactions_are_idempotent(service: JobService, client: Any, test_image: str) -> None:
    """Two runtimes reacting to the same run at once record each decision once, and a
    reaction repeated later records nothing (no scheduler: the jobs stay queued)."""
    run = await submit(client, {"steps": [step("a", test_image, "true"),
                                          step("b", test_image, "true")]})  # fmt: skip
    one, two = WorkflowService(service), WorkflowService(service)
    run_id = uuid.UUID(run["id"])
    await asyncio.gather(one.react(run_id, "p1"), two.react(run_id, "p2"))
    state = await one.load(run_id)
    assert {s.state.value for s in state.steps.values()} == {"running"}
    version = state.version
    assert await one.react(run_id, "p1") == 0
    assert (await one.load(run_id)).version == version == 5  # submitted, 2 ready, 2 started
    assert set(await child_jobs(client, run["id"])) == {"a", "b"}


async def test_a_definition_step_is_resolved_when_it_becomes_ready(
    client: Any, running: WorkflowRuntime, test_image: str
) -> None:
    definition = {"image": test_image, "command": ["sh", "-c", "exit {{params.code}}"],
                  "params": [{"name": "code", "type": "integer"}]}  # fmt: skip
    resp = await client.put("/api/v1/projects/default/definitions/probe", json=definition)
    assert resp.status == 201, await resp.text()
    run = await submit(client, {"labels": {"team": "data"}, "steps": [
        {"name": "ok", "definition": {"definition": "probe", "params": {"code": 0},
                                      "labels": {"team": "mine"}}},
        {"name": "bad", "definition": {"definition": "probe", "params": {"code": 5}},
         "needs": ["ok"]},
    ]})  # fmt: skip
    done = await ended(client, run["id"])
    s = steps(done)
    assert done["state"] == "failed" and s["ok"]["state"] == "succeeded", done
    assert s["bad"]["state"] == "failed"
    jobs = await child_jobs(client, run["id"])
    assert jobs["ok"]["definition"] == "probe" and jobs["bad"]["exit_code"] == 5
    assert jobs["ok"]["labels"]["team"] == "mine" and jobs["bad"]["labels"]["team"] == "data"
