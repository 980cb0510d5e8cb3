"""I3: the database itself refuses to change or remove events."""

from __future__ import annotations

import asyncpg
import pytest

from jobledger.domain.events import EventMeta, JobQueued
from jobledger.ids import uuid7
from jobledger.store.eventstore import EventStore


@pytest.fixture
async def one_event(store: EventStore) -> None:
    await store.append(uuid7(), 0, [JobQueued()], EventMeta(actor="test"))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'JobCancelled'",
        "UPDATE events SET data = '{}'::jsonb, meta = '{}'::jsonb",
        "DELETE FROM events",
        "TRUNCATE events",
        "TRUNCATE events CASCADE",
    ],
)
async def test_events_cannot_be_changed(
    pool: asyncpg.Pool, one_event: None, statement: str
) -> None:
    before = await pool.fetch("SELECT * FROM events ORDER BY position")
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await pool.execute(statement)
    assert await pool.fetch("SELECT * FROM events ORDER BY position") == before
    assert len(before) == 1
