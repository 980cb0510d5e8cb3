"""Runs attempts as Docker containers through aiodocker (create + start, never `run`, which
would pull behind our back), labelled so a restarted worker can find and adopt them."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io as _io
import json
import posixpath
import re
import tarfile
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any, Literal

import aiodocker
import aiohttp
import msgspec
import structlog
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError
from structlog.typing import FilteringBoundLogger

from ..domain.events import FailureReason, Usage
from ..domain.specs import JobSpec
from ..domain.workflows import INPUTS_ENV, INPUTS_PATH, MAX_OUTPUT_BYTES, OUTPUT_ENV, OUTPUT_PATH
from .dockerlogs import ContainerOutput
from .executor import (
    OUTPUT_DRAIN_SECONDS,
    Attempt,
    BaseExecutor,
    EngineUnavailable,
    Found,
    FoundOutput,
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
#: aiodocker's status for "cannot connect to the Docker engine".
_NO_CONNECTION = 900
#: How long the engine may take to answer a ping before it counts as not answering.
_PING_SECONDS = 2.0
#: How often a follower that lost the engine asks whether it is back.
_ENGINE_POLL_SECONDS = 0.5
#: How many times an attempt is tried again after a 5xx from an engine that still answers
#: (a daemon shutting down answers for seconds while failing creates and starts) before the
#: error counts as the job's (e.g. a runtime that cannot set up its workdir).
_ENGINE_TROUBLE_TRIES = 5
#: What talking to an engine that went away raises (besides a DockerError of status 900):
#: a response cut mid-read, a timeout.
_CONNECTION_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
#: The header of an archive answer that describes the path (base64 JSON: name, size, mode).
_PATH_STAT = "X-Docker-Container-Path-Stat"


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


async def _answers(docker: aiodocker.Docker) -> bool:
    """Whether the engine behind a client answers now (its version: a cheap call)."""
    try:
        async with asyncio.timeout(_PING_SECONDS):
            await docker.version()
    except (DockerError, *_CONNECTION_ERRORS):
        return False
    return True


async def _engine_back(docker: aiodocker.Docker) -> None:
    """Wait until the engine answers again."""
    while True:
        if await _answers(docker):
            return
        await asyncio.sleep(_ENGINE_POLL_SECONDS)


class DockerExecutor(BaseExecutor):
    """Runs each attempt in its own container, limited to the job's cpu and memory."""

    name = "docker"

    def __init__(
        self,
        docker: aiodocker.Docker | None = None,
        *,
        pull_policy: PullPolicy = "missing",
        network_mode: str | None = None,
    ) -> None:
        """`docker`: a client of the engine to use (default: DOCKER_HOST's, or the local
        socket); `network_mode`: the containers' HostConfig.NetworkMode (default: the
        engine's, its bridge)."""
        # aiodocker.Docker() opens an aiohttp session: construct this inside a running loop.
        self._owns_client = docker is None
        self._docker = docker if docker is not None else aiodocker.Docker()
        self.pull_policy = pull_policy
        self.network_mode = network_mode
        #: 5xx answers met so far per (job, attempt) still trying to start.
        self._troubles: Counter[tuple[uuid.UUID, int]] = Counter()

    async def start(self, req: RunRequest, io: JobIO | None) -> Attempt | Outcome:
        """Create and start the attempt's container; see `Executor.run`. Raises
        `EngineUnavailable` if the engine does not answer: then nothing ran, and a later try
        of the same attempt picks up the container this one may have created."""
        bound = log.bind(job_id=str(req.job_id), attempt=req.attempt)
        began = time.monotonic()
        key = (req.job_id, req.attempt)
        try:
            container, earlier = await self._create(req, bound)
        except DockerError as e:
            # A pull the registry refused is the job's image's problem, whatever the status.
            if e.status == _NO_CONNECTION or (
                not isinstance(e, _PullFailed) and await self._engine_fault(e, key)
            ):
                raise EngineUnavailable(f"docker: {e.message}") from e
            bound.warning("container create failed", error=e.message)
            self._troubles.pop(key, None)
            return _start_error(e, began)
        except _CONNECTION_ERRORS as e:
            raise EngineUnavailable(f"docker: {e!r}") from e
        if earlier in (None, "created"):
            try:
                # Its inputs before it starts, through the archive API: no bind mount, so a
                # worker in a container works the same.
                await _put_inputs(container, req)
                await container.start()
            except _CONNECTION_ERRORS as e:
                # The container is left for the next try to find by its name.
                raise EngineUnavailable(f"docker: {e!r}") from e
            except DockerError as e:
                engine = await self._engine_fault(e, key)
                if e.status != _NO_CONNECTION:
                    # Left half set up by the runtime ("task already exists" after the
                    # engine went away mid-start), or the job's error: not to be reused.
                    await _remove(container, bound)
                if engine:
                    raise EngineUnavailable(f"docker: {e.message}") from e
                bound.warning("container start failed", container=container.id, error=e.message)
                self._troubles.pop(key, None)
                return _start_error(e, began)
            bound.info("container started", container=container.id)
        # Else an earlier try started it but lost the answer: follow it, never start it
        # twice. (Its output is read from Docker's log, from the first line.)
        self._troubles.pop(key, None)
        return _Container(self._docker, container, req.spec, bound, began, io)

    async def _engine_fault(self, e: DockerError, key: tuple[uuid.UUID, int]) -> bool:
        """Whether an error at create/start is the engine's, not the job's: no connection,
        a 5xx from an engine that then does not answer, or one of the first 5xx answers of a
        daemon that still answers (while shutting down, it does for seconds)."""
        if e.status == _NO_CONNECTION:
            return True
        if e.status < 500:
            return False
        if not await _answers(self._docker):
            return True
        self._troubles[key] += 1
        return self._troubles[key] <= _ENGINE_TROUBLE_TRIES

    async def available(self) -> bool:
        """Whether the Docker engine answers a ping."""
        return await _answers(self._docker)

    async def describe(self) -> dict[str, str]:
        """The engine this executor talks to: where, which version."""
        version = await self._docker.version()
        return {
            "executor": self.name,
            "docker_host": str(self._docker.docker_host),
            "engine": f"Docker Engine {version.get('Version')} (API {version.get('ApiVersion')})",
        }

    async def find_any(self) -> list[Found]:
        """Containers labelled with any job id, of any worker."""
        return await self._labelled(LABEL_JOB)

    async def find(self, worker_id: str) -> list[Found]:
        """Containers labelled with this worker id, running or not."""
        return await self._labelled(f"{LABEL_WORKER}={worker_id}")

    async def _labelled(self, label: str) -> list[Found]:
        filters = json.dumps({"label": [label]})
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
        except _CONNECTION_ERRORS as e:
            raise EngineUnavailable(f"docker: {e!r}") from e
        except DockerError as e:
            if e.status == _NO_CONNECTION:
                raise EngineUnavailable(f"docker: {e.message}") from e
            if e.status != 404:
                raise
            bound.warning("adopted container is gone")
            return Outcome(
                failure=FailureReason.WORKER_LOST,
                message=f"container {found.ref[:12]} disappeared while no worker watched it",
            )
        if info["State"]["Status"] == "created":
            # The previous life died between create and start: finish what it began (its
            # inputs too: it may have died before putting them).
            try:
                await _put_inputs(container, req)
                await container.start()
            except _CONNECTION_ERRORS as e:
                raise EngineUnavailable(f"docker: {e!r}") from e
            except DockerError as e:
                if e.status == _NO_CONNECTION:
                    raise EngineUnavailable(f"docker: {e.message}") from e
                bound.warning("container start failed", error=e.message)
                await _remove(container, bound)
                return _start_error(e, began)
        # Docker kept what the container printed while no worker read it: read on from the
        # last line stored, which the sink skips with everything before it.
        since = await io.logs.resume() if io is not None and io.logs is not None else None
        bound.info("container adopted", running=info["State"]["Running"])
        attempt = _Container(self._docker, container, req.spec, bound, began, io, since)
        return await follow(attempt, cancel, io)

    async def discard(self, found: Found) -> None:
        """Kill (if running) and remove a container no live job owns."""
        container = self._docker.containers.container(found.ref)
        await _remove(container, log.bind(job_id=str(found.job_id), container=found.ref))

    async def close(self) -> None:
        """Close the Docker client if this executor created it."""
        if self._owns_client:
            await self._docker.close()

    async def _create(
        self, req: RunRequest, bound: FilteringBoundLogger
    ) -> tuple[DockerContainer, str | None]:
        """The attempt's container, and None if made here, else the status of the one an
        earlier try of this attempt made (the name is the attempt's)."""
        config = container_config(req, self.network_mode)
        name = f"jobledger-{req.job_id}-{req.attempt}"
        try:
            return await self._docker.containers.create(config, name=name), None
        except DockerError as e:
            if e.status == 409:
                existing = self._docker.containers.container(name)
                status: str = (await existing.show())["State"]["Status"]
                bound.info("container of an earlier try is there", status=status)
                return existing, status
            if e.status != 404 or self.pull_policy != "missing":
                raise
        bound.info("pulling image", image=req.spec.image)
        try:
            await self._docker.images.pull(req.spec.image)
        except DockerError as e:
            # The registry's error alone (often a DNS failure) does not say which image.
            raise _PullFailed(
                e.status, f"image {req.spec.image} is not here and pulling it failed: {e.message}"
            ) from e
        return await self._docker.containers.create(config, name=name), None


