"""Runs attempts as Docker containers through aiodocker (create + start, never `run`, which
would pull behind our back), labelled so a restarted worker can find and adopt them."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import datetime
from typing import Any, Literal

import aiodocker
import aiohttp
import structlog
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError
from structlog.typing import FilteringBoundLogger

from ..domain.events import FailureReason, Usage
from ..domain.specs import JobSpec
from .dockerlogs import ContainerOutput
from .executor import (
    OUTPUT_DRAIN_SECONDS,
    Attempt,
    BaseExecutor,
    Found,
    JobIO,
    Outcome,
    RunRequest,
    StopReason,
    ended,
    follow,
    start_error,
)
from .output import SHUTDOWN_SECONDS
from .usage import CgroupReader

log = structlog.get_logger(__name__)

LABEL_JOB = "jobledger.job_id"
LABEL_WORKER = "jobledger.worker"
LABEL_ATTEMPT = "jobledger.attempt"

PullPolicy = Literal["never", "missing"]

_MIB = 1024 * 1024
# With Init, a command that cannot be executed no longer fails start(): the init process
# (tini) starts, fails to exec it, says so on stderr and exits 127 (not found) or 126.
_EXEC_FAILED_CODES = (126, 127)
_EXEC_FAILED = re.compile(r"^\[FATAL tini \(\d+\)\] (exec .* failed: .*)$")
_EXEC_FAILED_TAIL = 5
# Docker's "never happened" timestamp (StartedAt of a created container, FinishedAt of a
# running one).
_ZERO_TIME = "0001-01-01T00:00:00Z"


async def docker_available(timeout: float = 2.0) -> bool:  # noqa: ASYNC109
    """Whether a Docker daemon answers within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            docker = aiodocker.Docker()
            try:
                await docker.version()
            finally:
                await docker.close()
    # No socket at all surfaces as ValueError/AssertionError from the constructor.
    except (DockerError, aiohttp.ClientError, OSError, TimeoutError, ValueError, AssertionError):
        return False
    return True


class DockerExecutor(BaseExecutor):
    """Runs each attempt in its own container, limited to the job's cpu and memory."""

    name = "docker"

    def __init__(
        self, docker: aiodocker.Docker | None = None, *, pull_policy: PullPolicy = "missing"
    ) -> None:
        # aiodocker.Docker() opens an aiohttp session: construct this inside a running loop.
        self._owns_client = docker is None
        self._docker = docker if docker is not None else aiodocker.Docker()
        self.pull_policy = pull_policy

    async def start(self, req: RunRequest, io: JobIO | None) -> Attempt | Outcome:
        """Create and start the attempt's container; see `Executor.run`."""
        bound = log.bind(job_id=str(req.job_id), attempt=req.attempt)
        began = time.monotonic()
        try:
            container = await self._create(req, bound)
        except DockerError as e:
            bound.warning("container create failed", error=e.message)
            return _start_error(e, began)
        failed = await _start(container, bound, began)
        if failed is not None:
            return failed
        bound.info("container started", container=container.id)
        return _Container(container, req.spec, bound, began, io)

    async def find(self, worker_id: str) -> list[Found]:
        """Containers labelled with this worker id, running or not."""
        filters = json.dumps({"label": [f"{LABEL_WORKER}={worker_id}"]})
        containers = await self._docker.containers.list(all=True, filters=filters)
        found = []
        for c in containers:
            labels: dict[str, str] = c["Labels"] or {}
            try:
                job_id = uuid.UUID(labels[LABEL_JOB])
                attempt = int(labels[LABEL_ATTEMPT])
            except (KeyError, ValueError):
                log.warning("container with malformed jobledger labels", container=c.id)
                continue
            found.append(
                Found(job_id=job_id, attempt=attempt, ref=c.id, running=c["State"] == "running")
            )
        return found

    async def adopt(
        self, found: Found, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None
    ) -> Outcome:
        """Follow a container a previous life started (or only created) to its end."""
        bound = log.bind(job_id=str(req.job_id), attempt=req.attempt, container=found.ref)
        began = time.monotonic()
        container = self._docker.containers.container(found.ref)
        try:
            info = await container.show()
        except DockerError as e:
            if e.status != 404:
                raise
            bound.warning("adopted container is gone")
            return Outcome(
                failure=FailureReason.WORKER_LOST,
                message=f"container {found.ref[:12]} disappeared while no worker watched it",
            )
        if info["State"]["Status"] == "created":
            # The previous life died between create and start: finish what it began.
            failed = await _start(container, bound, began)
            if failed is not None:
                return failed
        # Docker kept what the container printed while no worker read it: read on from the
        # last line stored, which the sink skips with everything before it.
        since = await io.logs.resume() if io is not None and io.logs is not None else None
        bound.info("container adopted", running=info["State"]["Running"])
        return await follow(_Container(container, req.spec, bound, began, io, since), cancel)

    async def discard(self, found: Found) -> None:
        """Kill (if running) and remove a container no live job owns."""
        container = self._docker.containers.container(found.ref)
        await _remove(container, log.bind(job_id=str(found.job_id), container=found.ref))

    async def close(self) -> None:
        """Close the Docker client if this executor created it."""
        if self._owns_client:
            await self._docker.close()

    async def _create(self, req: RunRequest, bound: FilteringBoundLogger) -> DockerContainer:
        config = container_config(req)
        name = f"jobledger-{req.job_id}-{req.attempt}"
        try:
            return await self._docker.containers.create(config, name=name)
        except DockerError as e:
            if e.status != 404 or self.pull_policy != "missing":
                raise
        bound.info("pulling image", image=req.spec.image)
        try:
            await self._docker.images.pull(req.spec.image)
        except DockerError as e:
            # The registry's error alone (often a DNS failure) does not say which image.
            raise DockerError(
                e.status, f"image {req.spec.image} is not here and pulling it failed: {e.message}"
            ) from e
        return await self._docker.containers.create(config, name=name)


