"""`jobledger replay` verbs as an operator runs them against a server's database."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.e2e.conftest import Server, child_env, jobledger
from tests.e2e.test_serve import call


def sql(dsn: str, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def test_verify_export_import_and_time_travel(dsn: str, other_dsn: str, tmp_path: Path) -> None:
    server = Server("--database-url", dsn, "--no-scheduler")
    ids = []
    for n in range(3):
        status, job = call(
            "POST", f"{server.url}/api/v1/jobs", {"image": "busybox", "labels": {"n": str(n)}}
        )
        assert status == 201
        ids.append(job["id"])
    assert call("POST", f"{server.url}/api/v1/jobs/{ids[0]}/cancel", {})[0] == 200
    server.stop()

    clean = jobledger("replay", "--database-url", dsn, "verify")
    assert clean.returncode == 0, clean.stderr
    assert "verified 5 events in 3 streams" in clean.stdout and "0 problem(s)" in clean.stdout

    # Time travel: before the cancel the job was queued; at its last event, cancelled.
    history = jobledger("replay", "--database-url", dsn, "job", ids[0], "--at", "1")
    assert history.returncode == 0, history.stderr
    shown = json.loads(history.stdout)
    assert (shown["stream_type"], shown["stream_id"]) == ("job", ids[0])
    assert shown["state"]["state"] == "queued"
    same = jobledger("replay", "--database-url", dsn, "show", "job", ids[0], "--at", "1")
    assert json.loads(same.stdout) == shown
    unknown = jobledger("replay", "--database-url", dsn, "show", "nope", ids[0])
    assert unknown.returncode == 2 and "invalid choice: 'nope'" in unknown.stderr
    now = json.loads(jobledger("replay", "--database-url", dsn, "job", ids[0]).stdout)
    assert now["state"]["state"] == "cancelled"
    assert (
        jobledger("replay", "--database-url", dsn, "job", ids[0], "--at", "yesterday").returncode
        == 2
    )

    export = tmp_path / "log.ndjson"
    done = jobledger("replay", "--database-url", dsn, "export", "-o", str(export))
    assert done.returncode == 0, done.stderr
    assert "exported 5 events" in done.stderr
    assert len(export.read_bytes().splitlines()) == 5

    imported = jobledger("replay", "--database-url", other_dsn, "import", str(export))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["jobs"] == 3
    again = jobledger("replay", "--database-url", other_dsn, "import", str(export))
    assert again.returncode == 1
    assert "already has events" in again.stderr

    # Damage the projection: verify names the job and fails; rebuild repairs it.
    sql(dsn, f"UPDATE jobs SET state = 'running' WHERE id = '{ids[1]}'")
    broken = jobledger("replay", "--database-url", dsn, "verify", "--json")
    assert broken.returncode == 1
    problems = [json.loads(line) for line in broken.stdout.splitlines()]
    assert problems[0] == {
        "kind": "projection_differs",
        "stream_type": "job",
        "stream_id": ids[1],
        "detail": "jobs row differs in: state",
    }
    assert problems[-1]["problems"] == 1
    rebuilt = jobledger("replay", "--database-url", dsn, "rebuild")
    assert json.loads(rebuilt.stdout)["rows_changed"] == 1
    assert jobledger("replay", "--database-url", dsn, "verify").returncode == 0


def test_tail_prints_new_events_until_interrupted(dsn: str) -> None:
    server = Server("--database-url", dsn, "--no-scheduler")
    call("POST", f"{server.url}/api/v1/jobs", {"image": "busybox"})  # before the tail: not shown
    tail = subprocess.Popen(
        [sys.executable, "-m", "jobledger", "replay", "--database-url", dsn, "tail"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    try:
        assert tail.stdout is not None and tail.stderr is not None
        assert b"following the event log" in tail.stderr.readline()
        _, job = call("POST", f"{server.url}/api/v1/jobs", {"image": "busybox"})
        first = json.loads(tail.stdout.readline())
        assert first["stream_id"] == job["id"]
        assert (first["version"], first["type"]) == (1, "JobSubmitted")
        assert first["meta"]["actor"] == "admin"
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(30) == 0
        server.stop()


def test_show_answers_what_a_projects_limit_was_at_a_time(dsn: str) -> None:
    server = Server("--database-url", dsn, "--no-scheduler")
    try:
        assert call("POST", f"{server.url}/api/v1/projects",
                    {"name": "etl", "max_running_jobs": 2})[0] == 201  # fmt: skip
        limits = f"{server.url}/api/v1/projects/etl/limits"
        assert call("PUT", limits, {"max_running_jobs": 5})[0] == 200
        between = jobledger("replay", "--database-url", dsn, "show", "project", "etl/etl")
        assert call("PUT", limits, {"max_running_jobs": 9})[0] == 200
    finally:
        server.stop()
    assert between.returncode == 0, between.stderr
    then = json.loads(between.stdout)
    assert (then["stream_type"], then["state"]["max_running_jobs"]) == ("project", 5)

    at = jobledger(
        "replay", "--database-url", dsn, "show", "project", "etl/etl", "--at", then["as_of_time"]
    )
    assert at.returncode == 0, at.stderr
    assert json.loads(at.stdout)["state"]["max_running_jobs"] == 5
    now = json.loads(
        jobledger("replay", "--database-url", dsn, "show", "project", "etl/etl").stdout
    )
    assert now["state"]["max_running_jobs"] == 9
    verified = jobledger("replay", "--database-url", dsn, "verify")
    assert verified.returncode == 0 and "0 problem(s)" in verified.stdout, verified.stdout
