"""A job's inputs and output in the state machine: inputs from the submit, the output of
the attempt that ended the job, none from an attempt that was retried or cancelled."""

from __future__ import annotations

import pytest

from jobledger.domain.errors import InvalidInput
from jobledger.domain.events import FailureReason, JobFailed, JobSucceeded
from jobledger.domain.jobs import ConfirmCancelled, Fail, Finish, RequestCancel, Start, Submit
from jobledger.domain.specs import RetryPolicy
from tests.factories import MemoryLog, spec

SHA = "ab" * 32


def test_inputs_are_kept_from_the_submit() -> None:
    log = MemoryLog()
    [rec] = log.apply(Submit(spec=spec(), inputs={"a": {"n": 1}}))
    assert rec.event.inputs == {"a": {"n": 1}}  # type: ignore[union-attr]
    assert log.state is not None and log.state.inputs == {"a": {"n": 1}}


def test_inputs_the_database_cannot_store_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        MemoryLog().apply(Submit(spec=spec(), inputs={"a": {"b": "x\x00"}}))
    assert err.value.details["field"] == "$.inputs.a.b"


def test_a_success_records_its_output() -> None:
    log = MemoryLog()
    log.apply(Submit(spec=spec()))
    log.apply(Start(worker_id="w"))
    [rec] = log.apply(Finish(exit_code=0, output={"rows": 3}, output_sha256=SHA))
    assert rec.event == JobSucceeded(exit_code=0, output={"rows": 3}, output_sha256=SHA)
    assert log.state is not None
    assert (log.state.output, log.state.output_sha256) == ({"rows": 3}, SHA)


def test_only_the_attempt_that_ends_the_job_keeps_its_output() -> None:
    log = MemoryLog()
    log.apply(Submit(spec=spec(retry=RetryPolicy(max_retries=1, backoff_seconds=0))))
    log.apply(Start(worker_id="w"))
    [retry] = log.apply(Finish(exit_code=1, output=["first"], output_sha256=SHA))
    assert not hasattr(retry.event, "output")  # a retried attempt's output is not kept
    assert log.state is not None and log.state.output is None
    log.apply(Start(worker_id="w"))
    [rec] = log.apply(
        Fail(reason=FailureReason.TIMEOUT, output=["second"], output_sha256="cd" * 32)
    )
    assert isinstance(rec.event, JobFailed) and rec.event.output == ["second"]
    assert log.state.output == ["second"] and log.state.output_sha256 == "cd" * 32


def test_a_cancelled_job_has_no_output() -> None:
    log = MemoryLog()
    log.apply(Submit(spec=spec()))
    log.apply(Start(worker_id="w"))
    log.apply(RequestCancel())
    log.apply(Finish(exit_code=0, output={"x": 1}, output_sha256=SHA))
    assert log.state is not None and log.state.state.value == "cancelled"
    assert log.state.output is None
    assert ConfirmCancelled().__struct_fields__.count("output") == 0
