"""How the CLI's client verbs show jobs to people: an aligned table, a key: value page, and
what a finished job means as an exit status. Pure functions over the API's structs."""

from __future__ import annotations

import shlex
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import msgspec

from ..domain.events import FailureReason
from ..domain.jobs import JobState
from ..domain.specs import SecretRef
from ..exitcodes import EXIT_ERROR, EXIT_OK
from ..wire import JobOut, LogEvent

#: Width the job table is fitted to, so it reads in a 100-column terminal or a code review.
TABLE_WIDTH = 100
GAP = "  "
ELLIPSIS = "…"

JOB_COLUMNS = ("ID", "STATE", "PROJECT", "IMAGE", "CREATED", "EXIT")
#: Columns cut when a table is too wide, each down to its minimum width. Never the image:
#: cut at either end it names another image (a registry, or a tag, lost), so a long one
#: makes the line longer instead.
_SHRINK = {"PROJECT": 7}
_RIGHT = frozenset({"EXIT"})


def format_time(value: datetime) -> str:
    """An instant as ISO 8601 in UTC to the second, the form the API and the CLI accept."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cut(text: str, width: int, *, front: bool = False) -> str:
    """`text` in at most `width` characters, an ellipsis marking what was cut."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    return ELLIPSIS + text[len(text) - width + 1 :] if front else text[: width - 1] + ELLIPSIS


def fit_widths(
    headers: Sequence[str], widths: Sequence[int], max_width: int, shrink: dict[str, int]
) -> list[int]:
    """Column widths whose total (with gaps) is at most `max_width` where possible: the
    widest of the `shrink` columns gives up a character at a time, down to its minimum."""
    fitted = list(widths)
    total = sum(fitted) + len(GAP) * (len(fitted) - 1)
    while total > max_width:
        candidates = [i for i, h in enumerate(headers) if h in shrink and fitted[i] > shrink[h]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: fitted[i])
        fitted[widest] -= 1
        total -= 1
    return fitted


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    max_width: int = TABLE_WIDTH,
    shrink: dict[str, int] | None = None,
    cut_front: Collection[str] = (),
    right: Collection[str] = (),
) -> str:
    """Rows under headers in aligned columns, each as wide as its widest cell, fitted to
    `max_width` by cutting the `shrink` columns."""
    natural = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    widths = fit_widths(headers, natural, max_width, shrink or {})
    lines = []
    for row in [list(headers), *rows]:
        cells = []
        for h, cell, w in zip(headers, row, widths, strict=True):
            text = cut(cell, w, front=h in cut_front)
            cells.append(text.rjust(w) if h in right else text.ljust(w))
        lines.append(GAP.join(cells).rstrip())
    return "\n".join(lines) + "\n"


def job_row(job: JobOut) -> list[str]:
    """A job as a row of `JOB_COLUMNS`."""
    return [
        str(job.id),
        job.state.value,
        job.project,
        job.spec.image,
        format_time(job.created_at),
        "" if job.exit_code is None else str(job.exit_code),
    ]


