"""The log pump's writing half and usage samples, with real jobs in real containers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient

from jobledger.administration import AccessService
from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import JobState
from jobledger.domain.specs import Resources
from jobledger.runtime.docker import DockerExecutor
from jobledger.runtime.output import LogLimits, LogSink
from jobledger.service import JobService
from jobledger.store.logs import (
    LogConflict,
    LogLine,
    append_log_batch,
    read_logs,
    read_usage_samples,
)
from tests.factories import spec
from tests.runtime.conftest import StartScheduler
from tests.watching import JobWatcher

META = EventMeta(actor="test")
DONE = {"succeeded", "failed", "cancelled"}
LONG = 40_000  # longer than a Docker frame (16 KiB) and than the line cap


async def job(service: JobService) -> object:
    view, _ = await service.submit(spec(), META)
    return view.id


async def test_sink_numbers_splits_caps_and_marks(service: JobService, pool: asyncpg.Pool) -> None:
    job_id = await job(service)
    sink = LogSink(pool, job_id, 1, LogLimits(max_line_bytes=100, max_total_bytes=1000))  # type: ignore[arg-type]
    await sink.start()
    await sink.write("stdout", b"one\ntw")
    await sink.write("stderr", b"err line\r\n")
    await sink.write("stdout", b"o\n" + b"x" * 250 + b"\n")
    for n in range(100):  # far past the 1,000-byte limit
        await sink.write("stdout", f"filler {n:03}\n".encode())
    await sink.write("stdout", b"no newline at the end")
    await sink.close()
    lines = await read_logs(pool, job_id)  # type: ignore[arg-type]
    assert [ln.seq for ln in lines] == list(range(1, len(lines) + 1))
    texts = [(ln.stream, ln.text) for ln in lines]
    assert texts[:4] == [
        ("stdout", "one"),
        ("stderr", "err line"),
        ("stdout", "two"),
        ("stdout", "x" * 100 + " [jobledger: line cut, 150 more bytes]"),
    ]
    stored = [t for s, t in texts if t.startswith("filler")]
    assert 0 < len(stored) < 100
    stream, marker = texts[-1]
    dropped = 100 - len(stored) + 1  # the fillers that did not fit, and the partial last line
    assert stream == "system" and marker.startswith(f"[jobledger: {dropped} lines (")
    assert sum(len(t.encode()) for s, t in texts if s != "system") <= 1000


async def test_numbering_continues_across_attempts(service: JobService, pool: asyncpg.Pool) -> None:
    job_id = await job(service)
    for attempt in (1, 2):
        sink = LogSink(pool, job_id, attempt)  # type: ignore[arg-type]
        await sink.start()
        await sink.write("stdout", b"a\nb\n")
        await sink.close()
    lines = await read_logs(pool, job_id)  # type: ignore[arg-type]
    assert [(ln.seq, ln.attempt, ln.text) for ln in lines] == [
        (1, 1, "a"), (2, 1, "b"), (3, 2, "a"), (4, 2, "b"),
    ]  # fmt: skip


SCRIPT = (
    "for i in $(seq 1 300); do echo out$i; echo err$i >&2; done; "
    f"head -c {LONG} /dev/zero | tr '\\0' y; echo; printf 'partial'"
)


async def over_websocket(client: TestClient, job_id: object) -> list[LogLine]:  # type: ignore[type-arg]
    """Every line a WebSocket client receives, until the end message."""
    lines: list[LogLine] = []
    async with client.ws_connect(f"/api/v1/jobs/{job_id}/logs/ws?after=0") as ws:
        async for msg in ws:
            data = json.loads(msg.data)
            if data["type"] == "end":
                break
            lines += [msgspec.convert(ln, LogLine) for ln in data["lines"]]
    return lines


async def check_output(pool: asyncpg.Pool, client: TestClient, job_id: object) -> None:  # type: ignore[type-arg]
    lines = await read_logs(pool, job_id, limit=10_000)  # type: ignore[arg-type]
    assert await over_websocket(client, job_id) == lines
    assert [ln.seq for ln in lines] == list(range(1, len(lines) + 1))
    out = [ln.text for ln in lines if ln.stream == "stdout"]
    err = [ln.text for ln in lines if ln.stream == "stderr"]
    assert err == [f"err{i}" for i in range(1, 301)]
    assert out[:300] == [f"out{i}" for i in range(1, 301)]
    assert out[300].startswith("y" * 16384) and "line cut" in out[300]
    assert out[301:] == ["partial"]


async def test_a_container_job_output_arrives_complete_and_in_order(
    service: JobService, pool: asyncpg.Pool, start_scheduler: StartScheduler,
    watcher: JobWatcher, test_image: str, client: TestClient,  # type: ignore[type-arg]
) -> None:  # fmt: skip
    await start_scheduler(DockerExecutor())
    view, _ = await service.submit(spec(image=test_image, command=["sh", "-c", SCRIPT]), META)
    assert (await watcher.until(view.id, DONE)).state is JobState.SUCCEEDED
    await check_output(pool, client, view.id)


async def test_a_process_job_output_arrives_complete_and_in_order(
    service: JobService, pool: asyncpg.Pool, start_scheduler: StartScheduler,
    watcher: JobWatcher, client: TestClient,  # type: ignore[type-arg]
) -> None:  # fmt: skip
    await start_scheduler()
    view, _ = await service.submit(spec(command=["sh", "-c", SCRIPT]), META)
    assert (await watcher.until(view.id, DONE)).state is JobState.SUCCEEDED
    await check_output(pool, client, view.id)


async def test_cpu_and_memory_are_sampled_and_summed_up(
    service: JobService, pool: asyncpg.Pool, start_scheduler: StartScheduler,
    watcher: JobWatcher, test_image: str,
) -> None:  # fmt: skip
    await start_scheduler(DockerExecutor(), sample_interval=0.3)
    busy, _ = await service.submit(
        spec(image=test_image, command=["sh", "-c", "yes > /dev/null & sleep 1.5; kill $!"]), META
    )
    hungry, _ = await service.submit(
        spec(
            image=test_image,
            command=["sh", "-c", "dd if=/dev/zero of=/dev/null bs=48M count=1; sleep 1"],
            resources=Resources(cpu=1.0, memory_mb=256),
        ),
        META,
    )
    busy_view = await watcher.until(busy.id, DONE)
    hungry_view = await watcher.until(hungry.id, DONE)
    busy_samples = await read_usage_samples(pool, busy.id)
    assert len(busy_samples) >= 2 and max(s.cpu_percent for s in busy_samples) > 20
    assert busy_view.usage is not None and busy_view.usage.cpu_seconds > 0.2
    hungry_samples = await read_usage_samples(pool, hungry.id)
    assert hungry_samples and hungry_view.usage is not None
    assert hungry_view.usage.peak_memory_bytes >= 48 * 1024 * 1024


async def test_past_the_log_limit_lines_are_dropped_and_counted_not_the_job(
    service: JobService, pool: asyncpg.Pool, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await start_scheduler(log_limit_bytes=2000)
    view, _ = await service.submit(spec(command=["sh", "-c", "seq 1 5000; echo done >&2"]), META)
    assert (await watcher.until(view.id, DONE)).state is JobState.SUCCEEDED
    lines = await read_logs(pool, view.id, limit=10_000)
    kept = [ln.text for ln in lines if ln.stream == "stdout"]
    assert kept == [str(n) for n in range(1, len(kept) + 1)] and len(kept) < 5000
    # stderr's "done" races stdout's tail through its own pump: it may or may not fit.
    done_kept = any(ln.stream == "stderr" and ln.text == "done" for ln in lines)
    marker = lines[-1]
    assert marker.stream == "system"
    assert marker.text.startswith(f"[jobledger: {5001 - len(kept) - done_kept} lines")
    assert "limit of 2000 bytes" in marker.text


async def test_a_projects_log_limit_overrides_the_workers(
    service: JobService, pool: asyncpg.Pool, start_scheduler: StartScheduler, watcher: JobWatcher
) -> None:
    await AccessService(pool).set_limits("chatty", None, 1024, meta=META)
    await start_scheduler(log_limit_bytes=1_000_000)
    view, _ = await service.submit(spec(command=["seq", "1", "2000"], project="chatty"), META)
    assert (await watcher.until(view.id, DONE)).state is JobState.SUCCEEDED
    lines = await read_logs(pool, view.id, limit=10_000)
    assert "limit of 1024 bytes" in lines[-1].text and len(lines) < 2000


async def test_closing_while_a_batch_is_being_stored_loses_nothing(
    service: JobService, pool: asyncpg.Pool
) -> None:
    job_id = await job(service)
    sink = LogSink(pool, job_id, 1, LogLimits(batch_lines=10))  # type: ignore[arg-type]
    await sink.start()
    async with pool.acquire() as blocker, blocker.transaction():
        # Inserts into job_logs wait until this transaction ends: a batch stays in flight.
        await blocker.execute("LOCK TABLE job_logs IN EXCLUSIVE MODE")
        await sink.write("stdout", b"".join(b"line %d\n" % n for n in range(1, 36)))
        await asyncio.sleep(0.2)  # the flusher has sent its first batch
        closing = asyncio.create_task(sink.close())
        await asyncio.sleep(0.2)
        assert not closing.done()  # it waits for the batch in flight
    await asyncio.wait_for(closing, 10)
    lines = await read_logs(pool, job_id)  # type: ignore[arg-type]
    assert [ln.text for ln in lines] == [f"line {n}" for n in range(1, 36)]
    assert [ln.seq for ln in lines] == list(range(1, 36))


async def test_whole_lines_empty_writes_and_empty_lines(
    service: JobService, pool: asyncpg.Pool
) -> None:
    job_id = await job(service)
    sink = LogSink(pool, job_id, 1)  # type: ignore[arg-type]
    await sink.start()
    for data in (b"one\n", b"", b"\n", b"two\r\n", b"th", b"", b"ree\n"):
        await sink.write("stdout", data)
    await sink.close()
    lines = await read_logs(pool, job_id)  # type: ignore[arg-type]
    assert [ln.text for ln in lines] == ["one", "", "two", "three"]


async def test_storing_a_batch_again_is_harmless_and_a_clash_is_an_error(
    service: JobService, pool: asyncpg.Pool
) -> None:
    # A retry after the reply to a committed insert was lost sends the same batch again.
    job_id = await job(service)
    batch = [LogLine(seq=n, stream="stdout", ts=datetime.now(UTC), text=f"l{n}", attempt=1)
             for n in (1, 2)]  # fmt: skip
    await append_log_batch(pool, job_id, 1, batch)  # type: ignore[arg-type]
    await append_log_batch(pool, job_id, 1, batch)  # type: ignore[arg-type]
    assert [ln.text for ln in await read_logs(pool, job_id)] == ["l1", "l2"]  # type: ignore[arg-type]
    with pytest.raises(LogConflict):
        await append_log_batch(pool, job_id, 2, batch[:1])  # type: ignore[arg-type]
