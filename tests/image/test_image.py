"""The production image (issue 19): built offline by scripts/build-image from the
Dockerfile, run the way the README says against the test PostgreSQL and the host's Docker
engine, as a server and as a worker.

The test cluster listens on a Unix socket only, so containers reach it through that socket
bind-mounted at /run/postgresql (DATABASE_URL `...?host=/run/postgresql`); the server's
port is published on 127.0.0.1 as `docker run -p` does for a user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.conftest import ADMIN_TOKEN
from tests.docker_rig import ROOT

IMAGE = "jobledger:latest"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Every container of this file carries it, so a failed run leaves nothing unnamed.
LABEL = "jobledger.test=image"
DOCKER_SOCKET = "/var/run/docker.sock"

# Outside CI a machine without Docker skips these tests; under CI they run (and fail).
pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None and not os.environ.get("CI"),
    reason="the Docker CLI is not installed",
)


@pytest.fixture(scope="module")
def image(docker_engine: None) -> str:
    """jobledger:latest from the working tree, via scripts/build-image (its base image and
    dependency wheels are cached: only the first run on a machine makes the base)."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-image")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "JOBLEDGER_VENV": sys.prefix},
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/build-image failed:\n{result.stdout}{result.stderr}")
    return IMAGE


def docker(*args: str, check: bool = True, timeout: float = 60) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


