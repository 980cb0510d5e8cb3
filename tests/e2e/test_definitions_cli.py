"""Definitions and environments as a user meets them: `jobledger environments/definitions`
verbs and `submit --definition --param` against `jobledger serve --executor docker`, a job
in a real container printing its parameters, then `replay verify` and time travel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, ok, serving
from tests.e2e.conftest import run_cli as run


@pytest.fixture
async def server(dsn: str, docker_engine: None) -> AsyncIterator[Server]:
    async with serving(
        "--database-url", dsn, "--executor", "docker", "--worker-id", "defs-e2e"
    ) as srv:
        yield srv


async def test_a_definition_from_put_to_a_job_that_prints_its_params(
    server: Server, dsn: str, test_image: str, tmp_path: Path
) -> None:
    url = ("--url", server.url)
    env_file = tmp_path / "prod.json"
    env_file.write_text(json.dumps({"image": test_image, "env": {"REGION": "eu"}}))
    assert "environment prod version 1" in await ok("environments", "put", "prod", "-f",
                                                     str(env_file), *url)  # fmt: skip
    etl = {
        "environment": "prod",
        "command": ["sh", "-c", "echo day={{params.day}} rows=$JOBLEDGER_PARAM_ROWS "
                    "dry=$JOBLEDGER_PARAM_DRY region=$REGION lit={{{{x}}"],
        "params": [
            {"name": "day", "required": True},
            {"name": "rows", "type": "integer", "default": 10},
            {"name": "dry", "type": "boolean", "default": False},
        ],
    }  # fmt: skip
    path = tmp_path / "etl.json"
    path.write_text(json.dumps(etl))
    assert "definition nightly version 1" in await ok("definitions", "put", "nightly", "-f",
                                                       str(path), *url)  # fmt: skip
    before_v2 = datetime.now(UTC)
    await asyncio.sleep(0.05)
    path.write_text(json.dumps({**etl, "labels": {"team": "data"}}))
    assert "version 2" in await ok("definitions", "put", "nightly", "-f", str(path), *url)

    listed = await ok("definitions", "list", *url)
    assert "nightly" in listed and "day,rows,dry" in listed
    shown = await ok("definitions", "show", "nightly", "--version", "1", *url)
    assert "version 1 of 2" in shown and '"team"' not in shown
    diff = await ok("definitions", "diff", "nightly", "1", "2", *url)
    assert '$.labels: - -> {"team": "data"}' in diff
    assert "1" in await ok("definitions", "versions", "nightly", *url)

    # --param values take the declared types: rows=3 goes as a number, dry=true a boolean.
    out = await ok("submit", "--definition", "nightly", "--param", "day=2030-01-02",
                   "--param", "rows=3", "--param", "dry=true", "--wait", "-f", *url)  # fmt: skip
    assert "day=2030-01-02 rows=3 dry=true region=eu lit={{x}}" in out
    job = json.loads(await ok("jobs", "--json", *url))[0]
    assert (job["definition"], job["definition_version"]) == ("nightly", 2)
    assert job["source"]["params"] == {"day": "2030-01-02", "rows": 3, "dry": True}

    code, _, err = await run("submit", "--definition", "nightly", "--param", "rows=many", *url)
    assert code == 1 and "$.params.rows" in err and "type integer" in err
    code, _, err = await run("submit", "--definition", "nightly", "--cpu", "2", *url)
    assert code == 2 and "--cpu do not go with --definition" in err

    await ok("definitions", "disable", "nightly", "--reason", "moving", *url)
    code, _, err = await run("submit", "--definition", "nightly", "--param", "day=d", *url)
    assert code == 1 and "disabled: moving" in err
    await ok("definitions", "enable", "nightly", *url)
    await ok("definitions", "delete", "nightly", *url)
    code, _, err = await run("definitions", "show", "nightly", *url)
    assert code == 1 and "no definition 'nightly'" in err

    # The log holds it all: verify is clean, and time travel shows version 1 before v2.
    db = ("replay", "--database-url", dsn)
    verified = await ok(*db, "verify")
    assert "0 problem(s)" in verified
    then = json.loads(await ok(*db, "show", "definition", "default/nightly", "--at",
                               before_v2.isoformat()))  # fmt: skip
    assert [v["version"] for v in then["state"]["versions"]] == [1]
    assert "labels" not in then["state"]["versions"][0]["content"]
    now = json.loads(await ok(*db, "show", "definition", "default/nightly"))
    assert now["state"]["deleted"] is True and len(now["state"]["versions"]) == 2
