"""`jobledger serve`, `migrate` and `replay rebuild` as a user runs them."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from jobledger.store.embedded import EmbeddedPostgres
from tests.e2e.conftest import AUTH, Server, jobledger


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **AUTH}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_embedded_database_survives_restart_and_stops_with_the_server(data_dir: Path) -> None:
    server = Server("--data-dir", str(data_dir), "--no-scheduler")
    status, job = call(
        "POST", f"{server.url}/api/v1/jobs", {"image": "busybox", "command": ["echo", "hi"]}
    )
    assert status == 201 and job["state"] == "queued"
    assert server.stop(signal.SIGTERM) == 0
    cluster = EmbeddedPostgres(data_dir / "pg")
    assert cluster.initialized and not cluster.running  # stopped cleanly with the server

    server = Server("--data-dir", str(data_dir), "--no-scheduler")  # reuses the initialised cluster
    status, page = call("GET", f"{server.url}/api/v1/jobs")
    assert status == 200 and [j["id"] for j in page["jobs"]] == [job["id"]]
    status, detail = call("GET", f"{server.url}/api/v1/jobs/{job['id']}")
    assert detail == job
    assert server.stop(signal.SIGINT) == 0
    assert not cluster.running
    log = server.output()
    assert '"event": "jobledger serving"' in log and "initialising" not in log


def test_two_servers_on_one_data_directory_keep_the_cluster_up_for_each_other(
    data_dir: Path,
) -> None:
    """The first to exit used to stop PostgreSQL under the second, which then answered 500
    forever; the cluster now stops with the last process that uses it, and a `replay` verb
    beside a server never stops it."""
    cluster = EmbeddedPostgres(data_dir / "pg")
    first = Server("--data-dir", str(data_dir), "--no-scheduler")
    second = Server("--data-dir", str(data_dir), "--no-scheduler")
    status, job = call("POST", f"{first.url}/api/v1/jobs", {"image": "busybox"})
    assert status == 201
    assert first.stop(signal.SIGTERM) == 0
    assert cluster.running
    status, detail = call("GET", f"{second.url}/api/v1/jobs/{job['id']}")
    assert status == 200 and detail["id"] == job["id"]

    verified = jobledger("replay", "--data-dir", str(data_dir), "verify")
    assert verified.returncode == 0, verified.stderr
    assert cluster.running
    status, _ = call("POST", f"{second.url}/api/v1/jobs", {"image": "busybox"})
    assert status == 201
    assert second.stop(signal.SIGTERM) == 0
    assert not cluster.running  # the last one out stopped it

    # Alone, a replay verb starts the cluster for itself and stops it again.
    verified = jobledger("replay", "--data-dir", str(data_dir), "verify")
    assert verified.returncode == 0, verified.stderr
    assert not cluster.running


def test_migrate_is_idempotent_and_rebuild_reports_counts(dsn: str) -> None:
    for _ in range(2):
        done = jobledger("migrate", "--database-url", dsn)
        assert done.returncode == 0, done.stderr
        assert "schema is up to date" in done.stdout
    server = Server("--database-url", dsn, "--no-scheduler")
    for n in range(3):
        call("POST", f"{server.url}/api/v1/jobs", {"image": "busybox", "labels": {"n": str(n)}})
    before = call("GET", f"{server.url}/api/v1/jobs")[1]
    rebuilt = jobledger("replay", "--database-url", dsn, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    assert report["jobs"] == 3 and report["events"] == 3 and report["projection"] == "jobs"
    assert report["rows_changed"] == 0 and not report["resumed"]
    assert "rebuild [" in rebuilt.stderr and "3/3 events" in rebuilt.stderr
    assert call("GET", f"{server.url}/api/v1/jobs")[1] == before
    assert server.stop() == 0


def test_unreachable_database_is_a_clear_error() -> None:
    done = jobledger("serve", "--database-url", "postgresql://nobody@/x?host=/nonexistent&port=1")
    assert done.returncode == 3
    assert "database error: cannot connect to postgresql://nobody@" in done.stderr


def test_port_in_use_is_a_clear_error(dsn: str) -> None:
    server = Server("--database-url", dsn)
    try:
        done = jobledger("serve", "--database-url", dsn, "--port", str(server.port))
        assert done.returncode == 1
        assert "address already in use" in done.stderr.lower()
    finally:
        server.stop()


@pytest.mark.parametrize("argv", [["frobnicate"], ["replay"], ["serve", "--port", "x"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    done = jobledger(*argv)
    assert done.returncode == 2 and "usage:" in done.stderr


def test_serve_runs_a_job_in_a_container_and_cancels_another(dsn: str, test_image: str) -> None:
    server = Server("--database-url", dsn, "--executor", "docker", "--worker-id", "e2e-serve")
    try:
        _, job = call(
            "POST",
            f"{server.url}/api/v1/jobs",
            {"image": test_image, "command": ["sh", "-c", "exit 3"]},
        )
        _, long = call(
            "POST",
            f"{server.url}/api/v1/jobs",
            {"image": test_image, "command": ["sleep", "60"], "stop_grace_seconds": 1},
        )
        done = wait_state(server, job["id"], {"failed"})
        assert done["exit_code"] == 3 and done["worker_id"] == "e2e-serve"
        wait_state(server, long["id"], {"running"})
        status, cancelling = call("POST", f"{server.url}/api/v1/jobs/{long['id']}/cancel")
        assert status == 200 and cancelling["state"] in ("cancelling", "cancelled")
        assert wait_state(server, long["id"], {"cancelled"})["cancel_requested_by"] == "admin"
        status, again = call("POST", f"{server.url}/api/v1/jobs/{long['id']}/cancel")
        assert status == 409 and "already cancelled" in again["error"]["message"]
    finally:
        assert server.stop() == 0


def wait_state(server: Server, job_id: str, states: set[str], timeout: float = 60) -> Any:
    """Poll the API as a user's script would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, view = call("GET", f"{server.url}/api/v1/jobs/{job_id}")
        if view["state"] in states:
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not in {states}: {view}")
