"""One shape per thing on the wire: an event reads the same from `/jobs/{id}/events`,
`/audit`, `replay export` and `replay tail`; the job out is its own type."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.projections.jobs import JobView
from jobledger.replay.archive import export, tail, tail_start
from jobledger.wire import JobEvent, JobOut, RawEvent

Client = TestClient[web.Request, web.Application]

#: What every source tells of an event, and must tell alike.
COMMON = ("position", "event_id", "stream_id", "version", "type", "schema_version",
          "recorded_at", "data", "meta")  # fmt: skip


def common(event: dict[str, Any]) -> dict[str, Any]:
    return {name: event[name] for name in COMMON}


async def test_an_event_has_one_shape_in_every_source(client: Client, pool: asyncpg.Pool) -> None:
    start = await tail_start(pool)
    tailed = tail(pool, start)
    resp = await client.post("/api/v1/jobs", json={"image": "busybox"})
    job = await resp.json()
    await client.post(f"/api/v1/jobs/{job['id']}/cancel", json={})

    events = (await (await client.get(f"/api/v1/jobs/{job['id']}/events")).json())["events"]
    audit = (await (await client.get(f"/api/v1/audit?job={job['id']}")).json())["events"]
    exported = [json.loads(line) async for line in export(pool)]
    async with asyncio.timeout(30):
        live = [json.loads(await anext(tailed)) for _ in events]
    await tailed.aclose()

    assert len(events) == 3 and events[0]["type"] == "JobSubmitted"
    assert [common(e) for e in events] == [common(e) for e in reversed(audit)]
    assert [common(e) for e in events] == [common(e) for e in exported]
    assert [common(e) for e in events] == [common(e) for e in live]
    # The job's id in the answers about jobs; the project and wait where audit knows them.
    assert {e["job_id"] for e in events + audit} == {job["id"]}
    assert {e["project"] for e in audit} == {"default"}
    # Each decodes as the one wire type: typed from the API, raw from an export.
    for e in events + audit:
        msgspec.convert(e, JobEvent, strict=False)
    for e in exported:
        assert msgspec.json.decode(json.dumps(e), type=RawEvent).hash == e["hash"]


async def test_the_job_out_is_not_the_projection_row(client: Client) -> None:
    assert not issubclass(JobOut, JobView)
    resp = await client.post("/api/v1/jobs", json={"image": "busybox"})
    body = await resp.json()
    # Every field of the row is shown but the projection's own bookkeeping, and what a
    # queued job waits for.
    shown = set(JobView.__struct_fields__) - {"cause_event_id"} | {"waiting_reason"}
    assert shown == set(body)
    msgspec.convert(body, JobOut, strict=False)
