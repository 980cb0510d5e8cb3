"""A job's timeline: transitions with actors, and time per state."""

from __future__ import annotations

from datetime import timedelta

from jobledger.domain.jobs import Finish, RequestCancel, Start, Submit
from jobledger.domain.specs import RetryPolicy
from jobledger.domain.timeline import timeline
from tests.factories import T0, MemoryLog, spec


def test_time_in_each_state_with_a_retry() -> None:
    # MemoryLog's clock: event n is recorded at T0 + n seconds.
    log = MemoryLog()
    log.apply(Submit(spec=spec(retry=RetryPolicy(max_retries=1, backoff_seconds=0))), actor="alice")
    log.apply(Start(worker_id="w1"), actor="worker:w1")  # v2 at 2 s
    log.apply(Finish(exit_code=1), actor="worker:w1")  # v3 at 3 s: retry, queued again
    log.apply(Start(worker_id="w2"), actor="worker:w2")  # v4 at 4 s
    log.apply(Finish(exit_code=0), actor="worker:w2")  # v5 at 5 s
    t = timeline(log.records, now=T0 + timedelta(hours=1))
    assert [(x.event, x.state.value, x.attempt) for x in t.transitions] == [
        ("JobSubmitted", "queued", 1),
        ("JobStarted", "running", 1),
        ("JobRetryScheduled", "queued", 2),
        ("JobStarted", "running", 2),
        ("JobSucceeded", "succeeded", 2),
    ]
    actors = [x.actor for x in t.transitions]
    assert actors == ["alice", "worker:w1", "worker:w1", "worker:w2", "worker:w2"]
    assert t.transitions[0].after_seconds is None and t.transitions[3].after_seconds == 1.0
    # queued 1→2 and 3→4, running 2→3 and 4→5; finished, so `now` adds nothing.
    assert t.seconds_in_state == {"queued": 2.0, "running": 2.0}


def test_a_job_still_going_counts_until_now() -> None:
    log = MemoryLog()
    log.apply(Submit(spec=spec()))
    log.apply(Start(worker_id="w1"))  # v2 at 2 s
    log.apply(RequestCancel(), actor="bob")  # v3 at 3 s: cancelling
    t = timeline(log.records, now=T0 + timedelta(seconds=10))
    assert t.state.value == "cancelling" and t.transitions[-1].actor == "bob"
    assert t.seconds_in_state == {"queued": 1.0, "running": 1.0, "cancelling": 7.0}
