"""Event encoding: every type round-trips, and old schema versions are upcast."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from jobledger.domain import events as ev
from tests.factories import spec

SAMPLES: list[ev.Event] = [
    ev.JobSubmitted(spec=spec(env={"A": "1"}, labels={"team": "x"})),
    ev.JobQueued(attempt=2, requeue_reason="retry 1 of 3"),
    ev.JobStarted(worker_id="w1", attempt=1),
    ev.JobCancelRequested(reason="stop"),
    ev.JobSucceeded(usage=ev.Usage(wall_seconds=1.5, cpu_seconds=0.2, peak_memory_bytes=1024)),
    ev.JobFailed(reason=ev.FailureReason.OOM, exit_code=137),
    ev.JobCancelled(exit_code=143),
    ev.JobRetryScheduled(
        attempt=2, failed_attempt=1, reason=ev.FailureReason.TIMEOUT, delay_seconds=4
    ),
]


def test_samples_cover_every_type() -> None:
    assert {type(e).__name__ for e in SAMPLES} == set(ev.EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(event: ev.Event) -> None:
    data = ev.encode_event(event)
    assert msgspec.json.decode(data)["type"] == type(event).__name__
    assert ev.decode_event(type(event).__name__, event.SCHEMA, data) == event


def test_old_schema_versions_are_upcast() -> None:
    # JobQueued 1 said `reason` for what is now `requeue_reason`.
    old = b'{"type": "JobQueued", "attempt": 2, "reason": "retry 1 of 3"}'
    assert ev.decode_event("JobQueued", 1, old) == ev.JobQueued(
        attempt=2, requeue_reason="retry 1 of 3"
    )


def test_upcasters_chain_one_version_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend JobQueued is at schema 3, where v2's `requeue_reason` was upper-cased.
    def v2_to_v3(obj: dict[str, Any]) -> dict[str, Any]:
        obj["requeue_reason"] = obj["requeue_reason"].upper()
        return obj

    monkeypatch.setattr(ev.JobQueued, "SCHEMA", 3)
    monkeypatch.setitem(ev.UPCASTERS, ("JobQueued", 2), v2_to_v3)
    old = b'{"type": "JobQueued", "attempt": 1, "reason": "slot"}'
    assert ev.decode_event("JobQueued", 1, old) == ev.JobQueued(attempt=1, requeue_reason="SLOT")


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        ev.decode_event("JobTeleported", 1, b"{}")
