"""What the process executor learns of an attempt's processes from /proc, and the warden
that kills them when their worker dies.

An attempt is a session: the command starts as its leader (pid = session id), and what it
starts stays in it unless it calls setsid itself. A pid alone names a process only while it
lives; with the leader's start time (field 22 of /proc/PID/stat, clock ticks since boot)
it names one for good: the attempt's processes are those of the leader's session that
started no earlier than the leader. A zombie counts as gone: it runs no more code.

The warden (`python -I procwatch.py --worker-id ID`, one per executor) reads lines
`+ PID START` / `- PID START` from the worker on stdin. Its stdin closes when the worker
exits, however it dies (kill -9 included): then it kills every attempt still registered
and exits. It needs nothing but the standard library, so it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

_PROC = Path("/proc")


def _stat(pid: int | str) -> tuple[str, int, int] | None:
    """(state, session, start ticks) of a process, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb", buffering=0) as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[3]), int(fields[19])


def start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot), or None if it is gone."""
    st = _stat(pid)
    return None if st is None else st[2]


def alive(pid: int, started: int) -> bool:
    """Whether the process with this pid and start time still runs."""
    st = _stat(pid)
    return st is not None and st[2] == started and st[0] not in "ZX"


def boot_id() -> str:
    """This boot of this machine: pids and start times mean nothing across boots."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def members(leader: int, started: int) -> list[int]:
    """The live processes of the attempt whose leader is `leader`, started at `started`
    (the leader itself if it still runs, and what it started that stayed in its session)."""
    found = []
    for name in os.listdir(_PROC):  # plain os calls: this runs at every attempt's end
        st = _stat(name) if name.isdigit() else None
        if st is not None and st[1] == leader and st[2] >= started and st[0] not in "ZX":
            found.append(int(name))
    return sorted(found)


def kill(leader: int, started: int) -> list[int]:
    """SIGKILL every live process of the attempt; return those that were there. Processes
    are killed one by one, never by group id alone: a group id outlives nothing it names."""
    pids = members(leader, started)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


def warden(worker_id: str) -> None:
    """Kill the registered attempts once stdin closes (see the module docstring)."""
    # A terminal's ^C or hangup reaches the worker's whole group: the worker then stops its
    # attempts itself, and we must stay to kill them if it cannot.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    attempts: dict[int, int] = {}
    for line in sys.stdin.buffer:
        op, pid, started = line.split()
        if op == b"+":
            attempts[int(pid)] = int(started)
        else:
            attempts.pop(int(pid), None)
    # Kill until none is left: a process may fork between our look and our kill.
    deadline = time.monotonic() + 30
    while attempts and time.monotonic() < deadline:
        attempts = {pid: s for pid, s in attempts.items() if kill(pid, s)}
        time.sleep(0.02)
    if attempts:
        print(
            f"jobledger warden of {worker_id}: could not kill {sorted(attempts)}", file=sys.stderr
        )


if __name__ == "__main__":
    warden(sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--worker-id" else "?")
