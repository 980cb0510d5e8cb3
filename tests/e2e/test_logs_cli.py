"""`jobledger logs [-f]` as a user runs it, against a `jobledger serve` process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import Finish, Start
from jobledger.service import JobService
from jobledger.store.logs import LogLine, Stream, append_log_batch
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Follower, Server, free_port, serving
from tests.e2e.conftest import run_cli as run
from tests.factories import spec

META = EventMeta(actor="test")
T0 = datetime(2030, 1, 1, tzinfo=UTC)
MISSING = "01a2087c-db01-725b-b63a-f89db42493f1"


def text(seq: int) -> str:
    return f"out {seq}"


async def write(
    service: JobService, job_id: uuid.UUID, first: int, last: int, stream: Stream = "stdout"
) -> None:
    for start in range(first, last + 1, 100):
        lines = [
            LogLine(seq=s, stream=stream, ts=T0, text=text(s))
            for s in range(start, min(start + 99, last) + 1)
        ]
        await append_log_batch(service.pool, job_id, 1, lines)


async def running_job(service: JobService) -> uuid.UUID:
    view, _ = await service.submit(spec(), META)
    await service.execute(view.id, Start(worker_id="w1"), META)
    return view.id


def expected(first: int, last: int) -> str:
    return "".join(f"{text(s)}\n" for s in range(first, last + 1))


@pytest.fixture
async def server(dsn: str) -> AsyncIterator[Server]:
    async with serving("--database-url", dsn, "--no-scheduler") as srv:
        yield srv


async def test_logs_prints_stdout_and_stderr_lines(server: Server, service: JobService) -> None:
    job = await running_job(service)
    await write(service, job, 1, 1500)
    await write(service, job, 1501, 1510, stream="stderr")
    await write(service, job, 1511, 1511, stream="system")
    await write(service, job, 1512, 12_000)  # more than one page of the JSON route
    await service.execute(job, Finish(exit_code=0), META)
    code, out, err = await run("logs", "--url", server.url, str(job))
    assert code == 0, err
    assert out == expected(1, 1500) + expected(1512, 12_000)
    assert err == expected(1501, 1511)
    code, out, err = await run("logs", "--url", server.url, "--after", "11990", str(job))
    assert (code, out) == (0, expected(11_991, 12_000))


async def test_logs_url_from_the_environment(
    server: Server, service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await running_job(service)
    await write(service, job, 1, 3)
    monkeypatch.setenv("JOBLEDGER_URL", server.url)
    code, out, err = await run("logs", str(job))  # a running job: what is stored so far
    assert (code, out) == (0, expected(1, 3)), err


async def test_follow_streams_live_lines_until_the_job_ends(
    server: Server, service: JobService
) -> None:
    job = await running_job(service)
    await write(service, job, 1, 100)
    follower = await Follower.start("logs", "-f", "--url", server.url, str(job))
    try:
        assert await follower.until_line(text(100)) == expected(1, 100)
        await write(service, job, 101, 250)
        assert await follower.until_line(text(250)) == expected(1, 250)
        await service.execute(job, Finish(exit_code=0), META)
        code, out, err = await follower.finish()
    finally:
        follower.kill()
    assert code == 0, err
    assert out == expected(1, 250)


async def test_follow_resumes_after_the_server_restarts(
    dsn: str, service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setattr(e2e, "free_port", lambda: port)  # the restarted server takes it again
    first = await asyncio.to_thread(Server, "--database-url", dsn, "--no-scheduler")
    job = await running_job(service)
    await write(service, job, 1, 100)
    follower = await Follower.start("logs", "-f", "--url", first.url, str(job))
    second: Server | None = None
    try:
        await follower.until_line(text(100))
        assert await asyncio.to_thread(first.stop) == 0
        await write(service, job, 101, 200)  # while no server runs
        second = await asyncio.to_thread(Server, "--database-url", dsn, "--no-scheduler")
        await write(service, job, 201, 300)
        await service.execute(job, Finish(exit_code=0), META)
        code, out, err = await follower.finish()
    finally:
        follower.kill()
        if second is not None:
            await asyncio.to_thread(second.stop)
    assert code == 0, err
    assert out == expected(1, 300)  # no gap, no duplicate


@pytest.mark.parametrize("follow", [[], ["-f"]])
async def test_unknown_job_prints_the_servers_message(server: Server, follow: list[str]) -> None:
    code, out, err = await run("logs", *follow, "--url", server.url, MISSING)
    assert code == 1 and out == ""
    assert err.strip() == "jobledger: job not found"
    code, _, err = await run("logs", *follow, "--url", server.url, "not-a-uuid")
    assert code == 1 and "is not a UUID" in err


@pytest.mark.parametrize("follow", [[], ["-f"]])
async def test_unreachable_server_is_a_clear_error(follow: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await run("logs", *follow, "--url", url, MISSING)
    assert code == 1 and out == ""
    assert err.startswith(f"jobledger: cannot reach the server at {url}")