class _PullFailed(DockerError):
    """The job's image is not here and could not be pulled."""


class _Container(Attempt):
    """A started container, with its output copied and its usage sampled while it runs.
    If the task following it is cancelled, the container is left as it is for a restarted
    worker to adopt, its output copied up to that moment."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        container: DockerContainer,
        spec: JobSpec,
        bound: FilteringBoundLogger,
        began: float,
        io: JobIO | None,
        since: datetime | None = None,
    ) -> None:
        super().__init__(spec, bound, began)
        self.docker = docker
        self.container = container
        self.io = io
        self.output: ContainerOutput | None = None
        if io is not None and io.logs is not None:
            self.output = ContainerOutput(docker, container.id, io.logs, bound)
            self.output.start(since)
        self.sampler = None
        #: The read of its output, begun as soon as it exits: it overlaps the draining of
        #: its log and the inspect of its end (each waits a while on a container just ended).
        self.reading: asyncio.Task[FoundOutput | None] | None = None
        if io is not None and io.usage is not None:
            self.sampler = asyncio.create_task(io.usage.follow(CgroupReader(container.id)))

    async def wait(self) -> int | None:
        """Its exit code; across a restart of the engine too (with live-restore its
        containers keep running, and this follows them again once it answers)."""
        while True:
            try:
                status = await self.container.wait()
            except DockerError as e:
                if e.status != _NO_CONNECTION:
                    # Removed by someone else under our feet; inspect tells what it can.
                    self.log.warning("waiting for container failed", error=e.message)
                    return None
                error = e.message
            except _CONNECTION_ERRORS as e:
                error = repr(e)
            else:
                code: int | None = status.get("StatusCode")
                return code
            self.log.warning("lost the Docker engine; waiting for it to come back", error=error)
            await _engine_back(self.docker)
            self.log.info("the Docker engine is back")
            await self._resume_output()

    async def _resume_output(self) -> None:
        """Read the container's log again after the engine came back: the reading ended
        with the engine; the new one goes on after the last line the old one gave."""
        old = self.output
        if old is None or self.io is None or self.io.logs is None:
            return
        await old.close()
        self.output = ContainerOutput(self.docker, self.container.id, self.io.logs, self.log)
        self.output.resume_after(old.last)

    async def drain(self) -> None:
        if self.output is not None and not await self.output.wait(OUTPUT_DRAIN_SECONDS):
            self.log.warning("output stream did not end after the attempt exited")

    def abandon(self) -> None:
        if self.output is not None:
            self.output.stop_soon()
        if self.reading is not None:
            # The next life reads the output again when it adopts the container.
            self.reading.cancel()

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
        self.reading = asyncio.create_task(self._read_output())

    async def release(self) -> None:
        if self.sampler is not None:
            self.sampler.cancel()
        if self.output is not None:
            # After abandon: what was printed until then is read first, so a worker going
            # away stores it (SIGTERM) rather than leave it to its next life.
            await self.output.close(SHUTDOWN_SECONDS)

    async def outcome(self, stopped_for: StopReason | None, exit_code: int | None) -> Outcome:
        """Read the exit from the container (removed only once it is recorded: `remove`)."""
        inspected, oom_killed, wall = await self._inspect_end()
        exit_code = inspected if inspected is not None else exit_code
        exec_failure = None
        if stopped_for is None and exit_code in _EXEC_FAILED_CODES:
            exec_failure = await self._exec_failure()
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

    async def remove(self) -> None:
        await _remove(self.container, self.log)

    async def read_output(self) -> FoundOutput | None:
        if self.reading is None:
            return await self._read_output()
        return await self.reading

    async def _read_output(self) -> FoundOutput | None:
        """The file at `OUTPUT_PATH` in the exited container, through the archive API. The
        answer's stat header tells its size before its body is read: the body of one larger
        than `MAX_OUTPUT_BYTES` is never read (its response is closed unread)."""
        try:
            async with self.docker._query(
                f"containers/{self.container.id}/archive",
                method="GET",
                params={"path": OUTPUT_PATH},
            ) as response:
                stat = json.loads(base64.b64decode(response.headers[_PATH_STAT]))
                size = int(stat["size"])
                if size > MAX_OUTPUT_BYTES:
                    # Unread, its connection would go back to the pool mid-body: close it.
                    response.close()
                    return FoundOutput(size, None)
                body = await response.read()
            with tarfile.open(fileobj=_io.BytesIO(body), mode="r:") as archive:
                member = archive.next()
                if member is None or not member.isfile():  # a link, a directory
                    self.log.warning("output path is not a file", path=OUTPUT_PATH)
                    return None
                reader = archive.extractfile(member)
                data = reader.read(MAX_OUTPUT_BYTES + 1) if reader is not None else b""
        except DockerError as e:
            if e.status != 404:  # 404: the job wrote none
                self.log.warning("reading the output failed", error=e.message)
            return None
        except (*_CONNECTION_ERRORS, ValueError, KeyError, binascii.Error, tarfile.TarError) as e:
            self.log.warning("reading the output failed", error=repr(e))
            return None
        return FoundOutput(len(data), data)

    async def _kill(self) -> None:
        try:
            await self.container.kill()
        except DockerError as e:
            if e.status not in (404, 409):  # gone, or not running any more
                self.log.warning("killing container failed", error=e.message)

    async def _inspect_end(self) -> tuple[int | None, bool, float]:
        """Exit code, OOM flag and wall seconds of an exited container."""
        try:
            info = await self.container.show()
        except (DockerError, *_CONNECTION_ERRORS) as e:
            self.log.warning("inspecting ended container failed", error=str(e))
            return None, False, time.monotonic() - self.began
        state = info["State"]
        # From its creation, not StartedAt: its cgroup (whose CPU time is the usage's
        # cpu_seconds) exists, and runs the runtime's set-up, before Docker calls it started.
        wall = _seconds_between(info.get("Created"), state.get("FinishedAt"))
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


async def _remove(container: DockerContainer, bound: FilteringBoundLogger) -> None:
    try:
        await container.delete(force=True)
    except DockerError as e:
        # 404: already gone; 409: another removal is in progress.
        if e.status not in (404, 409):
            bound.warning("removing container failed", error=e.message)


async def _put_inputs(container: DockerContainer, req: RunRequest) -> None:
    """Copy the job's inputs into its created container, with the directory of
    `OUTPUT_PATH`, if it has inputs or is expected to write an output (a workflow step).
    Only then: a put into a container not running costs a mount of its file system
    (measured 50-110 ms, a third of a whole short container's life), too much for every
    job. Another job that writes an output creates the directory (`mkdir -p /jobledger`)
    unless its image has it."""
    if req.inputs or req.writes_output:
        await container.put_archive("/", io_archive(req))


def io_archive(req: RunRequest) -> bytes:
    """The tar put into a created container at /: the directories of `OUTPUT_PATH` and
    `INPUTS_PATH`, writable by any user the image runs as, and the job's inputs."""
    buf = _io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in sorted({posixpath.dirname(OUTPUT_PATH), posixpath.dirname(INPUTS_PATH)}):
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777  # like /tmp: anyone may write, only the owner remove
            tar.addfile(info)
        if req.inputs:
            data = msgspec.json.encode(req.inputs)
            info = tarfile.TarInfo(INPUTS_PATH.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, _io.BytesIO(data))
    return buf.getvalue()


def io_environment(req: RunRequest) -> dict[str, str]:
    """The variables naming the attempt's output path, and its inputs' if it has any."""
    env = {OUTPUT_ENV: OUTPUT_PATH}
    if req.inputs:
        env[INPUTS_ENV] = INPUTS_PATH
    return env


def container_config(req: RunRequest, network_mode: str | None = None) -> dict[str, Any]:
    """The Docker Engine create-container body for one attempt."""
    spec = req.spec
    memory = spec.resources.memory_mb * _MIB
    env = req.environment() | io_environment(req)
    config: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{k}={v}" for k, v in env.items()],
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
    if network_mode is not None:
        config["HostConfig"]["NetworkMode"] = network_mode
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