def jobs_table(jobs: Sequence[JobOut], max_width: int = TABLE_WIDTH) -> str:
    """The job list as people read it: id, state, project, image, created, exit code."""
    return table(
        JOB_COLUMNS,
        [job_row(j) for j in jobs],
        max_width=max_width,
        shrink=_SHRINK,
        right=_RIGHT,
    )


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _text(value: object) -> str:
    """A parameter's value as its placeholder writes it: text as it is, the rest in JSON."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _env_line(job: JobOut, name: str, value: str | SecretRef) -> str:
    """One variable as `NAME=value`, or for a secret its name and version (the version the
    current attempt's start resolved, else the one pinned, else `latest`): never a value."""
    if isinstance(value, str):
        return f"{name}={value}"
    resolved = job.secrets.get(name)
    version = resolved.version if resolved is not None else value.version
    return f"{name}=<secret {value.secret} {f'v{version}' if version else 'latest'}>"


def job_fields(job: JobOut) -> list[tuple[str, str]]:
    """A job's fields worth reading, by their API names, empty ones left out: where it
    stands, then what was asked for, then when things happened."""
    spec = job.spec
    fields: list[tuple[str, object]] = [
        ("id", job.id),
        ("state", job.state.value),
        ("waiting_reason", job.waiting_reason),
        (
            "requeue_reason",
            job.requeue_reason if job.requeue_reason != job.waiting_reason else None,
        ),
        ("exit_code", job.exit_code),
        ("failure_reason", job.failure_reason.value if job.failure_reason else None),
        ("message", job.message),
        # A job's output (and what it was given), as compact JSON; the hash of the former.
        ("output", _json(job.output) if job.output_sha256 is not None else None),
        ("output_sha256", job.output_sha256),
        ("inputs", _json(job.inputs) if job.inputs else None),
        ("attempt", job.attempt),
        ("worker_id", job.worker_id),
        ("project", job.project),
        (
            "definition",
            f"{job.definition} v{job.definition_version}" if job.definition is not None else None,
        ),
        (
            "environment",
            f"{job.source.environment} v{job.source.environment_version}"
            if job.source is not None and job.source.environment is not None
            else None,
        ),
        (
            "params",
            ", ".join(f"{k}={_text(v)}" for k, v in job.source.params.items())
            if job.source
            else None,
        ),
        ("image", spec.image),
        ("command", shlex.join(spec.command) if spec.command else None),
        ("env", "\n".join(_env_line(job, k, v) for k, v in spec.env.items())),
        ("workdir", spec.workdir),
        ("resources", f"cpu {spec.resources.cpu:g}, memory_mb {spec.resources.memory_mb}"),
        ("timeout_seconds", spec.timeout_seconds),
        ("stop_grace_seconds", spec.stop_grace_seconds),
        ("priority", spec.priority),
        ("labels", ", ".join(f"{k}={v}" for k, v in spec.labels.items())),
        ("tags", ", ".join(spec.tags)),
        ("scheduled_for", format_time(job.scheduled_for) if job.scheduled_for else None),
        ("idempotency_key", spec.idempotency_key),
        (
            "retry",
            f"max_retries {spec.retry.max_retries}, backoff_seconds {spec.retry.backoff_seconds:g}"
            if spec.retry.max_retries
            else None,
        ),
        ("concurrency_key", spec.concurrency_key),
        ("concurrency_limit", spec.concurrency_limit if spec.concurrency_key else None),
        (
            "usage",
            f"wall {job.usage.wall_seconds:.2f} s, cpu {job.usage.cpu_seconds:.2f} s, "
            f"peak memory {_bytes(job.usage.peak_memory_bytes)}"
            if job.usage
            else None,
        ),
        ("submitted_by", job.submitted_by),
        ("parent_job", job.parent_job),
        ("rerun_of", job.rerun_of),
        ("created_at", job.created_at),
        ("started_at", job.started_at),
        ("finished_at", job.finished_at),
        ("cancel_requested_at", job.cancel_requested_at),
        ("cancel_requested_by", job.cancel_requested_by),
    ]
    shown = []
    for key, value in fields:
        if value is None or value == "":
            continue
        shown.append((key, format_time(value) if isinstance(value, datetime) else str(value)))
    return shown


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def job_details(job: JobOut) -> str:
    """A job as aligned `key: value` lines; a value of many lines continues under itself."""
    fields = job_fields(job)
    width = max(len(k) for k, _ in fields) + 2
    lines = []
    for key, value in fields:
        first, *rest = value.split("\n")
        lines.append(f"{key + ':':<{width}}{first}")
        lines += [" " * width + more for more in rest]
    return "\n".join(lines) + "\n"


def outcome(job: JobOut) -> tuple[int, str | None]:
    """The exit status a finished job stands for, and what to tell the user when it is not
    success: the command's own exit code when it exited by itself, 1 otherwise (timeout,
    start error, out of memory, lost worker, cancel)."""
    if job.state is JobState.SUCCEEDED:
        return EXIT_OK, None
    if job.state is JobState.CANCELLED:
        return EXIT_ERROR, f"job {job.id} was cancelled"
    if job.state is not JobState.FAILED:
        return EXIT_ERROR, f"job {job.id} is {job.state.value}, not finished"
    code = job.exit_code
    if job.failure_reason is FailureReason.EXIT_CODE and code is not None and 0 < code < 256:
        return code, f"job {job.id} failed with exit code {code}"
    reason = job.failure_reason.value if job.failure_reason else "unknown reason"
    return EXIT_ERROR, f"job {job.id} failed: {reason}" + (
        f": {job.message}" if job.message else ""
    )


AUDIT_COLUMNS = ("TIME", "JOB", "TYPE", "ACTOR", "DETAIL")


#: What administration's events (projects, service accounts, tokens) show in the detail.
ADMIN_FACTS = (
    "name", "project", "service_account", "role", "max_running_jobs", "log_limit_bytes",
    "submit_rate", "submit_burst", "expires_at", "retention_days",
)  # fmt: skip


def audit_detail(event: LogEvent) -> str:
    """The one or two facts of an event worth a glance: reason, exit code, worker, wait."""
    data = event.data
    parts = []
    for name in ("reason", "exit_code", "worker_id", "attempt", "message", *ADMIN_FACTS):
        value = getattr(data, name, None)
        if value is not None and not (name == "attempt" and value == 1):
            parts.append(f"{name}={value}")
    if event.waited_seconds is not None:
        parts.append(f"waited={event.waited_seconds:.1f}s")
    return " ".join(parts)


def audit_table(events: Sequence[LogEvent], max_width: int = TABLE_WIDTH) -> str:
    """Audit events as people read them: time, job, type, actor, detail. The detail, last,
    is never cut (a terminal wraps it); the actor is, when the table is too wide."""
    rows = [
        [
            format_time(e.recorded_at),
            str(e.job_id or e.stream_id),
            e.type,
            e.meta.actor,
            audit_detail(e),
        ]
        for e in events
    ]
    return table(AUDIT_COLUMNS, rows, max_width=max_width, shrink={"ACTOR": 12})
