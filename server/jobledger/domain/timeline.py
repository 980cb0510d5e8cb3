"""A job's timeline: every transition with who and when, and how long it spent in each
state. Pure: folded from the recorded events, with "now" given for a job still going."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import msgspec

from .events import Recorded
from .jobs import Job, JobState, evolve


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the job and the state it left the job in."""

    version: int
    at: datetime
    event: str
    state: JobState
    attempt: int
    actor: str
    token_id: str | None = None
    #: Seconds since the job's previous event (None for the first).
    after_seconds: float | None = None


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """Transitions oldest first, and total seconds spent in each state so far."""

    job_id: uuid.UUID
    state: JobState
    transitions: list[Transition]
    seconds_in_state: dict[str, float]


def timeline(records: Sequence[Recorded], now: datetime) -> Timeline:
    """The timeline of one job's events (at least its JobSubmitted)."""
    state: Job | None = None
    transitions: list[Transition] = []
    spent: dict[str, float] = {}
    previous_at: datetime | None = None
    for rec in records:
        before = state
        state = evolve(state, rec)
        waited = None
        if before is not None and previous_at is not None:
            # The time since the last event was spent in the state that event left.
            waited = (rec.recorded_at - previous_at).total_seconds()
            spent[before.state.value] = spent.get(before.state.value, 0.0) + waited
        previous_at = rec.recorded_at
        transitions.append(
            Transition(
                version=rec.version,
                at=rec.recorded_at,
                event=type(rec.event).__name__,
                state=state.state,
                attempt=state.attempt,
                actor=rec.meta.actor,
                token_id=rec.meta.token_id,
                after_seconds=waited,
            )
        )
    assert state is not None and previous_at is not None, "a timeline needs the job's events"
    if not state.is_terminal:
        ongoing = max(0.0, (now - previous_at).total_seconds())
        spent[state.state.value] = spent.get(state.state.value, 0.0) + ongoing
    return Timeline(
        job_id=state.id,
        state=state.state,
        transitions=transitions,
        seconds_in_state={k: round(v, 6) for k, v in spent.items()},
    )
