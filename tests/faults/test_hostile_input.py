"""Hostile input never gets a 5xx, changes nothing when it is refused, and never fails
another client's request: bytes that are not UTF-8, deep nesting, times that do not exist
in UTC, huge numbers and NULs, in bodies, headers, query and path, on every route.

Requests are written to the socket byte for byte (an HTTP client would clean them up)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobledger.api.app import ROUTES
from jobledger.batching import Batcher
from tests.conftest import ADMIN_TOKEN

Client = TestClient[web.Request, web.Application]

#: JSON values that the database, the clock or the parser cannot take as they are.
HOSTILE_JSON: list[bytes] = [
    b'"\xff"',
    b'"a\xc3(b"',
    b'"a\\u0000b"',
    b'"\\ud800"',
    b"[" * 900 + b"]" * 900,
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 900 + b"1" + b"}" * 900,
    b'"0001-01-01T00:00:00+01:00"',
    b'"9999-12-31T23:59:59-01:00"',
    b"1e400",
    b"-1e400",
    b"1" + b"0" * 400,
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1.5",
    b"null",
    b'""',
    b'{"k": "\\u0000"}',
    b'{"\\u0000": "v"}',
]
#: Raw path segments and query values (already as they go on the wire).
HOSTILE_TEXT: list[bytes] = [
    b"%FF",
    b"%00",
    b"a%00b",
    b"%C3%28",
    b"%ED%A0%80",
    b"\xff",
    b"0001-01-01T00:00:00%2B01:00",
    b"9999-12-31T23:59:59-01:00",
    b"1e400",
    b"NaN",
    b"-1",
    b"9" * 400,
    b"..",
    b"x" * 3000,
    base64.urlsafe_b64encode(
        b'["0001-01-01T00:00:00+01:00","01a2087c-db01-725b-b63a-f89db42493f1"]'
    ).rstrip(b"="),
    base64.urlsafe_b64encode(
        b'["9999-12-31T23:59:59-01:00","01a2087c-db01-725b-b63a-f89db42493f1"]'
    ).rstrip(b"="),
]
HOSTILE_AUTH: list[bytes] = [
    b"Bearer \xff",
    b"Bearer \xff\xfe\xfd",
    b"Bearer jl_\x80abc",
    b"Bearer \xed\xa0\x80",
    b"Basic abc",
    b"Bearer " + b"a" * 8000,
]
HOSTILE_ID: list[bytes] = [b"\xff", b"a b", b"x" * 1000, b"\xed\xa0\x80"]
#: A valid body per body type, which the fuzz spoils one field at a time.
BASE_BODIES: dict[str, dict[str, Any]] = {
    "JobSpec": {"image": "x"},
    "BatchIn": {"jobs": [{"image": "x"}]},
    "CancelRequest": {"reason": "r"},
    "NewProject": {"name": "fuzzed"},
    "ProjectLimits": {"max_running_jobs": 3},
    "NewServiceAccount": {"name": "fuzz-bot", "role": "viewer"},
    "NewToken": {"description": "d"},
    "DefinitionSubmit": {"definition": "fuzzdef", "params": {"n": 1}},
    "DefinitionSpec": {"image": "x", "params": [{"name": "n", "type": "integer"}]},
    "EnvironmentSpec": {"env": {"A": "1"}},
    "DisableRequest": {"reason": "r"},
    "SecretValue": {"value": "fuzz-value"},
    "NewSchedule": {
        "name": "fuzzed",
        "cron": "@daily",
        "run": {"definition": "fuzzdef", "params": {"n": 1}},
    },
    "ScheduleSettings": {"cron": "@daily", "run": {"spec": {"image": "x"}}},
    "WorkflowSpec": {
        "steps": [
            {"name": "a", "spec": {"image": "x"}},
            {"name": "b", "spec": {"image": "x"}, "needs": ["a"]},
        ]
    },
    "RerunRequest": {"mode": "from_failure"},
}
#: Other valid shapes of a body type, spoiled the same way (a schedule that runs a workflow).
ALSO_BODIES: dict[str, list[dict[str, Any]]] = {
    "ScheduleSettings": [
        {"cron": "@daily", "run": {"workflow": BASE_BODIES["WorkflowSpec"]}},
    ],
}
FIELDS = [
    "image", "priority", "labels", "scheduled_for", "description", "name", "reason", "env",
    "max_running_jobs", "project", "idempotency_key", "expires_in_seconds", "command", "jobs",
    "resources", "role", "submit_rate", "definition", "params", "definition_version", "value",
    "cron", "timezone", "run", "overlap", "start_at", "steps", "needs", "mode",
]  # fmt: skip


async def raw(
    client: Client,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    body: bytes = b"",
) -> tuple[int, dict[str, str]]:
    """Send one request as these exact bytes; the answer's status and headers."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        head = [
            method.encode() + b" " + target + b" HTTP/1.1",
            b"Host: localhost",
            b"Connection: close",
            b"Content-Length: " + str(len(body)).encode(),
            *(k + b": " + v for k, v in headers),
        ]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    fields = {}
    for line in rest.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        fields[name.decode("latin-1").lower()] = value.decode("latin-1").strip()
    return int(status_line.split()[1]), fields


