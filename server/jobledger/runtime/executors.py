"""Choosing an executor by name: `docker`, `process`, `noop`, or `auto` (Docker when the
daemon answers, else the process executor with a loud warning)."""

from __future__ import annotations

import structlog

from .executor import Executor
from .noop import NoopExecutor
from .process import ProcessExecutor

log = structlog.get_logger(__name__)

EXECUTORS = ("auto", "docker", "process", "noop")


class ExecutorUnavailable(RuntimeError):
    """The executor asked for cannot run here."""


async def make_executor(kind: str, *, noop_seconds: float = 0.0) -> Executor:
    """An executor of the given kind, ready to run jobs; the log says which one `kind`
    chose and what it runs on (for Docker: the engine's address and version).
    `noop_seconds`: how long each attempt of the `noop` executor lasts."""
    executor = await _choose(kind, noop_seconds)
    try:
        about = await executor.describe()
    except Exception as exc:  # only a log line: the scheduler finds out soon enough
        about = {"executor": executor.name, "describe_error": repr(exc)}
    log.info("executor chosen", asked=kind, **about)
    return executor


async def _choose(kind: str, noop_seconds: float) -> Executor:
    if kind == "noop":
        return NoopExecutor(noop_seconds)
    if kind == "process":
        return ProcessExecutor()
    from .docker import DockerExecutor, docker_available

    if await docker_available():
        return DockerExecutor()
    if kind == "docker":
        raise ExecutorUnavailable(
            "the Docker engine does not answer (is dockerd running? is DOCKER_HOST right?)"
        )
    log.warning(
        "NO DOCKER ENGINE: falling back to the process executor. Jobs run as local processes "
        "of this user, without isolation and without CPU/memory limits. "
        "Start Docker or pass --executor process to silence this."
    )
    return ProcessExecutor()
