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
from aiodocker.stream import Stream
from structlog.typing import FilteringBoundLogger

from ..domain.events import FailureReason, Usage
from .executor import Found, JobIO, Outcome, RunRequest, ended, race_end
from .output import LogSink
from .usage import CgroupReader

log = structlog.get_logger(__name__)

LABEL_JOB = "jobledger.job_id"
LABEL_WORKER = "jobledger.worker"
LABEL_ATTEMPT = "jobledger.attempt"

PullPolicy = Literal["never", "missing"]

_MIB = 1024 * 1024
_MESSAGE_MAX = 1000
# With Init, a command that cannot be executed no longer fails start(): the init process
# (tini) starts, fails to exec it, says so on stderr and exits 127 (not found) or 126.
_EXEC_FAILED_CODES = (126, 127)
_EXEC_FAILED = re.compile(r"^\[FATAL tini \(\d+\)\] (exec .* failed: .*)$")
_EXEC_FAILED_TAIL = 5
# How long the output stream may lag behind the container's exit.
_PUMP_DRAIN_SECONDS = 30.0
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


class DockerExecutor:
    """Runs each attempt in its own container, limited to the job's cpu and memory."""

    name = "docker"

    def __init__(
        self, docker: aiodocker.Docker | None = None, *, pull_policy: PullPolicy = "missing"
    ) -> None:
        # aiodocker.Docker() opens an aiohttp session: construct this inside a running loop.
        self._owns_client = docker is None
        self._docker = docker if docker is not None else aiodocker.Docker()
        self.pull_policy = pull_policy

    async def run(self, req: RunRequest, cancel: asyncio.Event, io: JobIO | None = None) -> Outcome:
        """Create, start and follow one container to its end; see `Executor.run`."""
        bound = log.bind(job_id=str(req.job_id), attempt=req.attempt)
        began = time.monotonic()
        if cancel.is_set():
            return Outcome(cancelled=True)
        try:
            container = await self._create(req, bound)
        except DockerError as e:
            bound.warning("container create failed", error=e.message)
            return _start_error(e, began)
        output = None
        try:
            if io is not None and io.logs is not None:
                # Attached before start: the only way to read stdout and stderr apart, and
                # from the first byte.
                output = container.attach(stdout=True, stderr=True)
                await output.__aenter__()
            await container.start()
        except DockerError as e:
            # Failing here (e.g. a workdir the runtime cannot create) leaves a created
            # container behind.
            bound.warning("container start failed", container=container.id, error=e.message)
            if output is not None:
                await output.close()
            await self._remove(container, bound)
            return _start_error(e, began)
        bound.info("container started", container=container.id)
        return await self._follow(container, req, cancel, began, bound, io, output)

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
        status = info["State"]["Status"]
        output = None
        if io is not None and io.logs is not None:
            io.logs.system(
                "[jobledger: the worker restarted; output printed while it was down is not here]"
            )
            # An attach to a container that has exited never ends (measured): attach only to
            # one that runs, or will once started.
            if status in ("created", "running"):
                output = container.attach(stdout=True, stderr=True)
                await output.__aenter__()
        if status == "created":
            # The previous life died between create and start: finish what it began.
            try:
                await container.start()
            except DockerError as e:
                bound.warning("container start failed", error=e.message)
                if output is not None:
                    await output.close()
                await self._remove(container, bound)
                return _start_error(e, began)
        bound.info("container adopted", running=info["State"]["Running"])
        return await self._follow(container, req, cancel, began, bound, io, output)

    async def discard(self, found: Found) -> None:
        """Kill (if running) and remove a container no live job owns."""
        container = self._docker.containers.container(found.ref)
        await self._remove(container, log.bind(job_id=str(found.job_id), container=found.ref))

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

    async def _follow(
        self,
        container: DockerContainer,
        req: RunRequest,
        cancel: asyncio.Event,
        began: float,
        bound: FilteringBoundLogger,
        io: JobIO | None = None,
        output: Stream | None = None,
    ) -> Outcome:
        """Pump output and samples while `_wait_end` follows the container."""
        pump = None
        if output is not None and io is not None and io.logs is not None:
            pump = asyncio.create_task(_pump(output, io.logs), name=f"pump-{container.id[:12]}")
        sampler = None
        if io is not None and io.usage is not None:
            sampler = asyncio.create_task(io.usage.follow(CgroupReader(container.id)))
        try:
            return await self._wait_end(container, req, cancel, began, bound, pump, sampler)
        finally:
            for task in (pump, sampler):
                if task is not None:
                    task.cancel()
            if output is not None:
                await output.close()

    async def _wait_end(
        self,
        container: DockerContainer,
        req: RunRequest,
        cancel: asyncio.Event,
        began: float,
        bound: FilteringBoundLogger,
        pump: asyncio.Task[None] | None,
        sampler: asyncio.Task[None] | None,
    ) -> Outcome:
        """Wait for exit, cancel or timeout (counted from now); report and remove.

        If the task running this is cancelled, the container is left as it is for a
        restarted worker to adopt."""
        spec = req.spec
        exited = asyncio.ensure_future(container.wait())
        try:
            stopped_for = await race_end(exited, cancel, spec.timeout_seconds)
            if stopped_for is not None:
                bound.info("stopping container", reason=stopped_for)
                await self._stop(container, spec.stop_grace_seconds, bound)
            try:
                status = await exited
                wait_code: int | None = status.get("StatusCode")
            except DockerError as e:
                # Removed by someone else under our feet; inspect below tells what it can.
                bound.warning("waiting for container failed", error=e.message)
                wait_code = None
        finally:
            # A cancelled wait() closes its response when collected (measured: no pooled
            # connection leaks), so cancelling it is safe even when we are cancelled.
            exited.cancel()
        if sampler is not None:
            sampler.cancel()
        if pump is not None:
            # The attach stream ends with the container; all its output is then in the sink.
            try:
                await asyncio.wait_for(pump, _PUMP_DRAIN_SECONDS)
            except TimeoutError:
                bound.warning("output stream did not end after the container exited")
        exit_code, oom_killed, wall = await self._inspect_end(container, began, bound)
        exit_code = exit_code if exit_code is not None else wait_code
        exec_failure = None
        if stopped_for is None and exit_code in _EXEC_FAILED_CODES:
            exec_failure = await self._exec_failure(container, bound)
        await self._remove(container, bound)
        usage = Usage(wall_seconds=wall)
        if exec_failure is not None:
            bound.warning("command could not be started", error=exec_failure)
            return Outcome(failure=FailureReason.START_ERROR, message=exec_failure, usage=usage)
        bound.info(
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
        return ended(stopped_for, spec, exit_code, usage, oom_killed=oom_killed)

    async def _stop(
        self, container: DockerContainer, grace: int, bound: FilteringBoundLogger
    ) -> None:
        try:
            # Docker sends SIGTERM (Init forwards it to the command), then SIGKILL after t.
            await container.stop(t=grace)
        except DockerError as e:
            if e.status != 404:
                bound.warning("stopping container failed, killing it", error=e.message)
                await self._kill(container, bound)

    async def _kill(self, container: DockerContainer, bound: FilteringBoundLogger) -> None:
        try:
            await container.kill()
        except DockerError as e:
            if e.status not in (404, 409):  # gone, or not running any more
                bound.warning("killing container failed", error=e.message)

    async def _inspect_end(
        self, container: DockerContainer, began: float, bound: FilteringBoundLogger
    ) -> tuple[int | None, bool, float]:
        """Exit code, OOM flag and wall seconds of an exited container."""
        try:
            state = (await container.show())["State"]
        except DockerError as e:
            bound.warning("inspecting ended container failed", error=e.message)
            return None, False, time.monotonic() - began
        wall = _seconds_between(state.get("StartedAt"), state.get("FinishedAt"))
        return (
            state.get("ExitCode"),
            bool(state.get("OOMKilled")),
            wall if wall is not None else time.monotonic() - began,
        )

    async def _exec_failure(
        self, container: DockerContainer, bound: FilteringBoundLogger
    ) -> str | None:
        """The init process's complaint if it could not exec the command, else None."""
        try:
            lines = await container.log(stderr=True, tail=_EXEC_FAILED_TAIL)
        except DockerError as e:
            bound.warning("reading container logs failed", error=e.message)
            return None
        for line in lines:
            if m := _EXEC_FAILED.match(line):
                return m.group(1).strip()
        return None

    async def _remove(self, container: DockerContainer, bound: FilteringBoundLogger) -> None:
        try:
            await container.delete(force=True)
        except DockerError as e:
            # 404: already gone; 409: another removal is in progress.
            if e.status not in (404, 409):
                bound.warning("removing container failed", error=e.message)


async def _pump(output: Stream, sink: LogSink) -> None:
    """Copy a container's attached output into the sink until the stream ends."""
    while (msg := await output.read_out()) is not None:
        await sink.write("stderr" if msg.stream == 2 else "stdout", msg.data)


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
    message = str(e.message).strip()
    if len(message) > _MESSAGE_MAX:
        message = message[: _MESSAGE_MAX - 1] + "…"
    return Outcome(
        failure=FailureReason.START_ERROR,
        message=message or f"docker error {e.status}",
        usage=Usage(wall_seconds=time.monotonic() - began),
    )


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