class Container:
    """A detached container of the image, removed at the end of the test."""

    def __init__(self, image: str, dsn: str, *args: str, name: str, env: dict[str, str]) -> None:
        url = urlsplit(dsn)
        socket_dir = parse_qs(url.query)["host"][0]
        database = url.path.lstrip("/")
        self.name = f"jl-image-{name}-{os.getpid()}"
        docker("rm", "-f", self.name, check=False)
        self.id = docker(
            "run", "--detach", "--name", self.name, "--label", LABEL,
            # The test PostgreSQL's socket, where libpq looks for it by default.
            "-v", f"{socket_dir}/.s.PGSQL.5432:/run/postgresql/.s.PGSQL.5432",
            # The Docker executor: the host's engine, reachable by the image's user
            # through the socket's group.
            "-v", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}",
            "--group-add", str(os.stat(DOCKER_SOCKET).st_gid),
            "-e", f"DATABASE_URL=postgresql://jobledger@/{database}?host=/run/postgresql",
            "-e", f"JOBLEDGER_ADMIN_TOKEN={ADMIN_TOKEN}",
            *(a for k, v in env.items() for a in ("-e", f"{k}={v}")),
            *args,
        )  # fmt: skip

    def inspect(self) -> Any:
        return json.loads(docker("inspect", self.id))[0]

    def logs(self) -> str:
        result = subprocess.run(
            ["docker", "logs", self.id], capture_output=True, text=True, check=False
        )
        return result.stdout + result.stderr

    def remove(self) -> None:
        docker("rm", "-f", self.id, check=False)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for c in started:
        c.remove()


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **AUTH}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(what: str, check: Any, container: Container, timeout: float = 90) -> Any:
    """Poll `check()` until it returns something true; fail with the container's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := check()) is not None and found is not False:
            return found
        if not container.inspect()["State"]["Running"]:
            break
        time.sleep(0.25)
    raise AssertionError(
        f"{what}: not within {timeout}s\n--- {container.name} ---\n{container.logs()}"
    )


def test_image_metadata_labels_user_and_healthcheck(image: str) -> None:
    config = json.loads(docker("image", "inspect", image))[0]["Config"]
    labels = config["Labels"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.title"] == "jobledger"
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.description"]
    assert "org.opencontainers.image.source" in labels
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["jobledger"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    # `docker build .` without scripts/build-image labels the image with this default.
    assert f"ARG VERSION={version}\n" in (ROOT / "Dockerfile").read_text()
    docker("image", "inspect", f"jobledger:{version}")  # tagged with it too


def test_without_database_url_the_image_exits_with_a_clear_error(image: str) -> None:
    result = subprocess.run(
        ["docker", "run", "--rm", "--label", LABEL, "--network", "none", image],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "DATABASE_URL" in result.stderr


@pytest.mark.parametrize("command", [[], ["worker"]], ids=["serve", "worker"])
def test_without_the_sockets_group_the_image_exits_rather_than_run_jobs_unisolated(
    image: str, dsn: str, command: list[str]
) -> None:
    url = urlsplit(dsn)
    socket_dir = parse_qs(url.query)["host"][0]
    result = subprocess.run(
        ["docker", "run", "--rm", "--label", LABEL, "--network", "none",
         "-v", f"{socket_dir}/.s.PGSQL.5432:/run/postgresql/.s.PGSQL.5432",
         "-v", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}",  # but no --group-add
         "-e", f"DATABASE_URL=postgresql://jobledger@{url.path}?host=/run/postgresql",
         image, *command],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "the Docker engine does not answer" in result.stderr


def test_server_and_worker_containers_run_jobs_on_the_host_engine(
    image: str, dsn: str, test_image: str, containers: list[Container]
) -> None:
    server = Container(
        image, dsn,
        "--publish", "127.0.0.1::8080",
        # The image's own HEALTHCHECK command, asked every second instead of every 15 s.
        "--health-interval", "1s",
        image,  # its default command: serve --host 0.0.0.0
        name="serve", env={"JOBLEDGER_WORKER_ID": "image-serve"},
    )  # fmt: skip
    containers.append(server)
    wait_for(
        "the server container healthy",
        lambda: server.inspect()["State"].get("Health", {}).get("Status") == "healthy",
        server,
    )
    port = docker("port", server.id, "8080/tcp").splitlines()[0].rsplit(":", 1)[1]
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
    # Not root inside, though it reaches the host's Docker engine.
    uid = docker("exec", server.id, "python3", "-c", "import os; print(os.getuid())")
    assert uid == "10001"

    status, job = call(
        "POST", f"{base}/api/v1/jobs",
        {"image": test_image, "command": ["sh", "-c", "echo hello from the image; echo oops >&2"]},
    )  # fmt: skip
    assert status == 201, job
    done = wait_for("the job finished", lambda: finished(base, job["id"]), server)
    assert done["state"] == "succeeded", done
    assert done["worker_id"] == "image-serve"
    _, logs = call("GET", f"{base}/api/v1/jobs/{job['id']}/logs")
    lines = [(line["stream"], line["text"]) for line in logs["lines"]]
    assert ("stdout", "hello from the image") in lines
    assert ("stderr", "oops") in lines

    # `worker` by command: a second container that alone has the tag the job asks for.
    worker = Container(
        image, dsn, "--no-healthcheck", image, "worker", "--tags", "image",
        name="worker", env={"JOBLEDGER_WORKER_ID": "image-worker"},
    )  # fmt: skip
    containers.append(worker)
    status, tagged = call(
        "POST", f"{base}/api/v1/jobs",
        {"image": test_image, "command": ["echo", "from the worker"], "tags": ["image"]},
    )  # fmt: skip
    assert status == 201, tagged
    done = wait_for("the tagged job finished", lambda: finished(base, tagged["id"]), worker)
    assert done["state"] == "succeeded" and done["worker_id"] == "image-worker", done
    _, logs = call("GET", f"{base}/api/v1/jobs/{tagged['id']}/logs")
    assert [line["text"] for line in logs["lines"] if line["stream"] == "stdout"] == [
        "from the worker"
    ]
    # Both stop cleanly on SIGTERM, as `docker stop` sends.
    for c in (worker, server):
        docker("stop", "--time", "30", c.id, timeout=60)
        assert c.inspect()["State"]["ExitCode"] == 0, c.logs()


def finished(base: str, job_id: str) -> Any:
    _, view = call("GET", f"{base}/api/v1/jobs/{job_id}")
    return view if view["state"] in ("succeeded", "failed", "cancelled") else None


def test_compose_example_names_the_image_and_settings_tested_here() -> None:
    """compose.yaml is not run (no compose tool on the test machines): it must at least
    use this image the way the test above does."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    ours = {name: s for name, s in services.items() if s["image"] == IMAGE}
    assert sorted(ours) == ["server", "worker-1", "worker-2"]
    tested_env = {"DATABASE_URL", "JOBLEDGER_ADMIN_TOKEN", "JOBLEDGER_WORKER_ID"}
    for name, service in ours.items():
        assert f"{DOCKER_SOCKET}:{DOCKER_SOCKET}" in service["volumes"], name
        assert service["group_add"] and "DOCKER_GID" in service["group_add"][0], name
        assert set(service["environment"]) <= tested_env, name
        assert service["environment"]["DATABASE_URL"].startswith("postgresql://"), name
    assert "command" not in ours["server"]  # the image's default: serve --host 0.0.0.0
    assert ours["server"]["ports"] == ["8080:8080"]
    assert "JOBLEDGER_ADMIN_TOKEN" in ours["server"]["environment"]
    for name in ("worker-1", "worker-2"):
        assert ours[name]["command"] == ["worker"]
        assert ours[name]["healthcheck"] == {"disable": True}
    ids = {s["environment"]["JOBLEDGER_WORKER_ID"] for s in ours.values()}
    assert len(ids) == 3  # stable and distinct: a restart adopts its own jobs
