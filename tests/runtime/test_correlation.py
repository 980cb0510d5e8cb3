"""Correlation and causation (I6): every event of a job carries the correlation id of the
request that submitted it, and names the event (or request) that led to it."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from jobledger.domain.events import EventMeta, FailureReason, Recorded
from jobledger.domain.jobs import Fail, JobState
from jobledger.runtime import claims
from jobledger.runtime.noop import NoopExecutor
from jobledger.service import JobService
from tests.runtime.conftest import StartScheduler
from tests.watching import JobWatcher

DONE = {"succeeded", "failed", "cancelled"}
Client = TestClient[web.Request, web.Application]  # type: ignore[type-arg]


async def submit(client: Client, headers: dict[str, str], **body: object) -> tuple[uuid.UUID, str]:
    """Submit through the API: the job's id and the request id the server used."""
    resp = await client.post(
        "/api/v1/jobs", json={"image": "x", "command": ["true"], **body}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    # The answer says which correlation the job's events carry.
    assert resp.headers["X-Correlation-Id"] == body["correlation_id"]
    return uuid.UUID(body["id"]), resp.headers["X-Request-Id"]


def chain(records: list[Recorded]) -> list[tuple[str, str | None, str | None]]:
    """Each event's type, correlation id, and the type of its cause (or the cause itself
    if it is not an event of the stream: a request id)."""
    by_id = {str(r.event_id): r for r in records}
    return [
        (
            type(r.event).__name__,
            r.meta.correlation_id,
            type(by_id[c].event).__name__ if (c := r.meta.causation_id) in by_id else c,
        )
        for r in records
    ]


def caused_by_the_one_before(records: list[Recorded]) -> bool:
    return all(r.meta.causation_id == str(prev.event_id) for prev, r in itertools.pairwise(records))


async def test_every_event_of_a_job_carries_the_clients_correlation_id(
    client: Client,
    service: JobService,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
    tmp_path: Path,
) -> None:
    await start_scheduler()  # processes: the first attempt fails, the retry succeeds
    marker = tmp_path / "tried"
    job_id, rid = await submit(
        client,
        {"X-Correlation-Id": "order-42", "X-Request-Id": "req-submit"},
        command=["sh", "-c", f"test -e {marker} || {{ touch {marker}; exit 3; }}"],
        retry={"max_retries": 1, "backoff_seconds": 0},
    )
    assert rid == "req-submit"
    assert (await watcher.until(job_id, DONE)).state is JobState.SUCCEEDED
    records = await service.store.read_stream(job_id)
    assert chain(records) == [
        ("JobSubmitted", "order-42", "req-submit"),
        ("JobStarted", "order-42", "JobSubmitted"),
        ("JobRetryScheduled", "order-42", "JobStarted"),
        ("JobStarted", "order-42", "JobRetryScheduled"),
        ("JobSucceeded", "order-42", "JobStarted"),
    ]
    assert caused_by_the_one_before(records)
    assert records[0].meta.request_id == "req-submit"
    assert {r.meta.request_id for r in records[1:]} == {None}  # the worker's, not a request's


async def test_without_a_usable_header_the_request_id_is_the_correlation(
    client: Client,
    service: JobService,
    start_scheduler: StartScheduler,
    watcher: JobWatcher,
) -> None:
    await start_scheduler(NoopExecutor())
    for headers in ({}, {"X-Correlation-Id": "x" * 129}, {"X-Correlation-Id": "has space"}):
        job_id, rid = await submit(client, headers)
        assert (await watcher.until(job_id, DONE)).state is JobState.SUCCEEDED
        records = await service.store.read_stream(job_id)
        assert chain(records) == [
            ("JobSubmitted", rid, rid),
            ("JobStarted", rid, "JobSubmitted"),
            ("JobSucceeded", rid, "JobStarted"),
        ]
        assert caused_by_the_one_before(records)


async def test_a_cancel_is_caused_by_its_request_and_a_lost_lease_by_the_attempt(
    client: Client, service: JobService
) -> None:
    """The reaper's failure and a cancel, appended as the scheduler and the API do."""
    lost, rid = await submit(client, {"X-Correlation-Id": "batch-7"})
    cancelled, _ = await submit(client, {"X-Correlation-Id": "batch-7"})
    await claims.claim(service, "w-gone", [], 2)
    # As the lease reaper records it: a worker's metadata, no request.
    await service.execute(
        lost,
        Fail(attempt=1, reason=FailureReason.WORKER_LOST, message="lease expired"),
        EventMeta(actor="worker:reaper"),
    )
    records = await service.store.read_stream(lost)
    assert chain(records) == [
        ("JobSubmitted", "batch-7", rid),
        ("JobStarted", "batch-7", "JobSubmitted"),
        ("JobFailed", "batch-7", "JobStarted"),
    ]
    resp = await client.post(
        f"/api/v1/jobs/{cancelled}/cancel",
        json={},
        headers={"X-Correlation-Id": "stop-it", "X-Request-Id": "req-cancel"},
    )
    assert resp.status in (200, 202), await resp.text()
    assert chain(await service.store.read_stream(cancelled))[2:] == [
        ("JobCancelRequested", "stop-it", "req-cancel")
    ]
