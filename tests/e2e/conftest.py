"""The server as a user runs it: `python -m server ...` in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def child_env() -> dict[str, str]:
    """The environment of child processes (read at each start: tests may change it):
    JSON logs, and servers accept the suite's admin token."""
    return {**os.environ, "JOBLEDGER_LOG_FORMAT": "json", "JOBLEDGER_ADMIN_TOKEN": ADMIN_TOKEN}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jobledger(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    env = {**child_env(), "JOBLEDGER_TOKEN": ADMIN_TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "jobledger", *args], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, env=env, check=False, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


#: Every server process started; any still running when its test ends is killed.
_children: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_leftover_servers() -> Iterator[None]:
    yield
    while _children:
        proc = _children.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


async def run_cli(*args: str) -> tuple[int, str, str]:
    """`jobledger ARGS` to completion off the event loop: exit code, stdout, stderr."""
    done = await asyncio.to_thread(jobledger, *args)
    return done.returncode, done.stdout, done.stderr


#: A failsafe against a hung CLI child, never a timing assertion.
FOLLOW_PATIENCE = 60


class Follower:
    """A `jobledger ARGS` child (e.g. `logs -f JOB`) whose stdout the test reads as it
    comes, with the admin token in its environment."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out = ""

    @classmethod
    async def start(cls, *args: str) -> Follower:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jobledger", *args,
            cwd=ROOT, env={**child_env(), "JOBLEDGER_TOKEN": ADMIN_TOKEN},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def until_line(self, last: str) -> str:
        """Stdout so far, once it holds the line `last`."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(FOLLOW_PATIENCE):
            while not self.out.endswith(f"{last}\n"):
                line = await self.proc.stdout.readline()
                assert line, f"follower ended early: {self.out[-300:]!r}"
                self.out += line.decode()
        return self.out

    async def finish(self) -> tuple[int, str, str]:
        async with asyncio.timeout(FOLLOW_PATIENCE):
            rest, err = await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode, self.out + rest.decode(), err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


class Server:
    """A `jobledger serve` process on a free port."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives as long as the server)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobledger", "serve", "--port", str(self.port), *args],
            cwd=ROOT, env=child_env(),
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _children.append(self.proc)
        self.wait_ready()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="jobledger-e2e-"))
    root.chmod(0o755)  # the embedded cluster runs as `postgres` when we are root
    yield root
    subprocess.run(
        ["pkill", "-f", f"postgres -D {root}"], check=False, capture_output=True
    )  # only if a test failed midway
    # (and the secrets key file a server made beside it)
    subprocess.run(["rm", "-rf", str(root), f"{root}-secrets.key"], check=False)


class Worker:
    """A `jobledger worker` child process."""

    def __init__(self, dsn: str, worker_id: str, *args: str) -> None:
        self.worker_id = worker_id
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives as long as the worker)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobledger", "worker", "--database-url", dsn,
             "--worker-id", worker_id, "--heartbeat-interval", "0.5", *args],
            cwd=ROOT, env=child_env(),
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Worker processes started by a test; killed at its end if still running."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop(signal.SIGKILL)


@contextlib.asynccontextmanager
async def serving(*args: str) -> AsyncIterator[Server]:
    """A `jobledger serve ARGS` for the block, stopped after it (unless a test did)."""
    srv = await asyncio.to_thread(Server, *args)
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            await asyncio.to_thread(srv.stop)


async def ok(*args: str) -> str:
    """`jobledger ARGS`'s stdout; it must exit 0."""
    code, out, err = await run_cli(*args)
    assert code == 0, (args, out, err)
    return out
