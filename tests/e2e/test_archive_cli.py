"""`jobledger replay archive` as an operator runs it (issue 19), then verify and import."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tests.e2e.conftest import Server, jobledger
from tests.e2e.test_serve import call


def test_archive_verify_and_import(dsn: str, other_dsn: str, tmp_path: Path) -> None:
    server = Server("--database-url", dsn, "--no-scheduler")
    ids = []
    for _ in range(3):
        status, job = call("POST", f"{server.url}/api/v1/jobs", {"image": "busybox"})
        assert status == 201
        ids.append(job["id"])
    assert call("POST", f"{server.url}/api/v1/jobs/{ids[0]}/cancel", {})[0] == 200
    server.stop()
    cutoff = datetime.now(UTC).isoformat()
    to = tmp_path / "archive"
    db = ("replay", "--database-url", dsn)

    dry = jobledger(*db, "archive", "--before", cutoff, "--to", str(to), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["streams"] == 1 and not to.exists()
    run = jobledger(*db, "archive", "--before", cutoff, "--to", str(to))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["streams"], report["events"], len(report["files"])) == (1, 3, 1)

    verified = jobledger(*db, "verify", "--archive", str(to))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # 2 job streams and the archive run's stream are left in the log.
    assert "in 3 streams" in verified.stdout and "0 problem(s)" in verified.stdout

    imported = jobledger("replay", "--database-url", other_dsn, "import", str(to))
    assert imported.returncode == 0, imported.stderr
    shown = jobledger("replay", "--database-url", other_dsn, "job", ids[0])
    assert json.loads(shown.stdout)["state"]["state"] == "cancelled"

    archived = to / report["files"][0]
    data = bytearray(archived.read_bytes())
    data[data.index(b"busybox")] = ord("B")
    archived.write_bytes(bytes(data))
    altered = jobledger(*db, "verify", "--archive", str(to))
    assert altered.returncode == 1
    assert "SHA-256" in altered.stdout and archived.name in altered.stdout
