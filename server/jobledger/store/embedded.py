"""A PostgreSQL cluster in a local directory, run from the machine's PostgreSQL binaries.

`jobledger serve` uses it when no DATABASE_URL is given; the test rig uses it for its one
throwaway cluster per session. It listens on a Unix socket inside its data directory only.
PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SUPERUSER = "jobledger"
PORT = 5432  # only names the socket file; nothing listens on TCP
_OPEN = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC


class EmbeddedPostgresError(RuntimeError):
    """The embedded cluster could not be found, initialised, started or stopped."""


def find_bin_dir() -> Path:
    """Where initdb/pg_ctl are: $JOBLEDGER_PG_BIN, PATH, or the newest /usr/lib/postgresql/N/bin."""
    if env := os.environ.get("JOBLEDGER_PG_BIN"):
        return Path(env)
    if found := shutil.which("initdb"):
        return Path(found).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(re.sub(r"\D", "", p.parent.parent.name) or 0),
    )
    if candidates:
        return candidates[-1].parent
    raise EmbeddedPostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them "
        "(apt-get install postgresql), set JOBLEDGER_PG_BIN, or set DATABASE_URL to use a server."
    )


def _run_as() -> pwd.struct_passwd | None:
    """The user the cluster runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(os.environ.get("JOBLEDGER_PG_USER", "postgres"))
    except KeyError as exc:
        raise EmbeddedPostgresError(
            "running as root, and PostgreSQL will not: create a `postgres` user "
            "(installing the postgresql package does) or set JOBLEDGER_PG_USER"
        ) from exc


class EmbeddedPostgres:
    """One cluster in `data_dir`: initialised on first use, reused afterwards."""

    def __init__(
        self,
        data_dir: Path,
        *,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.settings = dict(settings or {})
        self.bin_dir = bin_dir or find_bin_dir()
        self.user = _run_as()
        self.log_file = self.data_dir / "server.log"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL for a database of this cluster, over its Unix socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={PORT}"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            return ["runuser", "-u", self.user.pw_name, "--", *cmd]
        return cmd

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedPostgresError(
                f"{args[0]} failed ({proc.returncode}): "
                + (proc.stderr.strip() or proc.stdout.strip())
                + (f"\n--- {self.log_file} ---\n{tail}" if tail else "")
            )
        return proc

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def initialize(self) -> None:
        """initdb the data directory if it holds no cluster yet."""
        if self.initialized:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.user is not None:
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
            self._check_reachable()
        log.info("initialising embedded postgresql", data_dir=str(self.data_dir))
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-instructions",
        )  # fmt: skip
        conf = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "port": str(PORT),
            **self.settings,
        }
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write("\n# written by jobledger\n")
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())

    def _check_reachable(self) -> None:
        probe = subprocess.run(
            ["runuser", "-u", self.user.pw_name, "--", "test", "-w", str(self.data_dir)],  # type: ignore[union-attr]
            check=False,
        )
        if probe.returncode != 0:
            raise EmbeddedPostgresError(
                f"user {self.user.pw_name!r} cannot reach {self.data_dir}; "  # type: ignore[union-attr]
                "choose a data directory whose parents it may traverse (e.g. under /var/lib)"
            )

    @property
    def running(self) -> bool:
        return (
            self.initialized
            and self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0
        )

    def start(self) -> None:
        """Initialise if needed and start the server (a no-op if it already runs)."""
        self.initialize()
        if self.running:
            log.info("embedded postgresql already running", data_dir=str(self.data_dir))
            return
        self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60"
        )
        log.info("embedded postgresql started", data_dir=str(self.data_dir))

    @property
    def users_lock(self) -> Path:
        """The lock file every process using the cluster holds shared (beside the data
        directory: as root, that one belongs to the cluster's user). It says whether a
        jobledger process started the cluster."""
        return self.data_dir.with_name(self.data_dir.name + ".lock")

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """One process at a time decides to start or stop the cluster."""
        self.users_lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir.with_name(self.data_dir.name + ".start.lock"), _OPEN, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def attach(self) -> int:
        """Start the cluster if it is not running and use it until `detach`: meanwhile the
        process holds a shared lock on `users_lock` (the returned descriptor), so that no
        other user stops the cluster under it."""
        with self._turn():
            fd = os.open(self.users_lock, _OPEN, 0o644)
            try:
                if not self.running:
                    self.start()
                    # The last user stops it; one found running was someone else's to start.
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"started by jobledger (pid {os.getpid()})\n".encode(), 0)
                fcntl.flock(fd, fcntl.LOCK_SH)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def detach(self, fd: int) -> bool:
        """Stop using the cluster; the last user stops it if a jobledger process started
        it. Whether it was stopped."""
        try:
            with self._turn():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("embedded postgresql left running for its other users")
                    return False
                if not os.pread(fd, 1, 0) or not self.running:
                    return False
                self.stop()
                os.ftruncate(fd, 0)
                return True
        finally:
            os.close(fd)

    def stop(self) -> None:
        """Stop the server cleanly (fast mode: roll back open transactions)."""
        if self.running:
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60")
            log.info("embedded postgresql stopped", data_dir=str(self.data_dir))
