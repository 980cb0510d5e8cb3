"""Retention (issue 19): a finished job's output lines (`job_logs`) and usage samples
(`job_usage_samples`) are kept for its project's `retention_days` (else the server's
`--retention-days`; 0: forever) after it finished, then deleted, the job keeping one
`system` line that says what went and when. The job's row and its events stay: its state,
exit code, usage summary and output (the `output` of JobSucceeded) are not pruned.

Each project is walked in (finished_at, id) order from a cursor (`output_retention`) in
batches of at most `batch` jobs, one short transaction each, that lock only the cursor row
(SKIP LOCKED: two processes never prune one project at once, nor wait for each other) and
the rows they delete: appends of other jobs' lines, the job list and the scheduler go on.
The marker is output data beside the log, like the lines it replaces, not an event: the
event log (and so every projection a rebuild reproduces) is untouched by a prune."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec

from .logs import _StoredLine
from .queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("retention.sql"))

#: Jobs per prune transaction.
DEFAULT_BATCH = 1000

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class PruneReport:
    """What one pass over the projects removed."""

    jobs: int = 0
    lines: int = 0
    bytes: int = 0
    samples: int = 0

    def __add__(self, other: PruneReport) -> PruneReport:
        return PruneReport(
            self.jobs + other.jobs, self.lines + other.lines, self.bytes + other.bytes,
            self.samples + other.samples,
        )  # fmt: skip


def marker_text(pruned_at: datetime, days: int, lines: int, size: int, samples: int) -> str:
    """The line a pruned job keeps."""
    return (
        f"output pruned at {pruned_at.isoformat(timespec='seconds')}: {lines} lines "
        f"({size} bytes) and {samples} usage samples removed, kept {days} days after the "
        "job finished (retention)"
    )


async def prune_batch(
    pool: asyncpg.Pool,
    project: str,
    days: int,
    *,
    batch: int = DEFAULT_BATCH,
    as_of: datetime | None = None,
) -> PruneReport | None:
    """Prune the output of the next `batch` jobs of a project finished more than `days`
    before `as_of` (default: the database's clock now), in one transaction; None if another
    process holds the project's cursor. A report with fewer jobs than `batch` means the
    project is done for now."""
    async with pool.acquire() as conn:
        await conn.execute(QUERIES["retention_cursor_ensure"], project)
        async with conn.transaction():
            cursor = await conn.fetchrow(QUERIES["retention_cursor_lock"], project)
            if cursor is None:
                return None
            now: datetime = cursor["now"]
            rows = await conn.fetch(
                QUERIES["retention_prune_batch"], project, cursor["finished_at"],
                cursor["job_id"], (as_of or now) - timedelta(days=days), batch,
            )  # fmt: skip
            if not rows:
                return PruneReport()
            markers = [r for r in rows if r["lines"] or r["samples"]]
            if markers:
                texts = [
                    marker_text(now, days, r["lines"], r["bytes"], r["samples"]) for r in markers
                ]
                await conn.execute(
                    QUERIES["retention_markers"],
                    [r["id"] for r in markers],
                    [r["last_seq"] + 1 for r in markers],
                    [r["attempt"] for r in markers],
                    [
                        _encoder.encode([_StoredLine(r["last_seq"] + 1, "system", now, t)]).decode()
                        for r, t in zip(markers, texts, strict=True)
                    ],
                    [len(t) for t in texts],
                )
            last = rows[-1]
            await conn.execute(
                QUERIES["retention_cursor_move"], project, last["finished_at"], last["id"],
                len(rows),
            )  # fmt: skip
            return PruneReport(
                jobs=len(rows),
                lines=sum(r["lines"] for r in rows),
                bytes=sum(r["bytes"] for r in rows),
                samples=sum(r["samples"] for r in rows),
            )


async def retention_projects(pool: asyncpg.Pool, default_days: int) -> list[tuple[str, int]]:
    """Every project with finished jobs and the days their output is kept (0: forever)."""
    rows = await pool.fetch(QUERIES["retention_projects"], default_days)
    return [(r["name"], r["days"]) for r in rows]
