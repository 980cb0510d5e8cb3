"""A job's inputs and output end to end, run by a real scheduler in a real container: a job
submitted with inputs (through `JobService`: the public submit body takes none, jobledger
sets them, e.g. for a workflow step) reads them from the file its variable names, writes
an output that the API shows and its JobSucceeded event records with the SHA-256 of the
stored bytes; a secret written into it is masked as in the log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import JobState, Submit
from jobledger.domain.specs import JobSpec, SecretRef
from jobledger.ids import uuid7
from jobledger.runtime.docker import DockerExecutor, container_config
from jobledger.runtime.executor import RunRequest
from jobledger.service import JobService
from tests.conftest import SECRETS_BOX
from tests.runtime.conftest import StartScheduler
from tests.watching import JobWatcher

Client = TestClient[web.Request, web.Application]
DONE = {"succeeded", "failed", "cancelled"}
VALUE = "tok-9d2e71c4"
# The inputs go into the output as they were read, with the secret's value beside them.
SCRIPT = (
    'test -n "$JOBLEDGER_INPUTS" && '
    'printf \'{"got": %s, "token": "%s"}\' "$(cat "$JOBLEDGER_INPUTS")" "$TOKEN" '
    '> "$JOBLEDGER_OUTPUT"'
)


async def test_a_job_reads_its_inputs_and_its_output_is_shown_and_recorded_masked(
    client: Client,
    pool: asyncpg.Pool,
    service: JobService,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    test_image: str,
) -> None:
    resp = await client.put("/api/v1/projects/default/secrets/tok", json={"value": VALUE})
    assert resp.status in (200, 201), await resp.text()
    await start_scheduler(DockerExecutor(pull_policy="never"), secrets_box=SECRETS_BOX)
    spec = JobSpec(
        image=test_image,
        command=["sh", "-c", SCRIPT],
        env={"TOKEN": SecretRef(secret="tok")},
        idempotency_key="job-io-1",
    )
    inputs = {"extract": {"rows": 3}}
    done = await service.submit_as(
        uuid7(), Submit(spec=spec, inputs=inputs), EventMeta(actor="test")
    )
    view = await watcher.until(str(done.view.id), DONE)  # type: ignore[arg-type]
    assert view.state is JobState.SUCCEEDED, view.message

    expected = {"got": inputs, "token": "***"}
    # As the job wrote it (the inputs file is compact JSON), masked: what is hashed.
    stored = b'{"got": {"extract":{"rows":3}}, "token": "***"}'
    sha = hashlib.sha256(stored).hexdigest()
    job = await (await client.get(f"/api/v1/jobs/{view.id}")).json()
    assert (job["inputs"], job["output"], job["output_sha256"]) == (inputs, expected, sha)
    succeeded = await pool.fetchval(
        "SELECT data::text FROM events WHERE stream_id = $1 AND type = 'JobSucceeded'", view.id
    )
    assert json.loads(succeeded)["output"] == expected
    assert json.loads(succeeded)["output_sha256"] == sha
    everything = await pool.fetchval("SELECT string_agg(data::text, ' ') FROM events")
    assert VALUE not in everything
    row = await pool.fetchrow("SELECT output::text, inputs::text FROM jobs WHERE id = $1", view.id)
    assert VALUE not in row["output"] and json.loads(row["inputs"]) == inputs


async def test_a_container_adopted_before_its_start_gets_its_inputs(test_image: str) -> None:
    # A worker that died between create and start may not have put the inputs in: the
    # next life, starting it, does.
    req = RunRequest(
        job_id=uuid.uuid4(),
        attempt=1,
        worker_id=f"job-io-{uuid.uuid4().hex[:8]}",
        spec=JobSpec(
            image=test_image, command=["sh", "-c", 'cat "$JOBLEDGER_INPUTS" > "$JOBLEDGER_OUTPUT"']
        ),
        inputs={"a": 1},
    )
    executor = DockerExecutor(pull_policy="never")
    try:
        await executor._docker.containers.create(
            container_config(req), name=f"jobledger-{req.job_id}-1"
        )
        [found] = await executor.find(req.worker_id)
        outcome = await executor.adopt(found, req, asyncio.Event())
    finally:
        await executor.close()
    assert (outcome.exit_code, outcome.output) == (0, b'{"a":1}')
