"""Jobs that use secrets, run by real schedulers: the value reaches the container's
environment at its start and never the output (masked before it is stored or streamed),
the events record the version resolved, a deleted secret fails the start, and a worker
without the key (or with another one) never runs such a job."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from typing import Any

import asyncpg
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from jobledger.domain.events import FailureReason
from jobledger.domain.jobs import JobState
from jobledger.runtime.docker import DockerExecutor
from jobledger.runtime.scheduler import Scheduler, WorkerConfig
from jobledger.service import JobService
from jobledger.store.secretbox import SecretBox
from tests.conftest import SECRETS_BOX
from tests.docker_rig import containers
from tests.runtime.conftest import StartScheduler
from tests.watching import JobWatcher

Client = TestClient[web.Request, web.Application]
DONE = {"succeeded", "failed", "cancelled"}
LOG_TEXT = "SELECT string_agg(lines::text, ' ') FROM job_logs"
VALUE = "pg-pass-7f3a9c"
#: Every form of the value that must never be stored.
LEAKS = [
    VALUE,
    base64.b64encode(VALUE.encode()).decode().rstrip("="),
    base64.b64encode(VALUE.encode() + b"\n").decode()[:16],
]
# Mid-line; in two writes of one line; base64 without and with echo's newline; a check
# that the value really is in the environment (not naming it: the command is in the log).
ECHO = (
    'echo "pw=$DB_PASSWORD;end"; '
    'printf "two:%s" "${DB_PASSWORD%???????}"; printf "%s|\\n" "${DB_PASSWORD#???????}"; '
    'printf %s "$DB_PASSWORD" | base64; echo "$DB_PASSWORD" | base64; '
    'test "${DB_PASSWORD%-*}:${#DB_PASSWORD}" = pg-pass:14 && echo injected-ok'
)


async def set_secret(client: Client, name: str, value: str, project: str = "default") -> None:
    resp = await client.put(f"/api/v1/projects/{project}/secrets/{name}", json={"value": value})
    assert resp.status in (200, 201), await resp.text()


async def submit(client: Client, command: str, env: dict[str, Any], **kw: Any) -> str:
    body = {"image": "jobledger-test:latest", "command": ["sh", "-c", command], "env": env, **kw}
    resp = await client.post("/api/v1/jobs", json=body)
    assert resp.status == 201, await resp.text()
    job_id: str = (await resp.json())["id"]
    return job_id


async def test_a_secret_is_injected_and_masked_in_the_stream_the_text_and_the_table(
    client: Client,
    pool: asyncpg.Pool,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    test_image: str,
) -> None:
    await set_secret(client, "db-password", "an-older-value")
    await set_secret(client, "db-password", VALUE)
    await start_scheduler(DockerExecutor(), secrets_box=SECRETS_BOX)
    job_id = await submit(client, ECHO, {"DB_PASSWORD": {"secret": "db-password"}})
    async with client.ws_connect(f"/api/v1/jobs/{job_id}/logs/ws") as ws:
        streamed: list[str] = []
        async for msg in ws:
            assert msg.type is WSMsgType.TEXT
            streamed.append(msg.data)
            if json.loads(msg.data).get("type") == "end":
                break
    view = await watcher.until(job_id, DONE)  # type: ignore[arg-type]
    assert view.state is JobState.SUCCEEDED, view.message

    text = await (await client.get(f"/api/v1/jobs/{job_id}/logs.txt")).text()
    stored = " ".join(r["lines"] for r in await pool.fetch("SELECT lines::text FROM job_logs"))
    for seen in (text, "\n".join(streamed), stored):
        assert "injected-ok" in seen  # the container had the value...
        assert "pw=***;end" in seen and "two:***|" in seen  # ...its output never has it
        for leak in LEAKS:
            assert leak not in seen

    # The job shows the version its start resolved (the latest, 2), never the value.
    job = await (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["secrets"] == {"DB_PASSWORD": {"secret": "db-password", "version": 2}}
    started = await pool.fetchval(
        "SELECT data::text FROM events WHERE stream_id = $1 AND type = 'JobStarted'", view.id
    )
    assert json.loads(started)["secrets"] == job["secrets"]
    everything = await pool.fetchval("SELECT string_agg(data::text || meta::text, ' ') FROM events")
    assert VALUE not in everything


async def test_a_pinned_version_is_the_one_injected(
    client: Client, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await set_secret(client, "token", "first-value")
    await set_secret(client, "token", "second-value")
    await start_scheduler(secrets_box=SECRETS_BOX)  # the process executor
    job_id = await submit(
        client, 'test "$T" = first-value', {"T": {"secret": "token", "version": 1}, "P": "x"}
    )
    view = await watcher.until(job_id, DONE)  # type: ignore[arg-type]
    assert view.state is JobState.SUCCEEDED, view.message
    assert view.secrets["T"].version == 1


async def test_a_secret_deleted_before_the_start_fails_it_with_a_clear_reason(
    client: Client, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await set_secret(client, "db-password", VALUE)
    job_id = await submit(client, "true", {"DB_PASSWORD": {"secret": "db-password"}})
    resp = await client.delete("/api/v1/projects/default/secrets/db-password")
    assert resp.status == 204
    await start_scheduler(secrets_box=SECRETS_BOX)
    view = await watcher.until(job_id, DONE)  # type: ignore[arg-type]
    assert (view.state, view.failure_reason) == (JobState.FAILED, FailureReason.START_ERROR)
    assert "'db-password'" in (view.message or "") and "$DB_PASSWORD" in (view.message or "")
    assert "deleted" in (view.message or "")


async def test_a_worker_without_the_key_leaves_the_job_and_says_why(
    client: Client, start_scheduler: StartScheduler, watcher: JobWatcher, pool: asyncpg.Pool
) -> None:
    await set_secret(client, "db-password", VALUE)
    keyless = await start_scheduler()
    secret_job = await submit(client, 'test "${#S}" = 14', {"S": {"secret": "db-password"}})
    plain = await submit(client, "true", {})
    # The keyless worker took the plain job, submitted later, and left the other one.
    assert (await watcher.until(plain, DONE)).state is JobState.SUCCEEDED  # type: ignore[arg-type]
    job = await (await client.get(f"/api/v1/jobs/{secret_job}")).json()
    assert job["state"] == "queued"
    assert job["waiting_reason"].startswith("waiting for a worker that holds the secrets key")
    key_ids = await pool.fetch("SELECT id, secrets_key_id FROM workers")
    assert [tuple(r) for r in key_ids] == [(keyless.config.worker_id, None)]

    keyed = await start_scheduler(secrets_box=SECRETS_BOX)
    view = await watcher.until(secret_job, DONE)  # type: ignore[arg-type]
    assert view.state is JobState.SUCCEEDED and view.worker_id == keyed.config.worker_id


async def test_a_worker_with_another_key_fails_the_start_naming_both_keys(
    client: Client, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await set_secret(client, "db-password", VALUE)
    other = SecretBox(bytes(32))
    await start_scheduler(secrets_box=other)
    job_id = await submit(client, "true", {"DB_PASSWORD": {"secret": "db-password"}})
    view = await watcher.until(job_id, DONE)  # type: ignore[arg-type]
    assert (view.state, view.failure_reason) == (JobState.FAILED, FailureReason.START_ERROR)
    message = view.message or ""
    assert SECRETS_BOX.key_id in message and other.key_id in message and "$DB_PASSWORD" in message


async def test_a_restarted_worker_masks_the_output_of_the_container_it_adopts(
    client: Client,
    service: JobService,
    dsn: str,
    pool: asyncpg.Pool,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    test_image: str,
) -> None:
    await set_secret(client, "db-password", VALUE)
    config = WorkerConfig(worker_id="w-adopter", poll_interval=5.0, heartbeat_interval=0.5)
    first = Scheduler(service, DockerExecutor(), config, dsn, SECRETS_BOX)
    stop = asyncio.Event()
    running = asyncio.create_task(first.run(stop))
    job_id = await submit(
        client,
        'echo "before $S"; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo "after $S"',
        {"S": {"secret": "db-password"}},
    )
    await watcher.until(job_id, {"running"})  # type: ignore[arg-type]
    async with asyncio.timeout(30):
        while "before" not in (await pool.fetchval(LOG_TEXT) or ""):
            await asyncio.sleep(0.05)
    stop.set()  # the worker goes away; its container runs on
    await running
    await first.executor.close()
    # Printed while nobody follows the container: the next life reads it from Docker's log.
    [container] = containers(f"jobledger.job_id={job_id}")
    subprocess.run(["docker", "exec", str(container["ID"]), "touch", "/tmp/go"], check=True)

    await start_scheduler(DockerExecutor(), secrets_box=SECRETS_BOX, worker_id="w-adopter")
    view = await watcher.until(job_id, DONE)  # type: ignore[arg-type]
    assert view.state is JobState.SUCCEEDED, view.message
    stored = await pool.fetchval(LOG_TEXT)
    assert "before ***" in stored and "after ***" in stored and VALUE not in stored
