"""A Docker daemon of the test's own, which the test may stop, start and restart (with or
without live-restore) without touching the machine's engine the rest of the suite uses.

It has its own socket, data root, exec root and pid file, no bridge and no iptables rules
(so jobs there run with NetworkMode none), and the test image loaded from the machine's
engine. Starting one takes about half a second (loading the image a third more), so it is
made per test; it is always stopped, and everything it left removed, at the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from tests.docker_rig import TEST_IMAGE

#: Jobs on the rig's engine: it has no bridge.
NETWORK_MODE = "none"
_STARTUP_SECONDS = 30.0
_SHUTDOWN_SECONDS = 30.0


class OwnDocker:
    """One dockerd; `url` (unix://...) stays valid across restarts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.pidfile = root / "docker.pid"
        self.log = root / "dockerd.log"
        self.live_restore = False
        self._proc: subprocess.Popen[bytes] | None = None

    def docker(self, *args: str, input: bytes | None = None) -> str:
        """Run the docker CLI against this daemon; its stdout."""
        return subprocess.run(
            ["docker", "-H", self.url, *args],
            input=input, capture_output=True, check=True, timeout=60,
        ).stdout.decode()  # fmt: skip

    def _answers(self) -> bool:
        return (
            subprocess.run(
                ["docker", "-H", self.url, "version"], capture_output=True, timeout=10
            ).returncode
            == 0
        )

    def _start(self) -> None:
        # NOTE from the lead: in a network namespace of its own. A dockerd started with
        # --bridge=none on the host deletes the host's docker0 at start, which breaks
        # every container start of the machine's main daemon (and of every other test run).
        args = [
            "unshare", "--net", "--",
            "dockerd", "-H", self.url,
            "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.pidfile), "--bridge=none", "--iptables=false",
        ]  # fmt: skip
        if self.live_restore:
            args.append("--live-restore")
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not come up:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_SHUTDOWN_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        """SIGTERM, and wait until it has gone: without live-restore it stops its
        containers first (SIGTERM to each, as `docker stop`)."""
        await asyncio.to_thread(self._stop)

    async def restart(self, down_seconds: float = 0.0) -> None:
        await self.stop()
        if down_seconds:
            await asyncio.sleep(down_seconds)
        await self.start()

    def client(self) -> aiodocker.Docker:
        """An aiodocker client of this daemon (close it)."""
        return aiodocker.Docker(url=self.url)

    def containers(self, label: str = "jobledger.job_id") -> list[dict[str, object]]:
        """`docker ps -a` of the containers carrying a label, as JSON objects."""
        out = self.docker("ps", "-a", "--filter", f"label={label}", "--format", "{{json .}}")
        return [json.loads(line) for line in out.splitlines()]

    def _leftover_pids(self) -> list[int]:
        """Processes this daemon started that outlive it (live-restore shims, containerd)."""
        mine = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if str(self.root).encode() in (entry / "cmdline").read_bytes():
                    mine.append(int(entry.name))
        return mine

    def teardown(self) -> None:
        """Remove every container, stop the daemon, end what it left, unmount, delete."""
        with contextlib.suppress(Exception):
            if self._proc is None:
                self._start()
            ids = self.docker("ps", "-aq").split()
            if ids:
                self.docker("rm", "-f", *ids)
        self._stop()
        for pid in self._leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # dockerd bind-mounts its data root onto itself and leaves it mounted.
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.root))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
async def own_docker(test_image: str) -> AsyncIterator[OwnDocker]:
    """A Docker daemon of this test's own with the test image; set `live_restore` and
    `restart()` to have it keep containers running across its restarts."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.fail("the Docker fault tests start a dockerd of their own: they need root")
    # Short: a Unix socket path must fit in 108 bytes.
    own = OwnDocker(Path(tempfile.mkdtemp(prefix="jl-dockerd-")))
    try:
        await own.start()
        image = subprocess.run(
            ["docker", "save", TEST_IMAGE], capture_output=True, check=True, timeout=60
        ).stdout
        await asyncio.to_thread(own.docker, "load", input=image)
        yield own
    finally:
        await asyncio.to_thread(own.teardown)
