"""Audit queries: who did what to which job, filtered and paged, within one's project."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.domain.events import EventMeta, FailureReason, JobQueued
from jobledger.domain.jobs import Fail, Start
from jobledger.ids import uuid7
from jobledger.service import JobService
from tests.api.test_access_api import auth, call, project_with_accounts
from tests.store.test_catchup import holding

META = EventMeta(actor="worker:w1")

Client = TestClient[web.Request, web.Application]


async def pages(
    client: Client, query: str, token: str | None = None, cursor: int | None = None
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        url = f"/api/v1/audit?limit=3{query}" + (f"&cursor={cursor}" if cursor else "")
        headers = auth(token) if token else None
        resp = await client.get(url, headers=headers)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        events += page["events"]
        if not (cursor := page["next_cursor"]):
            return events


async def test_who_cancelled_what_and_every_job_a_token_submitted(client: Client) -> None:
    p1 = await project_with_accounts(client, "p1")
    p2 = await project_with_accounts(client, "p2")
    _, a = await call(client, "POST", "/api/v1/jobs", p1["operator"], {"image": "b"})
    _, b = await call(client, "POST", "/api/v1/jobs", p1["operator"], {"image": "b"})
    _, c = await call(client, "POST", "/api/v1/jobs", p2["operator"], {"image": "b"})
    await call(client, "POST", f"/api/v1/jobs/{a['id']}/cancel", p1["admin"])

    everything = await pages(client, "")
    positions = [e["position"] for e in everything]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions)
    # Two projects, their three accounts and tokens each (tests/api/test_administration.py).
    assert len(everything) - len(await pages(client, "&stream_type=job")) == 2 * 7
    jobs = await pages(client, "&stream_type=job")
    assert len(jobs) == 3 + 2  # three submits (one event each) and one cancel (two)

    cancels = await pages(client, "&type=JobCancelRequested")
    assert [(e["job_id"], e["meta"]["actor"]) for e in cancels] == [(a["id"], "p1/admin-bot")]
    submitted = await pages(client, "&actor=p1/operator-bot&type=JobSubmitted")
    assert {e["job_id"] for e in submitted} == {a["id"], b["id"]}
    token_id = submitted[0]["meta"]["token_id"]
    assert {e["job_id"] for e in await pages(client, f"&token_id={token_id}")} == {a["id"], b["id"]}
    assert {e["job_id"] for e in await pages(client, f"&job={c['id']}")} == {c["id"]}

    # A project's own accounts see only its events; another project is refused.
    mine = await pages(client, "", p2["viewer"])
    assert {e["project"] for e in mine} == {"p2"} and {e["job_id"] for e in mine} == {c["id"]}
    assert (await call(client, "GET", "/api/v1/audit?project=p1", p2["viewer"]))[0] == 403
    assert await pages(client, f"&job={a['id']}", p2["viewer"]) == []


async def test_time_range_and_hostile_filters(client: Client) -> None:
    resp = await client.post("/api/v1/jobs", json={"image": "b"})
    job = await resp.json()
    since = job["created_at"]
    assert len(await pages(client, f"&since={quote(since)}")) == 1  # since is inclusive
    assert await pages(client, f"&until={quote(since)}") == []
    for hostile in ["' OR 1=1 --", "admin'); DROP TABLE events; --", "%", "_"]:
        assert await pages(client, f"&actor={quote(hostile)}&project=x") == []
    assert len(await pages(client, "")) == 1  # nothing dropped


async def test_bad_audit_filters(client: Client) -> None:
    for query, field in [
        ("type=JobTeleported", "query.type"),
        ("job=nope", "query.job"),
        ("cursor=abc", "query.cursor"),
        ("cursor=99999999999999999999", "query.cursor"),
        ("since=yesterday", "query.since"),
        ("until=0001-01-01T00:00:00%2B01:00", "query.until"),
        ("limit=0", "query.limit"),
        ("limit=1&limit=2", "query.limit"),
    ]:
        resp = await client.get(f"/api/v1/audit?{query}")
        assert resp.status == 400, query
        assert (await resp.json())["error"]["details"]["field"] == field


async def test_failures_by_reason_and_jobs_that_waited_long_for_a_slot(
    client: Client, service: JobService
) -> None:
    async def submit(**spec: Any) -> uuid.UUID:
        resp = await client.post("/api/v1/jobs", json={"image": "b", **spec})
        assert resp.status == 201
        return uuid.UUID((await resp.json())["id"])

    waited_long = await submit()
    later = (datetime.now(UTC) + timedelta(seconds=0.6)).isoformat()
    scheduled = await submit(scheduled_for=later)
    await asyncio.sleep(0.8)
    quick = await submit()
    lost = await submit()
    for job in (waited_long, scheduled, quick, lost):
        await service.execute(job, Start(worker_id="w1"), META)
    await service.execute(lost, Fail(reason=FailureReason.WORKER_LOST), META)
    await service.execute(quick, Fail(reason=FailureReason.TIMEOUT), META)

    failed = await pages(client, "&type=JobFailed&reason=worker_lost")
    assert [(e["job_id"], e["data"]["reason"]) for e in failed] == [(str(lost), "worker_lost")]

    # Waiting counts from when the job could start: the scheduled one waited ~0.2 s.
    slow = await pages(client, "&min_wait=0.5")
    assert [e["job_id"] for e in slow] == [str(waited_long)]
    assert slow[0]["type"] == "JobStarted" and slow[0]["waited_seconds"] >= 0.8
    started = {e["job_id"]: e["waited_seconds"] for e in await pages(client, "&type=JobStarted")}
    assert started[str(scheduled)] < 0.5 and started[str(quick)] < 0.5
    submitted = await pages(client, "&type=JobSubmitted")
    assert all("waited_seconds" not in e for e in submitted)


async def test_bad_reason_and_wait_filters(client: Client) -> None:
    for query, field in [
        ("reason=bored", "query.reason"),
        ("min_wait=-1", "query.min_wait"),
        ("min_wait=soon", "query.min_wait"),
        ("min_wait=nan", "query.min_wait"),
        ("min_wait=inf", "query.min_wait"),
    ]:
        resp = await client.get(f"/api/v1/audit?{query}")
        assert resp.status == 400, query
        assert (await resp.json())["error"]["details"]["field"] == field


async def test_an_event_that_commits_late_is_paged_exactly_once(
    client: Client, service: JobService
) -> None:
    """Newest-first paging by position alone skipped it: an append that took its position
    before a later one but committed after the first page was read sat above the cursor,
    and below what a reader looking again from the top had already seen."""
    store = service.store
    older = [await store.append(uuid7(), 0, [JobQueued()], META) for _ in range(5)]
    gate, inserted = asyncio.Event(), asyncio.Event()
    held = asyncio.create_task(
        store.append(uuid7(), 0, [JobQueued()], META, inline=holding(gate, inserted))
    )
    await inserted.wait()  # the late append has its position and stays uncommitted
    [newer] = await store.append(uuid7(), 0, [JobQueued()], META)

    def positions(page: dict[str, Any]) -> list[int]:
        return [e["position"] for e in page["events"]]

    # A reader pages through everything; the held append commits after its first page.
    first = await (await client.get("/api/v1/audit?limit=2")).json()
    gate.set()
    [late] = await held
    walked = positions(first) + [
        e["position"] for e in await pages(client, "", cursor=first["next_cursor"])
    ]
    # Then it looks again from the top, down to the newest event it had seen.
    fresh: list[int] = []
    for position in [e["position"] for e in await pages(client, "")]:
        if position == walked[0]:
            break
        fresh.append(position)
    seen = fresh + walked
    expected = [r.position for r in (*(r for [r] in older), late, newer)]
    assert sorted(seen) == sorted(expected)  # each once: none skipped, none twice
    # Pages and cursors of the usual kind still work: an unknown cursor gives nothing.
    resp = await client.get(f"/api/v1/audit?cursor={max(expected) + 1000}")
    assert resp.status == 200 and (await resp.json())["events"] == []