async def counts(pool: asyncpg.Pool) -> tuple[Any, ...]:
    """What a write would change: rows of the log and of every table a request writes."""
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM jobs),
                  (SELECT count(*) FROM projects), (SELECT count(*) FROM service_accounts),
                  (SELECT count(*) FROM api_tokens),
                  (SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL),
                  (SELECT max(updated_at) FROM projects)"""
    )
    return tuple(row)


def body_of(fields: dict[str, bytes]) -> bytes:
    return b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in fields.items()) + b"}"


@st.composite
def hostile_requests(draw: st.DrawFn, ids: dict[str, bytes]) -> tuple[str, bytes, list, bytes]:
    """One request to a route of the route table with something hostile somewhere."""
    route = draw(st.sampled_from(ROUTES))
    path = route.path.encode()
    for name in route.path_params:
        value = draw(st.sampled_from([ids[name], *HOSTILE_TEXT]))
        path = path.replace(b"{" + name.encode() + b"}", value)
    params = []
    for q in route.query:
        if draw(st.booleans()):
            params.append(q.name.encode() + b"=" + draw(st.sampled_from(HOSTILE_TEXT)))
    if draw(st.booleans()):
        params.append(draw(st.sampled_from(HOSTILE_TEXT)) + b"=1")
    target = path + (b"?" + b"&".join(params) if params else b"")
    auth = draw(st.sampled_from([b"Bearer " + ADMIN_TOKEN.encode(), *HOSTILE_AUTH]))
    headers = [(b"Authorization", auth)]
    if draw(st.booleans()):
        headers.append((draw(st.sampled_from([b"X-Request-Id", b"X-Correlation-Id"])),
                        draw(st.sampled_from(HOSTILE_ID))))  # fmt: skip
    body = b""
    if route.body is not None:
        headers.append((b"Content-Type", b"application/json"))
        body_type = draw(st.sampled_from([route.body, *route.body_also]))
        name = getattr(body_type, "__name__", "")
        base = draw(st.sampled_from([BASE_BODIES[name], *ALSO_BODIES.get(name, [])]))
        fields = {k: json.dumps(v).encode() for k, v in base.items()}
        fields[draw(st.sampled_from(FIELDS))] = draw(st.sampled_from(HOSTILE_JSON))
        body = draw(st.sampled_from([body_of(fields), *HOSTILE_JSON]))
    return route.method, target, headers, body


async def setup_ids(client: Client) -> dict[str, bytes]:
    """Real values for the path parameters, so that a request gets past the lookups."""
    resp = await client.post("/api/v1/jobs", json={"image": "x"})
    assert resp.status == 201, await resp.text()
    job_id = (await resp.json())["id"]
    resp = await client.post(
        "/api/v1/projects/default/service-accounts", json={"name": "bot", "role": "admin"}
    )
    assert resp.status == 201, await resp.text()
    resp = await client.post("/api/v1/projects/default/service-accounts/bot/tokens")
    assert resp.status == 201, await resp.text()
    token_id = (await resp.json())["id"]
    definition = {"image": "x", "params": [{"name": "n", "type": "integer"}]}
    resp = await client.put("/api/v1/projects/default/definitions/fuzzdef", json=definition)
    assert resp.status == 201, await resp.text()
    resp = await client.put("/api/v1/projects/default/environments/fuzzenv", json={"env": {}})
    assert resp.status == 201, await resp.text()
    resp = await client.put("/api/v1/projects/default/secrets/fuzzsecret", json={"value": "v-1234"})
    assert resp.status == 201, await resp.text()
    schedule = {"name": "fuzzsched", "cron": "@daily", "run": {"definition": "fuzzdef"}}
    resp = await client.post("/api/v1/projects/default/schedules", json=schedule)
    assert resp.status == 201, await resp.text()
    workflow = {"steps": [{"name": "a", "spec": {"image": "x"}}]}
    resp = await client.post("/api/v1/workflows", json=workflow)
    assert resp.status == 201, await resp.text()
    run_id = (await resp.json())["id"]
    return {
        "run": run_id.encode(),
        "schedule": b"fuzzsched",
        "secret": b"fuzzsecret",
        "definition": b"fuzzdef",
        "environment": b"fuzzenv",
        "id": job_id.encode(),
        "project": b"default",
        "account": b"bot",
        "token_id": token_id.encode(),
    }


async def test_no_5xx_and_no_write_on_refused_requests(client: Client, pool: asyncpg.Pool) -> None:
    ids = await setup_ids(client)
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, str, bytes]] = []

    async def one(method: str, target: bytes, headers: list, body: bytes) -> None:
        before = await counts(pool)
        status, _ = await raw(client, method, target, headers, body)
        seen.append((status, method, target[:80]))
        assert status < 500, (method, target[:200], headers, body[:200])
        if status >= 400:
            assert await counts(pool) == before, (status, method, target[:200], body[:200])

    @given(request=hostile_requests(ids))
    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(request: tuple[str, bytes, list, bytes]) -> None:
        asyncio.run_coroutine_threadsafe(one(*request), loop).result(timeout=60)

    await asyncio.to_thread(check)
    assert len(seen) >= 300
    assert {s for s, *_ in seen} & {400, 401, 404, 422}


NAMED_CASES: list[tuple[str, str, bytes]] = [
    ("POST", "/api/v1/jobs", b'{"image": "\xff"}'),
    ("POST", "/api/v1/jobs", b'{"image": "x", "priority": 1.5, "labels": '
     + b"[" * 900 + b"]" * 900 + b"}"),
    ("POST", "/api/v1/jobs", b'{"image": "x", "priority": 1.5, "labels": '
     + b"[" * 10_000 + b"]" * 10_000 + b"}"),
    ("POST", "/api/v1/jobs", b'{"image": "x", "scheduled_for": "0001-01-01T00:00:00+01:00"}'),
    ("POST", "/api/v1/jobs", b'{"image": "x", "scheduled_for": "9999-12-31T23:59:59-01:00"}'),
    ("POST", "/api/v1/jobs:batch",
     b'{"jobs": [{"image": "x", "scheduled_for": "9999-12-31T23:59:59-01:00"}]}'),
    ("POST", "/api/v1/jobs/{id}/cancel", b'{"reason": "\xff"}'),
    ("POST", "/api/v1/projects", b'{"name": "\xff"}'),
    ("PUT", "/api/v1/projects/default/limits", b'{"max_running_jobs": 1e400}'),
    ("POST", "/api/v1/projects/default/service-accounts/bot/tokens", b'{"description": "\xff"}'),
    ("POST", "/api/v1/projects/default/service-accounts/bot/tokens",
     b'{"description": "a\\u0000b"}'),
    ("POST", "/api/v1/projects/default/service-accounts/bot/tokens",
     b'{"description": "\\ud800"}'),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body"), NAMED_CASES)
async def test_named_hostile_bodies_are_4xx(
    client: Client, pool: asyncpg.Pool, method: str, path: str, body: bytes
) -> None:
    ids = await setup_ids(client)
    target = path.replace("{id}", ids["id"].decode()).encode()
    before = await counts(pool)
    headers = [(b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())]
    status, _ = await raw(client, method, target, headers, body)
    assert 400 <= status < 500
    assert await counts(pool) == before


@pytest.mark.parametrize(
    "query",
    [
        b"created_after=0001-01-01T00:00:00%2B01:00",
        b"created_before=9999-12-31T23:59:59-01:00",
        b"cursor=" + HOSTILE_TEXT[-2],
        b"cursor=" + HOSTILE_TEXT[-1],
    ],
)
async def test_times_that_do_not_exist_in_utc_are_400_in_queries(
    client: Client, query: bytes
) -> None:
    headers = [(b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())]
    status, _ = await raw(client, "GET", b"/api/v1/jobs?" + query, headers)
    assert status == 400
    status, _ = await raw(client, "GET", b"/api/v1/audit?" + query.replace(b"created_after",
                          b"since").replace(b"created_before", b"until"), headers)  # fmt: skip
    assert status in (400, 200)  # audit takes no `cursor` of this form: 400 too


#: The dashboard's routes (issue 17) and the query parameters each takes (None: all).
DASHBOARD_TARGETS: dict[bytes, set[bytes] | None] = {
    b"/api/v1/jobs": None,
    b"/api/v1/jobs/{id}": {b"at"},
    b"/api/v1/jobs/counts": {b"state", b"created_before", b"workflow_run"},
    b"/api/v1/jobs/watch": None,  # and without an upgrade it is a 400 anyway
    b"/api/v1/jobs/{id}/verify": set(),
    b"/api/v1/whoami": set(),
}


@pytest.mark.parametrize("target", DASHBOARD_TARGETS)
@pytest.mark.parametrize(
    "query",
    [
        b"at=0001-01-01T00:00:00%2B01:00",
        b"at=9999-12-31T23:59:59-01:00",
        b"at=" + HOSTILE_TEXT[0],
        b"at=%00",
        b"state=%00",
        b"created_before=9999-12-31T23:59:59-01:00",
        b"workflow_run=" + HOSTILE_TEXT[-1],
    ],
)
async def test_dashboard_routes_refuse_hostile_queries_with_4xx(
    client: Client, pool: asyncpg.Pool, target: bytes, query: bytes
) -> None:
    """The dashboard's routes (issue 17): time travel's `at`, the counts' and the watch's
    filters; a route without the parameter ignores it."""
    ids = await setup_ids(client)
    before = await counts(pool)
    headers = [(b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())]
    path = target.replace(b"{id}", ids["id"])
    status, _ = await raw(client, "GET", path + b"?" + query, headers)
    takes = DASHBOARD_TARGETS[target]
    # A NUL anywhere is refused on every route; a parameter a route does not take is ignored.
    refused = takes is None or query.split(b"=")[0] in takes or b"%00" in query
    assert status == (400 if refused else 200)
    assert await counts(pool) == before


async def test_the_last_instant_there_is_travels_to_now(client: Client) -> None:
    headers = [(b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())]
    status, _ = await raw(client, "GET", b"/api/v1/jobs?at=9999-12-31T23:59:59.999999Z", headers)
    assert status == 200


async def test_a_bad_token_fails_alone_among_concurrent_requests(client: Client) -> None:
    """Tokens of concurrent requests are checked in one query: a token that is not UTF-8
    must get its 401 without failing the valid requests checked with it."""
    resp = await client.post(
        "/api/v1/projects/default/service-accounts", json={"name": "many", "role": "viewer"}
    )
    assert resp.status == 201
    resp = await client.post("/api/v1/projects/default/service-accounts/many/tokens")
    token = (await resp.json())["token"]

    async def valid() -> int:
        r = await client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        await r.read()
        return r.status

    async def bad(n: int) -> int:
        status, headers = await raw(
            client, "GET", b"/api/v1/jobs", [(b"Authorization", HOSTILE_AUTH[n % 4])]
        )
        assert headers.get("www-authenticate", "").startswith("Bearer")
        return status

    for _ in range(3):
        statuses = await asyncio.gather(
            *(valid() for _ in range(200)),
            *(bad(n) for n in range(8)),
            *(valid() for _ in range(200)),
        )
        good = statuses[:200] + statuses[208:]
        assert good.count(200) == len(good), sorted(set(good))
        assert statuses[200:208] == [401] * 8


async def test_the_batcher_fails_only_the_poisoned_item() -> None:
    """A batch that fails is split until the item at fault fails alone."""
    writes: list[list[str]] = []

    async def write(batch: list[str]) -> list[str]:
        writes.append(batch)
        await asyncio.sleep(0)
        if "poison" in batch:
            raise ValueError("poisoned")
        return [item.upper() for item in batch]

    batcher: Batcher[str, str] = Batcher(write)
    items = [f"item{n}" for n in range(60)]
    items.insert(37, "poison")
    results = await asyncio.gather(*(batcher(i) for i in items), return_exceptions=True)
    for item, result in zip(items, results, strict=True):
        if item == "poison":
            assert isinstance(result, ValueError)
        else:
            assert result == item.upper()
    assert any(len(b) > 1 and "poison" in b for b in writes)  # it did share a batch

    # Where a failed batch may have left something behind, nothing is written twice.
    writes.clear()
    careful: Batcher[str, str] = Batcher(write, split=lambda exc: False)
    results = await asyncio.gather(*(careful(i) for i in items), return_exceptions=True)
    assert sum(len(b) for b in writes) == len(items)


async def test_streamed_answers_carry_the_request_id(client: Client) -> None:
    resp = await client.post("/api/v1/jobs", json={"image": "x"})
    job_id = (await resp.json())["id"]
    resp = await client.get(f"/api/v1/jobs/{job_id}/logs.txt", headers={"X-Request-Id": "rid-1"})
    assert resp.status == 200 and resp.headers["X-Request-Id"] == "rid-1"
    async with client.ws_connect(f"/api/v1/jobs/{job_id}/logs/ws") as ws:
        assert ws._response.headers.get("X-Request-Id")  # the upgrade answer
        await ws.close()
    # A request id that cannot go back into a header is replaced by one of ours.
    status, headers = await raw(client, "GET", b"/healthz", [(b"X-Request-Id", b"\xff")])
    assert status == 200 and headers["x-request-id"] and "\\" not in headers["x-request-id"]


async def test_401_names_the_scheme_and_405_the_methods(client: Client) -> None:
    resp = await client.get("/api/v1/jobs", headers={"Authorization": ""})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.delete("/api/v1/jobs")
    assert resp.status == 405
    assert {m.strip() for m in resp.headers["Allow"].split(",")} >= {"GET", "POST"}
    resp = await client.patch(f"/api/v1/jobs/{uuid.uuid4()}")
    assert resp.status == 405 and "GET" in resp.headers["Allow"]


def rss_bytes(pid: int) -> int:
    """A process's resident memory, as the kernel counts it."""
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