class _Container(Attempt):
    """A started container, with its output copied and its usage sampled while it runs.
    If the task following it is cancelled, the container is left as it is for a restarted
    worker to adopt, its output copied up to that moment."""

    def __init__(
        self,
        container: DockerContainer,
        spec: JobSpec,
        bound: FilteringBoundLogger,
        began: float,
        io: JobIO | None,
        since: datetime | None = None,
    ) -> None:
        super().__init__(spec, bound, began)
        self.container = container
        self.output = None
        if io is not None and io.logs is not None:
            self.output = ContainerOutput(container.docker, container.id, io.logs, bound)
            self.output.start(since)
        self.sampler = None
        if io is not None and io.usage is not None:
            self.sampler = asyncio.create_task(io.usage.follow(CgroupReader(container.id)))

    async def wait(self) -> int | None:
        try:
            status = await self.container.wait()
        except DockerError as e:
            # Removed by someone else under our feet; inspect tells what it can.
            self.log.warning("waiting for container failed", error=e.message)
            return None
        code: int | None = status.get("StatusCode")
        return code

    async def stop(self, grace: int) -> None:
        try:
            # Docker sends SIGTERM (Init forwards it to the command), then SIGKILL after t.
            await self.container.stop(t=grace)
        except DockerError as e:
            if e.status != 404:
                self.log.warning("stopping container failed, killing it", error=e.message)
                await self._kill()

    async def exited(self) -> None:
        if self.sampler is not None:
            self.sampler.cancel()

    async def drain(self) -> None:
        if self.output is not None and not await self.output.wait(OUTPUT_DRAIN_SECONDS):
            self.log.warning("output stream did not end after the attempt exited")

    def abandon(self) -> None:
        if self.output is not None:
            self.output.stop_soon()

    async def release(self) -> None:
        if self.sampler is not None:
            self.sampler.cancel()
        if self.output is not None:
            # After abandon: what was printed until then is read first, so a worker going
            # away stores it (SIGTERM) rather than leave it to its next life.
            await self.output.close(SHUTDOWN_SECONDS)

    async def outcome(self, stopped_for: StopReason | None, exit_code: int | None) -> Outcome:
        """Read the exit from the container, then remove it."""
        inspected, oom_killed, wall = await self._inspect_end()
        exit_code = inspected if inspected is not None else exit_code
        exec_failure = None
        if stopped_for is None and exit_code in _EXEC_FAILED_CODES:
            exec_failure = await self._exec_failure()
        await _remove(self.container, self.log)
        usage = Usage(wall_seconds=wall)
        if exec_failure is not None:
            self.log.warning("command could not be started", error=exec_failure)
            return Outcome(failure=FailureReason.START_ERROR, message=exec_failure, usage=usage)
        self.log.info(
            "container ended",
            exit_code=exit_code,
            oom_killed=oom_killed,
            stopped_for=stopped_for,
            wall_seconds=round(wall, 3),
        )
        if exit_code is None:
            return Outcome(
                failure=FailureReason.WORKER_LOST,
                message="container was removed before its exit code could be read",
                usage=usage,
            )
        return ended(stopped_for, self.spec, exit_code, usage, oom_killed=oom_killed)

    async def _kill(self) -> None:
        try:
            await self.container.kill()
        except DockerError as e:
            if e.status not in (404, 409):  # gone, or not running any more
                self.log.warning("killing container failed", error=e.message)

    async def _inspect_end(self) -> tuple[int | None, bool, float]:
        """Exit code, OOM flag and wall seconds of an exited container."""
        try:
            state = (await self.container.show())["State"]
        except DockerError as e:
            self.log.warning("inspecting ended container failed", error=e.message)
            return None, False, time.monotonic() - self.began
        wall = _seconds_between(state.get("StartedAt"), state.get("FinishedAt"))
        return (
            state.get("ExitCode"),
            bool(state.get("OOMKilled")),
            wall if wall is not None else time.monotonic() - self.began,
        )

    async def _exec_failure(self) -> str | None:
        """The init process's complaint if it could not exec the command, else None."""
        try:
            lines = await self.container.log(stderr=True, tail=_EXEC_FAILED_TAIL)
        except DockerError as e:
            self.log.warning("reading container logs failed", error=e.message)
            return None
        for line in lines:
            if m := _EXEC_FAILED.match(line):
                return m.group(1).strip()
        return None


