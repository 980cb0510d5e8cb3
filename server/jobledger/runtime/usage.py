"""CPU and memory of a running container over time, read from its cgroup files.

Reading the files costs microseconds and holds no connection, unlike Docker's stats stream
(which never ends on its own and leaks a pooled connection when abandoned). It needs the
worker on the Docker host: cgroup v1 with the cgroupfs driver (`/sys/fs/cgroup/cpuacct/
docker/ID`) or cgroup v2 with systemd (`/sys/fs/cgroup/system.slice/docker-ID.scope`).
Where neither exists, no samples are recorded and usage keeps only wall time."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog

from ..domain.events import Usage
from ..store.db import DB_ERRORS
from ..store.logs import UsageSample, append_usage_samples

log = structlog.get_logger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Counters:
    """One reading: cumulative CPU nanoseconds, current and peak memory bytes."""

    def __init__(self, cpu_ns: int, memory: int, peak: int) -> None:
        self.cpu_ns = cpu_ns
        self.memory = memory
        self.peak = peak


class CgroupReader:
    """Reads one container's counters; `read` returns None once the cgroup is gone."""

    def __init__(self, container_id: str, root: Path = CGROUP_ROOT) -> None:
        v1_cpu = root / "cpuacct" / "docker" / container_id
        v2 = root / "system.slice" / f"docker-{container_id}.scope"
        self.v1 = v1_cpu.is_dir()
        self.cpu_dir = v1_cpu if self.v1 else v2
        self.mem_dir = root / "memory" / "docker" / container_id if self.v1 else v2

    @property
    def available(self) -> bool:
        return self.cpu_dir.is_dir()

    def read(self) -> Counters | None:
        try:
            if self.v1:
                return Counters(
                    int((self.cpu_dir / "cpuacct.usage").read_text()),
                    int((self.mem_dir / "memory.usage_in_bytes").read_text()),
                    int((self.mem_dir / "memory.max_usage_in_bytes").read_text()),
                )
            stat = dict(
                line.split() for line in (self.cpu_dir / "cpu.stat").read_text().splitlines()
            )
            memory = int((self.mem_dir / "memory.current").read_text())
            peak_file = self.mem_dir / "memory.peak"
            peak = int(peak_file.read_text()) if peak_file.exists() else memory
            return Counters(int(stat["usage_usec"]) * 1000, memory, peak)
        except (OSError, ValueError, KeyError):
            return None


class UsageRecorder:
    """Samples one attempt every `interval` seconds into `job_usage_samples` and keeps the
    totals for the attempt's usage summary."""

    def __init__(
        self, pool: asyncpg.Pool, job_id: uuid.UUID, attempt: int, interval: float = 1.0
    ) -> None:
        self.pool = pool
        self.job_id = job_id
        self.attempt = attempt
        self.interval = interval
        self.cpu_seconds = 0.0
        self.peak_memory = 0

    async def follow(self, reader: CgroupReader) -> None:
        """Sample until cancelled or the cgroup disappears."""
        if not reader.available:
            log.info("no cgroup files to sample", job_id=str(self.job_id))
            return
        last: Counters | None = None
        last_at = time.monotonic()
        while (now := reader.read()) is not None:
            at = time.monotonic()
            cpu_percent = 0.0
            if last is not None and at > last_at:
                cpu_percent = (now.cpu_ns - last.cpu_ns) / 1e9 / (at - last_at) * 100
            self.cpu_seconds = now.cpu_ns / 1e9
            self.peak_memory = max(self.peak_memory, now.peak, now.memory)
            sample = UsageSample(
                sampled_at=datetime.now(UTC),
                cpu_percent=round(max(cpu_percent, 0.0), 2),
                memory_bytes=now.memory,
                attempt=self.attempt,
            )
            try:
                await append_usage_samples(self.pool, self.job_id, self.attempt, [sample])
            except DB_ERRORS as exc:  # the database is away: this sample is lost, not the job
                log.warning("usage sample not stored", job_id=str(self.job_id), error=str(exc))
            last, last_at = now, at
            await asyncio.sleep(self.interval)

    def summary(self, wall_seconds: float) -> Usage:
        """The attempt's usage as its terminal event records it."""
        return Usage(
            wall_seconds=wall_seconds,
            cpu_seconds=round(self.cpu_seconds, 6),
            peak_memory_bytes=self.peak_memory,
        )
