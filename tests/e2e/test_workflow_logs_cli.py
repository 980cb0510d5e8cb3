"""`jobledger workflows logs [-f] RUN` as a user runs it against `jobledger serve` with the
process executor (real processes print the lines; the server's own workflow runtime moves
the run): every step's lines once, prefixed by its step, live across steps, and the exit
code by the run's outcome."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import conftest as e2e
from tests.e2e.conftest import Follower, Server, Worker, free_port, serving
from tests.e2e.conftest import run_cli as run

MISSING = "5b0c1d4e-0000-4000-8000-000000000000"


@pytest.fixture
async def server(dsn: str) -> AsyncIterator[Server]:
    args = ("--database-url", dsn, "--executor", "process", "--worker-id", "wf-logs")
    async with serving(*args) as srv:
        yield srv


def step(name: str, script: str, *needs: str) -> dict[str, Any]:
    return {"name": name, "needs": list(needs),
            "spec": {"image": "busybox:latest", "command": ["sh", "-c", script]}}  # fmt: skip


def counted(name: str, n: int) -> str:
    """A script printing `NAME 1` .. `NAME n`."""
    return f'for i in $(seq 1 {n}); do echo "{name} $i"; done'


async def submit(url: str, tmp_path: Path, steps: list[dict[str, Any]]) -> str:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"steps": steps}))
    code, out, err = await run("workflows", "submit", str(path), "--json", "--url", url)
    assert code == 0, err
    return str(json.loads(out)["id"])


def of_step(out: str, prefix: str) -> list[str]:
    return [line[len(prefix) :] for line in out.splitlines() if line.startswith(prefix)]


async def test_follow_prints_every_steps_lines_once_then_the_stored_logs(
    server: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # extract prints one line, then waits for the test: the follower must have shown that
    # line before transform's job exists, and must pick transform up when it appears.
    extract = f"echo 'extract 0'; echo oops >&2; while [ ! -e {gate} ]; do sleep 0.05; done; "
    steps = [step("extract", extract + counted("extract", 300)),
             step("transform", counted("transform", 200), "extract"),
             step("load", counted("load", 3), "transform")]  # fmt: skip
    run_id = await submit(server.url, tmp_path, steps)
    follower = await Follower.start("workflows", "logs", "-f", "--url", server.url, run_id)
    try:
        await follower.until_line("extract   | extract 0")
        gate.touch()
        code, out, err = await follower.finish()
    finally:
        follower.kill()
    assert code == 0, (err, out[-500:])
    assert of_step(out, "extract   | ") == [f"extract {i}" for i in range(301)]
    assert of_step(out, "transform | ") == [f"transform {i}" for i in range(1, 201)]
    assert of_step(out, "load      | ") == [f"load {i}" for i in range(1, 4)]
    assert len(out.splitlines()) == 301 + 200 + 3  # nothing else, nothing twice
    assert err == "extract   | oops\n"
    # After the end, without -f: the same lines, step by step in start order.
    code, stored, err = await run("workflows", "logs", "--url", server.url, run_id)
    assert code == 0 and err == "extract   | oops\n", err
    assert stored == out  # a chain: the live order is the start order
    code, raw, err = await run("workflows", "logs", "--json", "--url", server.url, run_id)
    assert code == 0, err
    lines = [json.loads(line) for line in raw.splitlines()]
    assert len(lines) == 301 + 1 + 200 + 3  # stderr lines too, told apart by `stream`
    assert lines[1] == {**lines[1], "step": "extract", "seq": 2, "stream": "stderr",
                        "text": "oops"}  # fmt: skip
    assert {line["step"] for line in lines} == {"extract", "transform", "load"}
    assert len({line["job_id"] for line in lines}) == 3


async def test_a_failed_or_cancelled_run_exits_1_and_an_unknown_run_is_named(
    server: Server, tmp_path: Path
) -> None:
    url = ("--url", server.url)
    failed = await submit(server.url, tmp_path, [
        step("a", "echo one; exit 3"), step("b", "echo never", "a")])  # fmt: skip
    code, out, err = await run("workflows", "logs", "-f", *url, failed)
    assert (code, out) == (1, "a | one\n"), err
    assert f"jobledger: workflow run {failed} failed: a failed (exit code 3)\n" in err, err
    gate = tmp_path / "never"
    waiting = f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done"
    cancelled = await submit(server.url, tmp_path, [step("slow", waiting)])
    follower = await Follower.start("workflows", "logs", "-f", "--url", server.url, cancelled)
    try:
        await follower.until_line("slow | started")
        code, _, err = await run("workflows", "cancel", *url, cancelled)
        assert code == 0, err
        code, out, err = await follower.finish()
    finally:
        follower.kill()
    assert (code, out) == (1, "slow | started\n"), err
    assert f"jobledger: workflow run {cancelled} cancelled: slow was cancelled\n" in err, err
    for args in (("-f",), ()):
        code, out, err = await run("workflows", "logs", *args, *url, MISSING)
        assert (code, out) == (1, ""), err
        assert err == "jobledger: workflow run not found\n", err


async def test_follow_resumes_after_the_api_server_restarts(
    dsn: str, tmp_path: Path, workers: list[Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setattr(e2e, "free_port", lambda: port)  # the restarted server takes it again
    # The API alone restarts; a worker runs the steps (and moves the run) meanwhile.
    first = await asyncio.to_thread(Server, "--database-url", dsn, "--no-scheduler")
    workers.append(await asyncio.to_thread(Worker, dsn, "wf-logs-w", "--executor", "process"))
    gate = tmp_path / "gate"
    extract = f"echo 'extract 0'; while [ ! -e {gate} ]; do sleep 0.05; done; "
    run_id = await submit(first.url, tmp_path, [
        step("extract", extract + counted("extract", 100)),
        step("load", counted("load", 100), "extract"),
    ])  # fmt: skip
    follower = await Follower.start("workflows", "logs", "-f", "--url", first.url, run_id)
    second: Server | None = None
    try:
        await follower.until_line("extract | extract 0")
        assert await asyncio.to_thread(first.stop) == 0
        gate.touch()  # extract goes on, and load may start, while no server answers
        second = await asyncio.to_thread(Server, "--database-url", dsn, "--no-scheduler")
        code, out, err = await follower.finish()
    finally:
        follower.kill()
        if second is not None:
            await asyncio.to_thread(second.stop)
    assert code == 0, err
    assert out == "".join(f"extract | extract {i}\n" for i in range(101)) + "".join(
        f"load    | load {i}\n" for i in range(1, 101)
    )  # no gap, no duplicate
