"""Audit queries over the log: events newest first, filtered; the statement is assembled
from the filters given (see `where`).

Newest first is by (txid, position), like the catch-up reader's order (I5), and only rows
below the oldest running writer are shown: an event that commits late is never hidden
behind a page already read. Everything below a page's last event had committed when that
page was read, so the older pages are fixed; what commits later is newer than the first
page, and a reader that looks again from the top until it meets what it saw gets it once."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

from ..domain.events import Recorded
from .eventstore import record_from_row
from .where import Where

_SELECT = """
SELECT e.event_id, e.stream_id, e.version, e.position, e.type, e.schema_version, e.data,
       e.meta, e.recorded_at, e.stream_type, j.project, w.waited
FROM events e
LEFT JOIN jobs j ON j.id = e.stream_id
LEFT JOIN LATERAL (
    SELECT CASE WHEN e.type = 'JobStarted' THEN
        extract(epoch FROM e.recorded_at - to_timestamp((e.data ->> 'ready_at')::float8))::float8
    END AS waited
) w ON true
"""


class AuditFilter(msgspec.Struct, kw_only=True):
    """What to select; None (or empty) means any."""

    project: str | None = None
    #: Only streams of this kind (job, ...).
    stream_type: str | None = None
    actor: str | None = None
    token_id: str | None = None
    job: uuid.UUID | None = None
    #: One stream's events, whatever its kind (a project's, a token's...).
    stream: uuid.UUID | None = None
    #: The events of the tokens that acted on this job (its events' `token_id`): e.g. with
    #: type TokenIssued, who issued the token a job was submitted or cancelled with.
    tokens_of_job: uuid.UUID | None = None
    types: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Only events before (in the audit's order) the event at this position: the cursor,
    #: the last event of the previous page.
    before: int | None = None
    #: Failure reason (JobFailed, JobRetryScheduled).
    reason: str | None = None
    #: Only JobStarted events of jobs that waited longer than this many seconds.
    min_wait: float | None = None


def audit_statement(f: AuditFilter, limit: int) -> tuple[str, list[object]]:
    """The SQL and its arguments for a page of events matching `f`."""
    w = Where()
    if f.project is not None:
        w.add("j.project = {}::text", f.project)
    if f.stream_type is not None:
        w.add("e.stream_type = {}::text", f.stream_type)
    if f.actor is not None:
        w.add("e.meta ->> 'actor' = {}::text", f.actor)
    if f.token_id is not None:
        w.add("e.meta ->> 'token_id' = {}::text", f.token_id)
    if f.job is not None:
        w.add("e.stream_id = {}::uuid", f.job)
    if f.stream is not None:
        w.add("e.stream_id = {}::uuid", f.stream)
    if f.tokens_of_job is not None:
        # A token's stream id is its id (domain/access.py).
        w.add(
            "e.stream_id IN (SELECT (u.meta ->> 'token_id')::uuid FROM events u"
            " WHERE u.stream_id = {}::uuid AND u.meta ? 'token_id')",
            f.tokens_of_job,
        )
    if f.types:
        w.add("e.type = ANY({}::text[])", f.types)
    if f.min_wait is not None:
        # Literal type and the index's expression: the partial index events_waited applies.
        w.literal("e.type = 'JobStarted'")
        w.add(
            "extract(epoch FROM e.recorded_at - to_timestamp((e.data ->> 'ready_at')::float8))"
            " > {}::numeric",
            f.min_wait,
        )
    if f.reason is not None:
        w.literal("e.type IN ('JobFailed', 'JobRetryScheduled')")  # events_failure_reason
        w.add("e.data ->> 'reason' = {}::text", f.reason)
    if f.since is not None:
        w.add("e.recorded_at >= {}::timestamptz", f.since)
    if f.until is not None:
        w.add("e.recorded_at < {}::timestamptz", f.until)
    if f.before is not None:
        # The cursor stays a position (the API's, unchanged); its event gives the txid. A
        # position of no event selects nothing.
        w.add(
            "(e.txid, e.position) < (SELECT c.txid, c.position FROM events c"
            " WHERE c.position = {}::bigint)",
            f.before,
        )
    # Rows of transactions that may still commit wait, as in `read_all`.
    w.literal("e.txid < pg_snapshot_xmin(pg_current_snapshot())")
    sql = f"{_SELECT}{w.sql()}\nORDER BY e.txid DESC, e.position DESC\nLIMIT {w.arg(limit)}"
    return sql, w.args


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An event found by an audit query, with the project of its job."""

    record: Recorded
    #: The project of a job's event (None for streams of other kinds).
    project: str | None
    #: JobStarted only: seconds the job waited to start since it could have.
    waited_seconds: float | None = None


async def audit(pool: asyncpg.Pool, f: AuditFilter, limit: int) -> list[AuditRecord]:
    """A page of events matching `f`, newest first."""
    sql, args = audit_statement(f, limit)
    return [
        AuditRecord(record=record_from_row(r), project=r["project"], waited_seconds=r["waited"])
        for r in await pool.fetch(sql, *args)
    ]
