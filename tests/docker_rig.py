"""The Docker half of the test rig: a running engine (started here when we may) and the
offline test image. The suite needs a real engine: without one these fixtures fail, they
never skip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = "jobledger-test:latest"
DOCKERD_LOG = Path("/tmp/jobledger-dockerd.log")
STARTUP_SECONDS = 60.0


def _engine_answers() -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker daemon that answers; started in the background (and left running for the
    next session) when we are root and it is installed but down."""
    if shutil.which("docker") is None:
        pytest.fail("the Docker CLI is missing: run scripts/test, or apt-get install docker.io")
    if _engine_answers():
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        pytest.fail(
            "Docker is not running and cannot be started from here "
            f"({'dockerd is not installed' if dockerd is None else 'not root'}): "
            "start dockerd, the Docker tests need a real engine"
        )
    with DOCKERD_LOG.open("ab") as out:
        # Its own session: the daemon outlives this test run, the next one reuses it.
        proc = subprocess.Popen(
            [dockerd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if _engine_answers():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    tail = "\n".join(DOCKERD_LOG.read_text(errors="replace").splitlines()[-20:])
    pytest.fail(f"dockerd did not come up (exit {proc.poll()}); {DOCKERD_LOG}:\n{tail}")


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
