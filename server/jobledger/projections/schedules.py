"""The `schedules` table: each live schedule's settings, whether it is paused, its next
occurrence and when that is due, and the jobs (or workflow runs: `recent_job_ids` holds
both) of its latest fired occurrences, kept inline
with its stream's appends (a deleted schedule has no row)."""

from __future__ import annotations

import msgspec

from ..domain.schedules import SCHEDULE, Schedule
from .named import Row, StateProjection

_encoder = msgspec.json.Encoder()


def _row(state: Schedule) -> Row | None:
    if state.deleted:
        return None
    s = state.settings
    return (
        state.project, state.name, s.cron, s.timezone, state.paused,
        _encoder.encode(s).decode(), state.next_occurrence, state.next_due_at,
        state.last_occurrence, state.fired, state.skipped, [r.started for r in state.recent],
        state.created_by, state.created_at, state.updated_by, state.updated_at, state.version,
    )  # fmt: skip


SCHEDULES = StateProjection(
    SCHEDULE,
    "schedules",
    ["project", "name", "cron", "timezone", "paused", "settings", "next_occurrence",
     "next_due_at", "last_occurrence", "fired", "skipped", "recent_job_ids", "created_by",
     "created_at", "updated_by", "updated_at", "version"],
    _row,
)  # fmt: skip
