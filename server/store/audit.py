"""Audit queries over the log: events newest first, filtered.

The statement is assembled from the filters actually given (values are always bound, never
formatted in), so each combination gets a plan made for it: one catch-all statement with
`$n IS NULL OR ...` arms ends up with a generic plan that scans the whole log.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

_SELECT = """
SELECT e.event_id, e.stream_id, e.version, e.position, e.type, e.schema_version, e.data,
       e.meta, e.recorded_at, j.project, w.waited
FROM events e
JOIN jobs j ON j.id = e.stream_id
LEFT JOIN LATERAL (
    SELECT CASE WHEN e.type = 'JobStarted' THEN
        extract(epoch FROM e.recorded_at - to_timestamp((e.data ->> 'ready_at')::float8))::float8
    END AS waited
) w ON true
"""


class AuditFilter(msgspec.Struct, kw_only=True):
    """What to select; None (or empty) means any."""

    project: str | None = None
    actor: str | None = None
    token_id: str | None = None
    job: uuid.UUID | None = None
    types: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Only events before this position (the page cursor).
    before: int | None = None
    #: Failure reason (JobFailed, JobRetryScheduled).
    reason: str | None = None
    #: Only JobStarted events of jobs that waited longer than this many seconds.
    min_wait: float | None = None


def audit_statement(f: AuditFilter, limit: int) -> tuple[str, list[object]]:
    """The SQL and its arguments for a page of events matching `f`."""
    where: list[str] = []
    args: list[object] = []

    def cond(template: str, value: object) -> None:
        args.append(value)
        where.append(template.format(f"${len(args)}"))

    if f.project is not None:
        cond("j.project = {}::text", f.project)
    if f.actor is not None:
        cond("e.meta ->> 'actor' = {}::text", f.actor)
    if f.token_id is not None:
        cond("e.meta ->> 'token_id' = {}::text", f.token_id)
    if f.job is not None:
        cond("e.stream_id = {}::uuid", f.job)
    if f.types:
        cond("e.type = ANY({}::text[])", f.types)
    if f.min_wait is not None:
        # Literal type and the index's expression: the partial index events_waited applies.
        where.append("e.type = 'JobStarted'")
        cond(
            "extract(epoch FROM e.recorded_at - to_timestamp((e.data ->> 'ready_at')::float8))"
            " > {}::numeric",
            f.min_wait,
        )
    if f.reason is not None:
        where.append("e.type IN ('JobFailed', 'JobRetryScheduled')")  # events_failure_reason
        cond("e.data ->> 'reason' = {}::text", f.reason)
    if f.since is not None:
        cond("e.recorded_at >= {}::timestamptz", f.since)
    if f.until is not None:
        cond("e.recorded_at < {}::timestamptz", f.until)
    if f.before is not None:
        cond("e.position < {}::bigint", f.before)
    args.append(limit)
    sql = _SELECT + (("WHERE " + "\n  AND ".join(where)) if where else "")
    return sql + f"\nORDER BY e.position DESC\nLIMIT ${len(args)}", args


async def audit(pool: asyncpg.Pool, f: AuditFilter, limit: int) -> list[asyncpg.Record]:
    """A page of events matching `f`, newest first (with `project` and `waited` columns)."""
    sql, args = audit_statement(f, limit)
    return await pool.fetch(sql, *args)