async def _start(
    container: DockerContainer, bound: FilteringBoundLogger, began: float
) -> Outcome | None:
    """Start a created container; the start error if it failed, the container then removed.
    (Its output is read from Docker's log afterwards, from the first line.)"""
    try:
        await container.start()
    except DockerError as e:
        # Failing here (e.g. a workdir the runtime cannot create) leaves a created
        # container behind.
        bound.warning("container start failed", container=container.id, error=e.message)
        await _remove(container, bound)
        return _start_error(e, began)
    return None


async def _remove(container: DockerContainer, bound: FilteringBoundLogger) -> None:
    try:
        await container.delete(force=True)
    except DockerError as e:
        # 404: already gone; 409: another removal is in progress.
        if e.status not in (404, 409):
            bound.warning("removing container failed", error=e.message)


def container_config(req: RunRequest) -> dict[str, Any]:
    """The Docker Engine create-container body for one attempt."""
    spec = req.spec
    memory = spec.resources.memory_mb * _MIB
    config: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "Labels": {
            LABEL_JOB: str(req.job_id),
            LABEL_WORKER: req.worker_id,
            LABEL_ATTEMPT: str(req.attempt),
        },
        "HostConfig": {
            "NanoCpus": int(spec.resources.cpu * 1e9),
            "Memory": memory,
            "MemorySwap": memory,  # equal to Memory: no swap on top
            # Without an init, the command is PID 1 and ignores SIGTERM: stop would always
            # take the whole grace period and end in SIGKILL.
            "Init": True,
        },
    }
    if spec.command:
        config["Cmd"] = list(spec.command)
    if spec.workdir:
        config["WorkingDir"] = spec.workdir
    return config


def _start_error(e: DockerError, began: float) -> Outcome:
    return start_error(str(e.message) or f"docker error {e.status}", time.monotonic() - began)


def _parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 timestamps carry nanoseconds; Python parses microseconds."""
    if not value or value == _ZERO_TIME:
        return None
    head, _, rest = value.partition(".")
    if rest:
        digits = rest.rstrip("Z")
        zone = "Z"
        for sign in "+-":
            if sign in digits:
                digits, _, offset = digits.partition(sign)
                zone = sign + offset
        value = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    started, finished = _parse_time(start), _parse_time(end)
    if started is None or finished is None or finished < started:
        return None
    return (finished - started).total_seconds()