#: Clients replaying one job's log at once, and the log: 10 MiB in 1 KiB lines.
REPLAYS = 20
LOG_LINES, LINE_BYTES, BATCH_LINES = 10_000, 1024, 500


async def test_concurrent_replays_of_a_long_log_hold_bounded_memory(
    dsn: str, pool: asyncpg.Pool
) -> None:
    """20 WebSocket clients replay one job's 10 MiB log and stop reading after the first
    message: each client's stream waits with one page in hand. The server's memory grows by
    a bounded amount per client, not by the log's size per client (about 12 MiB each when a
    page was 20,000 lines whatever their size)."""
    import aiohttp

    from jobledger.store.logs import LogLine as Line
    from jobledger.store.logs import append_log_batch
    from tests.e2e.conftest import AUTH, Server

    server = await asyncio.to_thread(Server, "--database-url", dsn, "--no-scheduler")
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.post(f"{server.url}/api/v1/jobs", json={"image": "x"}) as resp:
                job_id = uuid.UUID((await resp.json())["id"])
            now = datetime.now(UTC)
            for first in range(1, LOG_LINES + 1, BATCH_LINES):
                lines = [
                    Line(
                        seq=s,
                        stream="stdout",
                        ts=now,
                        text=f"{s:08d}".ljust(LINE_BYTES, "x"),
                        attempt=1,
                    )
                    for s in range(first, first + BATCH_LINES)
                ]
                await append_log_batch(pool, job_id, 1, lines)
            url = f"{server.url}/api/v1/jobs/{job_id}/logs/ws"
            # Warm up: one replay to the end, so the baseline has what any replay loads.
            async with http.ws_connect(url) as ws:
                last = 0
                while last < LOG_LINES:
                    msg = json.loads((await ws.receive()).data)
                    last = msg["lines"][-1]["seq"]
            before = rss_bytes(server.proc.pid)
            sockets = [await http.ws_connect(url) for _ in range(REPLAYS)]
            firsts = []
            for ws in sockets:
                first = json.loads((await ws.receive()).data)["lines"]
                assert first[0]["seq"] == 1
                firsts.append(first[-1]["seq"])
            await asyncio.sleep(1.0)  # let every stream fill its socket and wait there
            held = rss_bytes(server.proc.pid) - before
            for ws, last in zip(sockets, firsts, strict=True):  # each gets all, in order
                while last < LOG_LINES:
                    msg = json.loads((await ws.receive()).data)
                    assert msg["lines"][0]["seq"] == last + 1
                    last = msg["lines"][-1]["seq"]
                await ws.close()
        assert held < REPLAYS * 5 * 1024 * 1024, f"{held / 2**20:.0f} MiB for {REPLAYS} replays"
    finally:
        await asyncio.to_thread(server.stop)


