"""Secrets the way a user handles them: `jobledger secrets set` from stdin, a job that uses
one and prints it, and the value nowhere else: not in the export, not in a data dump of the
database, not in the server's own log. Key rotation, and the embedded default key file."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from jobledger.store.embedded import EmbeddedPostgres
from jobledger.store.secretbox import SecretBox, encode_key, read_key_file
from tests.e2e.conftest import AUTH, Server, jobledger

VALUE = "s3cr3t-e2e-4d9b"


def submit_and_wait(url: str, *args: str) -> dict[str, object]:
    done = jobledger("submit", "--url", url, "--json", "--wait", *args)
    assert done.stdout, done.stderr
    job: dict[str, object] = json.loads(done.stdout)
    return job


def pg_dump_data(pg: EmbeddedPostgres, dsn: str) -> str:
    pg_dump = (pg.bin_dir / "initdb").resolve().with_name("pg_dump")
    done = subprocess.run(
        [str(pg_dump), "--data-only", "--dbname", dsn], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_a_secret_set_from_stdin_is_used_masked_and_found_nowhere_else(
    dsn: str, pg_cluster: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "secrets.key"
    key_file.write_text(encode_key(SecretBox.generate()))
    monkeypatch.setenv("JOBLEDGER_SECRETS_KEY_FILE", str(key_file))
    server = Server("--database-url", dsn, "--executor", "process")
    url = server.url

    done = jobledger("secrets", "set", "db-password", "--url", url, input=VALUE + "\n")
    assert done.returncode == 0, done.stderr
    assert "version 1" in done.stdout and VALUE not in done.stdout
    listed = jobledger("secrets", "list", "--url", url)
    assert "db-password" in listed.stdout and VALUE not in listed.stdout

    job = submit_and_wait(
        url, "--secret", "DB_PASSWORD=db-password", "busybox", "--",
        "sh", "-c", 'echo "the password is $DB_PASSWORD."; test "${#DB_PASSWORD}" = 15',
    )  # fmt: skip
    assert job["state"] == "succeeded", job
    assert job["secrets"] == {"DB_PASSWORD": {"secret": "db-password", "version": 1}}
    logs = jobledger("logs", "--url", url, str(job["id"]))
    assert "the password is ***." in logs.stdout and VALUE not in logs.stdout

    export = tmp_path / "log.ndjson"
    done = jobledger("replay", "--database-url", dsn, "export", "-o", str(export))
    assert done.returncode == 0, done.stderr
    assert b"SecretSet" in export.read_bytes() and VALUE.encode() not in export.read_bytes()
    dump = pg_dump_data(pg_cluster, dsn)
    assert "secret_values" in dump and VALUE not in dump
    server.stop()
    assert "jobledger serving" in server.output() and VALUE not in server.output()

    # Rotation: every value re-encrypted under the new key, in one go; a server given the
    # new key runs jobs with the secret as before.
    new_file = tmp_path / "new.key"
    new_file.write_text(encode_key(SecretBox.generate()))
    new = read_key_file(new_file)
    done = jobledger(
        "secrets", "rotate-key", "--new-key-file", str(new_file), "--database-url", dsn
    )
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 1 secret values" in done.stderr and "restart" in done.stderr
    monkeypatch.setenv("JOBLEDGER_SECRETS_KEY_FILE", str(new_file))
    server = Server("--database-url", dsn, "--executor", "process")
    assert f'"secrets_key": "{new.key_id}"' in server.output()
    job = submit_and_wait(
        server.url, "--secret", "P=db-password:1", "busybox", "--", "sh", "-c",
        'test "${#P}" = 15',
    )  # fmt: skip
    assert job["state"] == "succeeded", job
    done = jobledger("secrets", "delete", "db-password", "--url", server.url)
    assert done.returncode == 0, done.stderr
    request = urllib.request.Request(f"{server.url}/api/v1/projects/default/secrets", headers=AUTH)
    with urllib.request.urlopen(request) as resp:
        assert json.loads(resp.read()) == {"secrets": []}


def test_the_embedded_server_makes_its_key_file_once(data_dir: Path) -> None:
    where = data_dir / "jobledger"
    server = Server("--data-dir", str(where), "--no-scheduler")
    server.stop()
    key_file = data_dir / "jobledger-secrets.key"  # beside the data directory, not in it
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = server.output()
    assert first.count("created a secrets key file") == 1 and str(key_file) in first
    key_id = read_key_file(key_file).key_id
    assert re.search(rf'"secrets_key": "{key_id}"', first)

    server = Server("--data-dir", str(where), "--no-scheduler")
    server.stop()
    assert "created a secrets key file" not in server.output()
    assert f'"secrets_key": "{key_id}"' in server.output()
