"""The Docker half of the test rig: a running engine (started here when we may) and the
offline test image. The suite needs a real engine: without one these fixtures fail, they
never skip."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = "jobledger-test:latest"


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker daemon that answers; scripts/docker-up starts it in the background (left
    running for the next session) when we are root and it is installed but down."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "docker-up")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"no Docker engine: {result.stderr.strip()}")


@pytest.fixture(scope="session")
def test_image(docker_engine: None) -> str:
    """The name of the busybox image the Docker tests run, built if missing."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-test-image")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/build-test-image failed:\n{result.stdout}{result.stderr}")
    return TEST_IMAGE


def containers(label: str) -> list[dict[str, object]]:
    """`docker ps -a` of the containers carrying a label (`key=value`), as JSON objects."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={label}", "--format", "{{json .}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines()]


async def left_behind(label: str, within: float = 30.0) -> list[dict[str, object]]:
    """The containers still carrying `label` after waiting up to `within` seconds for them to
    go: an executor removes a container only once its job's end is recorded (so a crash
    between the two leaves it to be found), so right after the end it may still be there."""
    deadline = asyncio.get_running_loop().time() + within
    while (found := containers(label)) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return found
