"""HTTP API of jobs: submit, list, detail, events, cancel, and every kind of bad input."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from jobledger.store.logs import UsageSample, append_usage_samples

Client = TestClient  # type: ignore[type-arg]
SOME_MISSING = "01a2087c-db01-725b-b63a-f89db42493f1"

FULL_SPEC: dict[str, Any] = {
    "image": "jobledger-test:latest",
    "command": ["sh", "-c", "echo $GREETING"],
    "env": {"GREETING": "hello", "EMPTY": ""},
    "workdir": "/tmp",
    "resources": {"cpu": 0.5, "memory_mb": 64},
    "timeout_seconds": 30,
    "stop_grace_seconds": 3,
    "priority": 7,
    "labels": {"team": "data", "pipeline": "nightly"},
    "project": "analytics",
    "scheduled_for": "2031-02-03T04:05:06+02:00",
    "idempotency_key": "nightly-2031-02-03",
    "retry": {"max_retries": 2, "backoff_seconds": 1.5},
    "tags": ["gpu"],
    "concurrency_key": "nightly",
    "concurrency_limit": 2,
}


async def submit(client: Client, body: Any, status: int = 201) -> dict[str, Any]:
    """Submit as the server admin; a project the spec names is created first (an unknown
    project is a 404: see tests/api/test_access_api.py)."""
    if isinstance(body, dict) and isinstance(body.get("project"), str):
        made = await client.post("/api/v1/projects", json={"name": body["project"]})
        assert made.status in (201, 409, 422), await made.text()
    resp = await client.post("/api/v1/jobs", json=body)
    assert resp.status == status, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_submit_returns_the_job_with_the_spec_as_submitted(client: Client) -> None:
    job = await submit(client, FULL_SPEC)
    assert job["spec"] == FULL_SPEC
    assert job["state"] == "queued" and job["attempt"] == 1 and job["version"] == 1
    assert job["project"] == "analytics" and job["priority"] == 7
    assert job["labels"] == FULL_SPEC["labels"]
    assert job["scheduled_for"] == "2031-02-03T02:05:06Z"
    detail = await client.get(f"/api/v1/jobs/{job['id']}")
    assert detail.status == 200 and await detail.json() == job


async def test_defaults_fill_what_was_not_given(client: Client) -> None:
    job = await submit(client, {"image": "busybox"})
    assert job["spec"]["command"] == [] and job["spec"]["resources"] == {
        "cpu": 1.0,
        "memory_mb": 512,
    }
    assert job["project"] == "default" and job["priority"] == 0


async def test_events_carry_actor_and_request_id(client: Client) -> None:
    resp = await client.post(
        "/api/v1/jobs", json={"image": "busybox"}, headers={"X-Request-Id": "req-42"}
    )
    job = await resp.json()
    assert resp.headers["X-Request-Id"] == "req-42"
    events = (await (await client.get(f"/api/v1/jobs/{job['id']}/events")).json())["events"]
    assert [e["type"] for e in events] == ["JobSubmitted"]
    assert [e["version"] for e in events] == [1]
    # Without X-Correlation-Id, the request is its own correlation (and the events' cause).
    assert all(
        e["meta"]
        == {
            "actor": "admin",
            "request_id": "req-42",
            "correlation_id": "req-42",
            "causation_id": "req-42",
        }
        for e in events
    )
    assert events[0]["data"]["spec"]["image"] == "busybox"


async def test_idempotency_key_returns_the_same_job(client: Client, pool: asyncpg.Pool) -> None:
    body = {"image": "busybox", "idempotency_key": "k1"}
    first = await submit(client, body, 201)
    again = await submit(client, body, 200)
    assert again == first
    other_project = await submit(client, {**body, "project": "other"}, 201)
    assert other_project["id"] != first["id"]
    conflict = await submit(client, {**body, "priority": 5}, 409)
    assert conflict["error"]["code"] == "idempotency_conflict"
    assert conflict["error"]["details"]["field"] == "$.idempotency_key"
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 2


async def test_concurrent_submits_with_one_key_make_one_job(
    client: Client, pool: asyncpg.Pool
) -> None:
    body = {"image": "busybox", "idempotency_key": "race"}
    resps = await asyncio.gather(*(client.post("/api/v1/jobs", json=body) for _ in range(10)))
    ids = {(await r.json())["id"] for r in resps}
    assert len(ids) == 1
    assert sorted(r.status for r in resps) == [200] * 9 + [201]
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 1
    assert await pool.fetchval("SELECT count(*) FROM events") == 1


async def list_all(client: Client, query: str = "", limit: int = 10) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        url = f"/api/v1/jobs?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url)).json()
        jobs.extend(page["jobs"])
        if not (cursor := page["next_cursor"]):
            return jobs


async def test_list_is_newest_first_and_pages_without_gaps(client: Client) -> None:
    ids = [(await submit(client, {"image": "busybox"}))["id"] for _ in range(25)]
    jobs = await list_all(client, limit=10)
    assert [j["id"] for j in jobs] == ids[::-1]


async def test_pagination_is_stable_while_jobs_are_inserted(client: Client) -> None:
    old = [(await submit(client, {"image": "busybox"}))["id"] for _ in range(12)]
    first = await (await client.get("/api/v1/jobs?limit=5")).json()
    for _ in range(7):  # new jobs land before the cursor, not inside the remaining pages
        await submit(client, {"image": "busybox"})
    seen = [j["id"] for j in first["jobs"]]
    cursor = first["next_cursor"]
    while cursor:
        page = await (await client.get(f"/api/v1/jobs?limit=5&cursor={cursor}")).json()
        seen.extend(j["id"] for j in page["jobs"])
        cursor = page["next_cursor"]
    assert seen == old[::-1]


async def test_list_filters(client: Client) -> None:
    a = await submit(
        client, {"image": "busybox", "project": "p1", "labels": {"team": "x", "env": "prod"}}
    )
    b = await submit(client, {"image": "busybox", "project": "p2", "labels": {"team": "x"}})
    c = await submit(client, {"image": "busybox", "project": "p1", "labels": {"team": "y"}})
    await client.post(f"/api/v1/jobs/{c['id']}/cancel")

    async def ids(query: str) -> list[str]:
        return [j["id"] for j in await list_all(client, query)]

    assert await ids("&project=p1") == [c["id"], a["id"]]
    assert await ids("&label=team=x") == [b["id"], a["id"]]
    assert await ids("&label=team=x&label=env=prod") == [a["id"]]
    assert await ids("&state=cancelled") == [c["id"]]
    assert await ids("&state=queued,cancelled&project=p1") == [c["id"], a["id"]]
    assert await ids("&state=running") == []
    created_b = b["created_at"]
    assert await ids(f"&created_after={created_b}") == [c["id"], b["id"]]
    assert await ids(f"&created_before={created_b}") == [a["id"]]
    hostile = "&project=' OR 1=1 --&label=x'); DROP TABLE jobs; --=1"
    assert await ids(hostile) == []
    assert len(await ids("")) == 3


async def test_cancel_a_queued_job_then_again(client: Client) -> None:
    job = await submit(client, {"image": "busybox"})
    resp = await client.post(f"/api/v1/jobs/{job['id']}/cancel", json={"reason": "not needed"})
    cancelled = await resp.json()
    assert resp.status == 200 and cancelled["state"] == "cancelled"
    assert cancelled["cancel_requested_by"] == "admin" and cancelled["finished_at"]
    again = await client.post(f"/api/v1/jobs/{job['id']}/cancel")
    body = await again.json()
    assert again.status == 409 and body["error"]["code"] == "invalid_transition"
    assert "already cancelled" in body["error"]["message"]
    events = (await (await client.get(f"/api/v1/jobs/{job['id']}/events")).json())["events"]
    assert [e["type"] for e in events][-2:] == ["JobCancelRequested", "JobCancelled"]
    assert events[-2]["data"]["reason"] == "not needed"


async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}


BAD_SUBMITS: list[tuple[str, Any, int, str]] = [
    ("wrong type", {"image": "b", "priority": "high"}, 422, "$.priority"),
    ("nested wrong type", {"image": "b", "resources": {"cpu": "two"}}, 422, "$.resources.cpu"),
    ("unknown field", {"image": "b", "gpu": 1}, 422, "$.gpu"),
    ("unknown nested field", {"image": "b", "resources": {"disk": 1}}, 422, "$.resources.disk"),
    ("missing image", {"command": ["true"]}, 422, "$.image"),
    ("empty image", {"image": ""}, 422, "$.image"),
    ("image with spaces", {"image": "a b"}, 422, "$.image"),
    ("zero cpu", {"image": "b", "resources": {"cpu": 0}}, 422, "$.resources.cpu"),
    ("too many cpus", {"image": "b", "resources": {"cpu": 1000}}, 422, "$.resources.cpu"),
    ("tiny memory", {"image": "b", "resources": {"memory_mb": 1}}, 422, "$.resources.memory_mb"),
    ("zero timeout", {"image": "b", "timeout_seconds": 0}, 422, "$.timeout_seconds"),
    ("priority out of range", {"image": "b", "priority": 5000}, 422, "$.priority"),
    ("bad env name", {"image": "b", "env": {"1X": "v"}}, 422, "$.env"),
    ("bad project", {"image": "b", "project": "Has Spaces"}, 422, "$.project"),
    (
        "naive scheduled_for",
        {"image": "b", "scheduled_for": "2031-01-01T00:00:00"},
        422,
        "$.scheduled_for",
    ),
    ("not a time", {"image": "b", "scheduled_for": "tomorrow"}, 422, "$.scheduled_for"),
    ("too many retries", {"image": "b", "retry": {"max_retries": 99}}, 422, "$.retry.max_retries"),
    ("array body", [{"image": "b"}], 422, "$"),
    ("NUL in a label", {"image": "b", "labels": {"k": "a\u0000"}}, 400, "$.labels.k"),
    ("NUL in a command", {"image": "b", "command": ["x", "\u0000"]}, 400, "$.command[1]"),
    (
        "NUL in an idempotency key",
        {"image": "b", "idempotency_key": "k\u0000"},
        400,
        "$.idempotency_key",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "field"), [b[1:] for b in BAD_SUBMITS], ids=[b[0] for b in BAD_SUBMITS]
)
async def test_bad_submits_name_the_field_and_write_nothing(
    client: Client, pool: asyncpg.Pool, body: Any, status: int, field: str
) -> None:
    resp = await client.post("/api/v1/jobs", json=body)
    assert resp.status == status
    error = (await resp.json())["error"]
    assert error["details"]["field"] == field and error["message"] and error["code"]
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    assert await pool.fetchval("SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b'{"image": ', 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b"\xff\xfe", 400, "malformed_json"),
        (b'{"image": "b"} trailing', 400, "malformed_json"),
        (
            b'{"image": "b", "command": ["' + b"x" * (2 * 1024 * 1024) + b'"]}',
            413,
            "body_too_large",
        ),
    ],
    ids=["truncated", "empty", "not utf-8", "trailing", "huge"],
)
async def test_undecodable_bodies(
    client: Client, pool: asyncpg.Pool, data: bytes, status: int, code: str
) -> None:
    resp = await client.post(
        "/api/v1/jobs", data=data, headers={"Content-Type": "application/json"}
    )
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code
    assert await pool.fetchval("SELECT count(*) FROM events") == 0


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("GET", "/api/v1/jobs/not-a-uuid", 400, "path.id"),
        ("GET", "/api/v1/jobs/not-a-uuid/events", 400, "path.id"),
        ("POST", "/api/v1/jobs/not-a-uuid/cancel", 400, "path.id"),
        ("GET", "/api/v1/jobs/01a2087c-db01-725b-b63a-f89db42493f1", 404, None),
        ("GET", "/api/v1/jobs/01a2087c-db01-725b-b63a-f89db42493f1/events", 404, None),
        ("POST", "/api/v1/jobs/01a2087c-db01-725b-b63a-f89db42493f1/cancel", 404, None),
        ("GET", "/api/v1/jobs?state=bogus", 400, "query.state"),
        ("GET", "/api/v1/jobs?limit=0", 400, "query.limit"),
        ("GET", "/api/v1/jobs?limit=501", 400, "query.limit"),
        ("GET", "/api/v1/jobs?limit=ten", 400, "query.limit"),
        ("GET", "/api/v1/jobs?cursor=garbage", 400, "query.cursor"),
        ("GET", "/api/v1/jobs?created_after=yesterday", 400, "query.created_after"),
        ("GET", "/api/v1/jobs?created_before=2030-01-01T00:00:00", 400, "query.created_before"),
        ("GET", "/api/v1/jobs?label=noequals", 400, "query.label"),
        ("GET", "/api/v1/jobs?project=a&project=b", 400, "query.project"),
        ("GET", "/api/v1/jobs?label=a%3Db%00", 400, "query.label"),
        ("GET", "/api/v1/jobs?project=x%00", 400, "query.project"),
        # Instants that do not exist in UTC (year 1 east of Greenwich, year 9999 west of it).
        (
            "GET",
            "/api/v1/jobs?created_after=0001-01-01T00:00:00%2B01:00",
            400,
            "query.created_after",
        ),
        (
            "GET",
            "/api/v1/jobs?created_before=9999-12-31T23:59:59-01:00",
            400,
            "query.created_before",
        ),
        ("GET", "/api/v1/projects/Not_A_Name", 400, "path.project"),
        ("GET", f"/api/v1/projects/{'a' * 64}", 400, "path.project"),
        ("DELETE", "/api/v1/projects/default/tokens/nope", 400, "path.token_id"),
        ("GET", "/api/v1/projects/p1/service-accounts/a%00b/tokens", 400, "path.account"),
        ("DELETE", "/api/v1/jobs", 405, None),
        ("GET", "/api/v1/nothing-here", 404, None),
    ],
)
async def test_bad_requests_get_one_error_shape(
    client: Client, method: str, path: str, status: int, field: str | None
) -> None:
    resp = await client.request(method, path)
    assert resp.status == status
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    if field is not None:
        assert body["error"]["details"]["field"] == field


async def test_usage_returns_samples_and_summary(client: Client, pool: asyncpg.Pool) -> None:
    job = await submit(client, {"image": "busybox"})
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    samples = [
        UsageSample(
            sampled_at=t0 + timedelta(seconds=n), cpu_percent=10.0 * n, memory_bytes=1000 * n
        )
        for n in range(3)
    ]
    await append_usage_samples(pool, uuid.UUID(job["id"]), 1, samples)
    resp = await client.get(f"/api/v1/jobs/{job['id']}/usage")
    body = await resp.json()
    assert resp.status == 200 and body["state"] == "queued" and body["summary"] is None
    assert [(s["cpu_percent"], s["memory_bytes"]) for s in body["samples"]] == [
        (0, 0),
        (10, 1000),
        (20, 2000),
    ]
    missing = await client.get("/api/v1/jobs/01a2087c-db01-725b-b63a-f89db42493f1/usage")
    assert missing.status == 404


async def test_integral_floats_count_as_integers_as_json_schema_says(client: Client) -> None:
    job = await submit(
        client, {"image": "b", "priority": 5.0, "scheduled_for": "2031-01-01T00:00:00Z"}
    )
    assert job["priority"] == 5 and job["scheduled_for"] == "2031-01-01T00:00:00Z"
    bad = await submit(client, {"image": "b", "priority": 5.5}, 422)
    assert bad["error"]["details"]["field"] == "$.priority"


async def test_timeline_of_a_cancelled_job(client: Client) -> None:
    job = await submit(client, {"image": "b"})
    await client.post(f"/api/v1/jobs/{job['id']}/cancel")
    resp = await client.get(f"/api/v1/jobs/{job['id']}/timeline")
    body = await resp.json()
    assert resp.status == 200 and body["state"] == "cancelled"
    assert [t["event"] for t in body["transitions"]] == [
        "JobSubmitted", "JobCancelRequested", "JobCancelled",
    ]  # fmt: skip
    assert {t["actor"] for t in body["transitions"]} == {"admin"}
    assert set(body["seconds_in_state"]) == {"queued"} and body["seconds_in_state"]["queued"] >= 0
    assert (await client.get(f"/api/v1/jobs/{SOME_MISSING}/timeline")).status == 404
