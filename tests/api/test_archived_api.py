"""An archived job's and workflow run's detail (issue 19): the events routes say where the
events went instead of answering an empty list, verify checks the row against the final
state the archive checkpoint keeps, and the run still reads."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import Finish, Start
from jobledger.replay.archiving import archive_before
from jobledger.service import JobService
from jobledger.workflowservice import WorkflowService
from tests.factories import spec
from tests.replay.test_archive_workflows import advance, step_jobs, wf_spec

Client = TestClient[web.Request, web.Application]
META = EventMeta(actor="test")


async def test_archived_job_and_run_say_where_their_events_went(
    client: Client, service: JobService, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    job, _ = await service.submit(spec(), META)
    await service.execute(job.id, Start(worker_id="w"), META)
    await service.execute(job.id, Finish(exit_code=3), META)
    wf = WorkflowService(service)
    run = await wf.submit(wf_spec(("a", [])), META)
    run = await advance(wf, service, run.id, steps=1)
    [step] = step_jobs(run)
    live, _ = await service.submit(spec(), META)
    cutoff = await pool.fetchval("SELECT clock_timestamp()")
    report = await archive_before(pool, cutoff, tmp_path)
    assert report.kinds == {"workflow": 1, "job": 2}
    checkpoints = {
        r["file"]: r
        for r in await pool.fetch(
            "SELECT event_id, position, recorded_at, data ->> 'file' AS file FROM events "
            "WHERE stream_type = 'archive'"
        )
    }

    for path in (f"/api/v1/jobs/{job.id}/events", f"/api/v1/jobs/{step}/events",
                 f"/api/v1/workflows/{run.id}/events"):  # fmt: skip
        resp = await client.get(path)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["events"] == [] and body["archived"]["file"] in report.files, body
        archived = body["archived"]
        cp = checkpoints[archived["file"]]
        assert archived["checkpoint_event_id"] == str(cp["event_id"])
        assert archived["checkpoint_position"] == cp["position"]
        data = (tmp_path / archived["file"]).read_bytes()
        assert archived["sha256"] == hashlib.sha256(data).hexdigest()
        assert archived["archived_at"] and archived["before"]
    # Its timeline: no transitions (they are in the file), the state its row shows.
    resp = await client.get(f"/api/v1/jobs/{job.id}/timeline")
    assert resp.status == 200
    assert await resp.json() == {
        "job_id": str(job.id), "state": "failed", "transitions": [], "seconds_in_state": {}
    }  # fmt: skip
    body = await (await client.get(f"/api/v1/jobs/{live.id}/events")).json()
    assert "archived" not in body and body["events"]

    # Verify: the row against the checkpoint's final state.
    body = await (await client.get(f"/api/v1/jobs/{job.id}/verify")).json()
    assert body["verified"] is True and body["events"] == 3 and "problem" not in body, body
    assert body["archived"]["state_matches"] is True
    await pool.execute("UPDATE jobs SET exit_code = 9 WHERE id = $1", job.id)
    body = await (await client.get(f"/api/v1/jobs/{job.id}/verify")).json()
    assert body["verified"] is False and body["archived"]["state_matches"] is False
    assert body["problem"]["kind"] == "projection_differs"
    assert "exit_code" in body["problem"]["message"]

    # The run still reads, from its row, with its step's job.
    resp = await client.get(f"/api/v1/workflows/{run.id}")
    assert resp.status == 200
    out = await resp.json()
    assert out["state"] == "succeeded" and [s["job_id"] for s in out["steps"]] == [str(step)]
    assert (await client.get(f"/api/v1/workflows/{uuid.uuid4()}/events")).status == 404