async def test_metrics_route_refuses_hostile_requests_with_4xx(client: Client) -> None:
    """`/metrics` (issue 19) is outside the route table and takes no parameters: a token
    that is not UTF-8, junk or NULs in the query, other methods, a body: 4xx or ignored,
    never a 5xx."""
    cases: list[tuple[str, bytes, list[tuple[bytes, bytes]], bytes, set[int]]] = [
        ("GET", b"/metrics", [(b"Authorization", b"Bearer \xff\xfe")], b"", {401}),
        ("GET", b"/metrics", [(b"Authorization", b"Bearer " + b"x" * 8000)], b"", {401}),
        ("GET", b"/metrics", [(b"Authorization", b"Basic Zm9vOmJhcg==")], b"", {401}),
        ("GET", b"/metrics?x=%00", [(b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())],
         b"", {400}),
        ("GET", b"/metrics?name[]=" + b"%ff" * 500, [
            (b"Authorization", f"Bearer {ADMIN_TOKEN}".encode())], b"", {200}),
        ("POST", b"/metrics", [], b"{}", {405}),
        ("DELETE", b"/metrics", [], b"", {405}),
        ("GET", b"/metrics/../metrics", [], b"", {401, 404}),
    ]  # fmt: skip
    for method, target, headers, body, expected in cases:
        status, _ = await raw(client, method, target, headers, body)
        assert status in expected, (method, target, status)
