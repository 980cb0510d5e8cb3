"""`jobledger workflows` as a user runs it against `jobledger serve` with the Docker
executor: the server's own workflow runtime moves the run; `show` draws the steps as a tree."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import AUTH, Server, ok, serving
from tests.e2e.conftest import run_cli as run


@pytest.fixture
async def server(dsn: str, test_image: str) -> AsyncIterator[Server]:
    async with serving(
        "--database-url", dsn, "--executor", "docker", "--worker-id", "wf-cli",
        "--poll-interval", "1",
    ) as srv:  # fmt: skip
        yield srv


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH)) as resp:
        body: dict[str, Any] = json.load(resp)
        return body


async def test_submit_show_and_rerun_a_workflow(
    server: Server, tmp_path: Path, test_image: str, dsn: str
) -> None:
    url = ("--url", server.url)
    spec = {"steps": [
        {"name": "extract", "spec": {"image": test_image, "command": ["echo", "hi"]}},
        {"name": "load", "needs": ["extract"],
         "spec": {"image": test_image, "command": ["sh", "-c", "exit 4"]}},
    ]}  # fmt: skip
    path = tmp_path / "etl.json"
    path.write_text(json.dumps(spec))
    run_id = json.loads(await ok("workflows", "submit", str(path), "--json", *url))["id"]
    async with asyncio.timeout(60):
        while True:
            shown = json.loads(await ok("workflows", "show", run_id, "--json", *url))
            if shown["state"] == "failed":
                break
            await asyncio.sleep(0.3)
    tree = await ok("workflows", "show", run_id, *url)
    assert f"workflow run {run_id} (default): failed" in tree
    assert f"└ extract [{run_id[:8]}.1] succeeded job " in tree
    assert f"  └ load [{run_id[:8]}.2] failed job " in tree, tree
    out = await ok("workflows", "rerun", run_id, "--from-failure", *url)
    assert "extract" in out and "reused" in out, out
    listed = await ok("workflows", "list", *url)
    assert run_id in listed
    code, _, err = await run("workflows", "cancel", run_id, *url)
    assert code == 1 and "already failed" in err, err
    # Time travel: the run as it stood after its first three events.
    events = (await asyncio.to_thread(_get, f"{server.url}/api/v1/workflows/{run_id}/events"))[
        "events"
    ]
    assert [e["type"] for e in events[:3]] == ["WorkflowSubmitted", "StepReady", "StepStarted"]
    at = json.loads(await ok("replay", "--database-url", dsn, "show", "workflow", run_id,
                             "--at", str(events[2]["position"])))  # fmt: skip
    assert at["state"]["state"] == "running", at
    assert at["state"]["steps"]["extract"]["state"] == "running", at
