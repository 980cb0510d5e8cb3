"""The job state machine: every state and command, and properties of any command sequence."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobledger.domain.errors import DomainError, InvalidInput, InvalidTransition, NotFound
from jobledger.domain.events import FailureReason, JobFailed, JobRetryScheduled
from jobledger.domain.jobs import (
    TERMINAL_STATES,
    Command,
    ConfirmCancelled,
    Fail,
    Finish,
    Job,
    JobState,
    RequestCancel,
    Start,
    Submit,
    decide,
    fold,
)
from jobledger.domain.specs import RetryPolicy
from tests.factories import MemoryLog, commands, spec, submits

# How to bring a fresh job into each state.
PATHS: dict[str | None, list[Command]] = {
    None: [],
    "queued": [Submit(spec=spec())],
    "running": [Submit(spec=spec()), Start(worker_id="w1")],
    "cancelling": [Submit(spec=spec()), Start(worker_id="w1"), RequestCancel()],
    "succeeded": [Submit(spec=spec()), Start(worker_id="w1"), Finish(exit_code=0)],
    "failed": [Submit(spec=spec()), Start(worker_id="w1"), Finish(exit_code=3)],
    "cancelled": [Submit(spec=spec()), RequestCancel()],
}

COMMANDS: dict[str, Command] = {
    "submit": Submit(spec=spec()),
    "start": Start(worker_id="w2"),
    "cancel": RequestCancel(reason="no longer needed"),
    "exit0": Finish(exit_code=0),
    "exit1": Finish(exit_code=1),
    "oom": Finish(exit_code=137, oom_killed=True),
    "timeout": Fail(reason=FailureReason.TIMEOUT, exit_code=143),
    "start_error": Fail(reason=FailureReason.START_ERROR, message="no such image"),
    "gone": ConfirmCancelled(exit_code=143),
}

X = InvalidTransition
N = NotFound
# state -> command -> the event types it produces, or the error it raises.
TABLE: dict[str | None, dict[str, list[str] | type[DomainError]]] = {
    None: {"submit": ["JobSubmitted"]} | {c: N for c in COMMANDS if c != "submit"},
    "queued": {
        "submit": X, "start": ["JobStarted"], "cancel": ["JobCancelRequested", "JobCancelled"],
        "exit0": X, "exit1": X, "oom": X, "timeout": X, "start_error": X, "gone": X,
    },
    "running": {
        "submit": X, "start": X, "cancel": ["JobCancelRequested"], "exit0": ["JobSucceeded"],
        "exit1": ["JobFailed"], "oom": ["JobFailed"], "timeout": ["JobFailed"],
        "start_error": ["JobFailed"], "gone": X,
    },
    "cancelling": {
        "submit": X, "start": X, "cancel": [], "exit0": ["JobCancelled"],
        "exit1": ["JobCancelled"], "oom": ["JobCancelled"], "timeout": ["JobCancelled"],
        "start_error": ["JobCancelled"], "gone": ["JobCancelled"],
    },
    **{s: {c: X for c in COMMANDS} for s in ("succeeded", "failed", "cancelled")},
}  # fmt: skip


def job_in(state: str | None) -> Job | None:
    log = MemoryLog()
    for cmd in PATHS[state]:
        log.apply(cmd)
    assert (log.state.state.value if log.state else None) == state
    return log.state


@pytest.mark.parametrize("state", list(TABLE))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_state_and_command(state: str | None, command: str) -> None:
    expected = TABLE[state][command]
    job = job_in(state)
    if isinstance(expected, list):
        assert [type(e).__name__ for e in decide(job, COMMANDS[command])] == expected
    else:
        with pytest.raises(expected) as err:
            decide(job, COMMANDS[command])
        assert err.value.message


def test_failure_reasons_are_recorded() -> None:
    for name, reason in [
        ("exit1", FailureReason.EXIT_CODE),
        ("oom", FailureReason.OOM),
        ("timeout", FailureReason.TIMEOUT),
        ("start_error", FailureReason.START_ERROR),
    ]:
        [event] = decide(job_in("running"), COMMANDS[name])
        assert isinstance(event, JobFailed) and event.reason is reason


def test_retries_with_exponential_backoff_then_fail() -> None:
    log = MemoryLog()
    log.apply(Submit(spec=spec(retry=RetryPolicy(max_retries=2, backoff_seconds=5))))
    delays = []
    for attempt in (1, 2):
        log.apply(Start(worker_id="w1"))
        assert log.state is not None and log.state.attempt == attempt
        [rec] = log.apply(Finish(exit_code=7))
        assert isinstance(rec.event, JobRetryScheduled)
        assert log.state.state is JobState.QUEUED and log.state.attempt == attempt + 1
        assert log.state.scheduled_for == rec.recorded_at + timedelta(
            seconds=rec.event.delay_seconds
        )
        assert log.state.exit_code == 7 and log.state.failure_reason is FailureReason.EXIT_CODE
        delays.append(rec.event.delay_seconds)
    assert delays == [5, 10]
    log.apply(Start(worker_id="w1"))
    [rec] = log.apply(Finish(exit_code=7))
    assert isinstance(rec.event, JobFailed)
    assert log.state.state is JobState.FAILED and log.state.attempt == 3


def test_start_errors_are_not_retried() -> None:
    log = MemoryLog()
    log.apply(Submit(spec=spec(retry=RetryPolicy(max_retries=3))))
    log.apply(Start(worker_id="w1"))
    log.apply(Fail(reason=FailureReason.START_ERROR, message="no such image"))
    assert log.state is not None and log.state.state is JobState.FAILED
    assert log.state.message == "no such image"


def test_cancel_records_who_and_when() -> None:
    log = MemoryLog()
    log.apply(Submit(spec=spec()), actor="alice")
    log.apply(Start(worker_id="w1"), actor="worker:w1")
    [rec] = log.apply(RequestCancel(), actor="bob")
    assert log.state is not None
    assert log.state.cancel_requested_by == "bob"
    assert log.state.cancel_requested_at == rec.recorded_at
    assert log.state.submitted_by == "alice"


def check_invariants(job: Job) -> None:
    assert job.version >= 1
    assert job.attempt <= job.spec.retry.max_retries + 1
    assert (job.finished_at is not None) == (job.state in TERMINAL_STATES)
    if job.state in (JobState.RUNNING, JobState.CANCELLING):
        assert job.worker_id is not None and job.started_at is not None
    if job.state is JobState.CANCELLING:
        assert job.cancel_requested_at is not None
    if job.state is JobState.SUCCEEDED:
        assert job.exit_code == 0
    if job.state is JobState.FAILED:
        assert job.failure_reason is not None
    assert job.created_at <= job.updated_at


@given(submit=submits, cmds=st.lists(commands, max_size=25))
def test_any_command_sequence_folds_to_a_valid_state(submit: Submit, cmds: list[Command]) -> None:
    log = MemoryLog()
    log.apply(submit)
    for cmd in cmds:
        before = log.state
        assert before is not None
        try:
            log.apply(cmd)
        except DomainError as exc:
            assert isinstance(exc, InvalidTransition)
            assert log.state is before  # a refused command changes nothing
        else:
            assert not before.is_terminal  # terminal states accept nothing
        assert log.state is not None
        check_invariants(log.state)
        # The state kept step by step equals a fold of the whole log.
        assert fold(log.records) == log.state


def test_text_with_nul_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        decide(None, Submit(spec=spec(labels={"team": "a\x00b"})))
    assert err.value.details["field"] == "$.labels.team"
    with pytest.raises(InvalidInput) as err:
        decide(job_in("running"), RequestCancel(reason="\x00"))
    assert err.value.details["field"] == "$.reason"


def test_text_that_is_not_utf8_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        decide(None, Submit(spec=spec(command=["echo", "\ud800"])))
    assert err.value.details["field"] == "$.command[1]"
    with pytest.raises(InvalidInput) as err:
        decide(job_in("running"), RequestCancel(reason="lone \udfff"))
    assert err.value.details["field"] == "$.reason"


def test_an_outcome_of_an_earlier_attempt_is_refused() -> None:
    log = MemoryLog()
    log.apply(Submit(spec=spec(retry=RetryPolicy(max_retries=1, backoff_seconds=0))))
    log.apply(Start(worker_id="w1"))
    log.apply(Fail(attempt=1, reason=FailureReason.WORKER_LOST))  # retried: attempt 2 queued
    log.apply(Start(worker_id="w2"))
    with pytest.raises(InvalidTransition, match="attempt 1"):
        decide(log.state, Finish(attempt=1, exit_code=0))
    log.apply(Finish(attempt=2, exit_code=0))
    assert log.state is not None and log.state.state is JobState.SUCCEEDED
