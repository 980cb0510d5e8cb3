"""What the benchmarks share: a real `jobledger serve` on an embedded PostgreSQL (defaults,
fsync on) in a temporary directory, driven over its public API from this process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from jobledger.cli.startup import DATABASE_NAME
from jobledger.store.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "jobledger-test:latest"
#: The server-wide admin token the benchmark server accepts (a fresh one per run); send it
#: as `Authorization: Bearer` on every /api/v1 request.
ADMIN_TOKEN = secrets.token_urlsafe(32)


def summary(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    """Median, p95, p99, min and max, in milliseconds by default."""
    values = sorted(values)

    def pick(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {
        "median": round(statistics.median(values) * scale, 2),
        "p95": round(pick(0.95) * scale, 2),
        "p99": round(pick(0.99) * scale, 2),
        "min": round(values[0] * scale, 2),
        "max": round(values[-1] * scale, 2),
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class Served(NamedTuple):
    """A running benchmark server."""

    url: str
    #: Its database (the embedded cluster), for loaders and size/WAL measurements.
    dsn: str
    pid: int


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def die_with_parent() -> None:
    """Popen preexec_fn: the child gets SIGTERM when this process dies (Linux), so a bench
    that is killed or crashes leaves no server (and embedded cluster) behind."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


@contextlib.asynccontextmanager
async def server(*args: str, data_dir: Path | None = None) -> AsyncIterator[Served]:
    """Start `jobledger serve` with `args`; yield it; stop it and remove its data (unless
    `data_dir` names a directory to keep, e.g. a loaded log to measure again)."""
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-test-image")], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        raise SystemExit(f"scripts/build-test-image failed: {built.stderr.strip()}")
    data = data_dir or Path(tempfile.mkdtemp(prefix="jobledger-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o755)  # as root the embedded cluster runs as `postgres`
    port = 18080 + os.getpid() % 1000
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobledger", "--log-level", "warning", "serve",
         "--data-dir", str(data), "--port", str(port), *args],
        cwd=ROOT, env={**os.environ, "JOBLEDGER_LOG_FORMAT": "json",
                       "JOBLEDGER_ADMIN_TOKEN": ADMIN_TOKEN},
        preexec_fn=die_with_parent,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if proc.poll() is not None:
                    raise SystemExit(f"the server exited with {proc.returncode}")
                try:
                    async with http.get(f"{url}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        yield Served(url, EmbeddedPostgres(data / "pg").dsn(DATABASE_NAME), proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if data_dir is None:
            subprocess.run(["rm", "-rf", str(data)], check=False)
