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
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import asyncpg
import structlog

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
async def server(
    *args: str,
    data_dir: Path | None = None,
    database_url: str | None = None,
    build_image: bool = True,
) -> AsyncIterator[Served]:
    """Start `jobledger serve` with `args`; yield it; stop it and remove its data (unless
    `data_dir` names a directory to keep, e.g. a loaded log to measure again).
    `database_url`: a database of a cluster already running (see `cluster`) instead of the
    server's own embedded one. `build_image`: build the test image first (the no-op executor
    needs none)."""
    shared = os.environ.get(SHARED_CLUSTER)
    if shared and database_url is None and data_dir is None:
        database_url = await create_database(shared)
    if build_image and not os.environ.get(IMAGE_BUILT):
        built = subprocess.run(
            [str(ROOT / "scripts" / "build-test-image")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if built.returncode != 0:
            raise SystemExit(f"scripts/build-test-image failed: {built.stderr.strip()}")
    data = data_dir or Path(tempfile.mkdtemp(prefix="jobledger-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o755)  # as root the embedded cluster runs as `postgres`
    port = 18080 + os.getpid() % 1000
    database = ["--database-url", database_url] if database_url else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobledger", "--log-level", "warning", "serve",
         "--data-dir", str(data), "--port", str(port), *database, *args],
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
        dsn = database_url or EmbeddedPostgres(data / "pg").dsn(DATABASE_NAME)
        yield Served(url, dsn, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if data_dir is None:
            # With the secrets key file `serve` made beside it (cli/startup.py).
            key = data.parent / f"{data.name}-secrets.key"
            subprocess.run(["rm", "-rf", str(data), str(key)], check=False)


# --- One cluster shared by several systems, and what each process spends (issue 18) ---

#: Set by `run.py --quick` for the workloads it starts: the DSN of a running cluster's
#: `postgres` database, in which `server()` makes each server a fresh database instead of
#: starting a cluster of its own; and that the test image is built already.
SHARED_CLUSTER = "JOBLEDGER_BENCH_CLUSTER"
IMAGE_BUILT = "JOBLEDGER_BENCH_IMAGE_BUILT"


async def create_database(postgres_dsn: str, name: str | None = None) -> str:
    """A new, empty database (`name`, replacing one of that name; else a fresh name) in the
    cluster of `postgres_dsn`; its DSN."""
    name = name or f"bench_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urllib.parse.urlsplit(postgres_dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def shared_cluster() -> Iterator[None]:
    """For a smoke run: one embedded cluster and one build of the test image for every
    workload started inside (see `SHARED_CLUSTER`); a full run keeps a cluster per workload,
    as its figures (WAL, CPU of the cluster) need."""
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-test-image")], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        raise SystemExit(f"scripts/build-test-image failed: {built.stderr.strip()}")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # not stdout
    data = Path(tempfile.mkdtemp(prefix="jobledger-bench-"))
    data.chmod(0o755)  # as root the embedded cluster runs as `postgres`
    pg = EmbeddedPostgres(data / "pg")
    lock = pg.attach()
    saved = {k: os.environ.get(k) for k in (SHARED_CLUSTER, IMAGE_BUILT)}
    os.environ[SHARED_CLUSTER] = pg.dsn("postgres")
    os.environ[IMAGE_BUILT] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        pg.detach(lock)
        subprocess.run(["rm", "-rf", str(data)], check=False)


class Cluster(NamedTuple):
    """An embedded PostgreSQL cluster this process started and holds (see `cluster`)."""

    pg: EmbeddedPostgres

    def dsn(self, database: str) -> str:
        return self.pg.dsn(database)

    @property
    def postmaster(self) -> int:
        """The cluster's postmaster pid (first line of postmaster.pid)."""
        return int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])

    async def create_database(self, name: str) -> str:
        """A new, empty database of the cluster; its DSN."""
        return await create_database(self.dsn("postgres"), name)


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[Cluster]:
    """Start an embedded cluster as `jobledger serve` does (the same class and settings:
    defaults, fsync on) in a temporary directory and hold it, so servers started on its
    databases with `server(database_url=...)` come and go while it keeps running; stop it
    and remove it at the end. Its log lines go to stderr: stdout is the report's."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    data = Path(tempfile.mkdtemp(prefix="jobledger-bench-"))
    data.chmod(0o755)  # as root the embedded cluster runs as `postgres`
    pg = EmbeddedPostgres(data / "pg")
    lock = await asyncio.to_thread(pg.attach)
    try:
        yield Cluster(pg)
    finally:
        await asyncio.to_thread(pg.detach, lock)
        subprocess.run(["rm", "-rf", str(data)], check=False)


#: Clock ticks per second of /proc/<pid>/stat's times.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process so far (Linux); `children`: plus that of its children
    it has waited for (a postmaster's exited backends)."""
    f = _stat(pid)
    ticks = int(f[11]) + int(f[12])  # utime, stime
    if children:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime
    return ticks / CLK_TCK


def cluster_cpu_seconds(postmaster: int) -> float:
    """CPU of the whole cluster so far: the postmaster with its reaped children (backends
    that ended) and every live child (backends, checkpointer, WAL writer, ...)."""
    total = cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            f = _stat(int(entry.name))
            if int(f[1]) == postmaster:  # ppid
                total += (int(f[11]) + int(f[12])) / CLK_TCK
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue  # ended meanwhile: counted in the postmaster's cutime once reaped
    return total


async def wal_lsn(conn: asyncpg.Connection) -> int:
    """The cluster's current WAL position in bytes (cluster-wide: measure alone)."""
    return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


class Meter:
    """CPU per process and WAL between `start` and `stop`, per job: the processes named in
    `pids` (e.g. the API server, a worker), the PostgreSQL cluster, and this process (the
    load generator)."""

    def __init__(self, conn: asyncpg.Connection, postmaster: int, pids: dict[str, int]) -> None:
        self.conn, self.postmaster, self.pids = conn, postmaster, pids

    async def _read(self) -> dict[str, float]:
        wal = await wal_lsn(self.conn)
        return {
            "wal": wal,
            "postgres": cluster_cpu_seconds(self.postmaster),
            "load_generator": time.process_time(),
            **{name: cpu_seconds(pid) for name, pid in self.pids.items()},
        }

    async def start(self) -> None:
        self.before = await self._read()

    async def stop(self, jobs: int) -> dict[str, Any]:
        """Per job since `start`: CPU ms of each process and WAL bytes."""
        after = await self._read()
        diff = {k: after[k] - self.before[k] for k in after}
        return {
            "cpu_ms_per_job": {k: round(v * 1000 / jobs, 4) for k, v in diff.items() if k != "wal"},
            "wal_bytes_per_job": round(diff["wal"] / jobs),
        }
