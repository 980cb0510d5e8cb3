"""Workflows, pure: spec validation (with the field at fault), planning (what becomes ready
next), policies, cancel, rerun, and a property test over random graphs and outcomes."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobledger.domain.errors import InvalidTransition, InvalidValue, NotFound
from jobledger.domain.events import Event, EventMeta, Recorded, encode_event
from jobledger.domain.templates import DefinitionSubmit
from jobledger.domain.workflow_specs import (
    MAX_STEPS,
    Condition,
    FailurePolicy,
    Step,
    WorkflowSpec,
    needs_of,
    validate,
)
from jobledger.domain.workflows import (
    STEP_FAILED,
    STEP_TERMINAL,
    WORKFLOW,
    Cancel,
    Outcome,
    RerunMode,
    Run,
    RunState,
    SkipReason,
    StepJobEnded,
    StepJobStarted,
    StepReady,
    StepStarted,
    StepState,
    Submit,
    WorkflowCancelRequested,
    child_job_id,
    child_label,
    fold,
    plan,
    ready_steps,
    rerun_plan,
    step_inputs,
    waiting_reason,
)
from tests.factories import T0, spec


def step(name: str, *needs: str, **kw: Any) -> Step:
    return Step(name=name, spec=spec(), needs=list(needs), **kw)


def workflow(*steps: Step, **kw: Any) -> WorkflowSpec:
    return WorkflowSpec(steps=list(steps), **kw)


class RunLog:
    """Decides and records as the service would, with a clock ticking a second per event."""

    def __init__(self, run_id: uuid.UUID | None = None) -> None:
        self.id = run_id or uuid.uuid4()
        self.records: list[Recorded] = []
        self.state: Run | None = None

    def run(self, command: Any) -> list[Event]:
        events = WORKFLOW.decide(self.state, command)
        for e in events:
            n = len(self.records) + 1
            rec = Recorded(
                event_id=uuid.uuid4(), stream_id=self.id, version=n, position=n, event=e,
                meta=EventMeta(actor="t"), recorded_at=T0 + timedelta(seconds=n),
                stream_type="workflow",
            )  # fmt: skip
            self.records.append(rec)
            self.state = WORKFLOW.evolve(self.state, rec)
        return events

    @property
    def s(self) -> Run:
        assert self.state is not None
        return self.state

    def start(self, name: str) -> uuid.UUID:
        job = child_job_id(self.id, name)
        self.run(StepJobStarted(step=name, job_id=job))
        return job

    def end(self, name: str, outcome: Outcome = Outcome.SUCCEEDED, **kw: Any) -> list[Event]:
        job = self.s.steps[name].job_id
        assert job is not None
        return self.run(StepJobEnded(step=name, job_id=job, outcome=outcome, **kw))

    def states(self) -> dict[str, str]:
        return {n: s.state.value for n, s in self.s.steps.items()}


def submitted(wf: WorkflowSpec, **kw: Any) -> RunLog:
    log = RunLog()
    log.run(Submit(spec=wf, **kw))
    return log


# ---- validation -----------------------------------------------------------------------


def refused(wf: WorkflowSpec) -> InvalidValue:
    with pytest.raises(InvalidValue) as info:
        validate(wf)
    return info.value


def test_unknown_need_is_named_by_its_path() -> None:
    err = refused(workflow(step("a"), step("b", "a", "x")))
    assert err.details["field"] == "$.steps[1].needs[1]"
    assert err.details["step"] == "b" and "'x'" in err.message


def test_a_step_needing_itself_is_refused() -> None:
    err = refused(workflow(step("a", "a")))
    assert err.details["field"] == "$.steps[0].needs[0]" and "itself" in err.message


def test_a_cycle_names_its_steps_in_order() -> None:
    err = refused(workflow(step("z"), step("a", "c"), step("b", "a"), step("c", "b")))
    assert err.details["cycle"] == ["a", "c", "b", "a"]
    assert err.details["field"] == "$.steps[1].needs[0]"
    assert "a -> c -> b -> a" in err.message


def test_a_cycle_through_stages_points_at_the_stage() -> None:
    err = refused(workflow(step("a", "b", stage=1), step("b", stage=2)))
    assert err.details["cycle"] == ["a", "b", "a"]
    assert err.details["field"] == "$.steps[0].needs[0]"
    err = refused(workflow(Step(name="b", spec=spec(), stage=2), step("a", "b", stage=1)))
    assert err.details["field"] == "$.steps[0].stage"


def test_duplicate_names_and_too_many_steps() -> None:
    err = refused(workflow(step("a"), step("b"), step("a")))
    assert err.details["field"] == "$.steps[2].name"
    err = refused(workflow(*(step(f"s{i}") for i in range(MAX_STEPS + 1))))
    assert err.details["field"] == "$.steps"
    validate(workflow(*(step(f"s{i}") for i in range(MAX_STEPS))))


def test_msgspec_refuses_too_many_steps_at_the_boundary() -> None:
    body = {"steps": [{"name": f"s{i}", "spec": {"image": "x"}} for i in range(MAX_STEPS + 1)]}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.steps"):
        msgspec.convert(body, WorkflowSpec)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert(
            {"steps": [{"name": "a", "spec": {"image": "x"}, "nedds": []}]}, WorkflowSpec
        )


def test_what_a_step_runs_is_exactly_one_thing() -> None:
    err = refused(workflow(Step(name="a")))
    assert err.details["field"] == "$.steps[0]"
    both = Step(name="a", spec=spec(), definition=DefinitionSubmit(definition="d"))
    assert refused(workflow(both)).details["field"] == "$.steps[0]"
    validate(workflow(Step(name="a", definition=DefinitionSubmit(definition="d", params={"n": 1}))))


def test_fields_a_run_sets_itself_are_refused() -> None:
    cases = {
        "$.steps[0].spec.idempotency_key": Step(name="a", spec=spec(idempotency_key="k")),
        "$.steps[0].spec.env.JOBLEDGER_X": Step(name="a", spec=spec(env={"JOBLEDGER_X": "1"})),
        "$.steps[0].spec.project": Step(name="a", spec=spec(project="other")),
        "$.steps[0].definition.project": Step(
            name="a", definition=DefinitionSubmit(definition="d", project="other")
        ),
        "$.steps[0].spec.labels.jobledger.step": Step(
            name="a", spec=spec(labels={"jobledger.step": "x"})
        ),
    }
    for field, bad in cases.items():
        assert refused(workflow(bad, project="p")).details["field"] == field, field
    validate(workflow(Step(name="a", spec=spec(project="p")), project="p"))


def test_on_failure_needs_something_to_handle() -> None:
    err = refused(workflow(step("a", condition=Condition.ON_FAILURE)))
    assert err.details["field"] == "$.steps[0].condition"


def test_stages_are_needs_on_the_previous_stage() -> None:
    wf = workflow(
        step("x1", stage=1), step("x2", stage=1), step("t", stage=3), step("free"),
        step("l", "free", stage=7),
    )  # fmt: skip
    assert needs_of(wf) == {
        "x1": (), "x2": (), "t": ("x1", "x2"), "free": (), "l": ("t", "free"),
    }  # fmt: skip


def test_submit_validates() -> None:
    with pytest.raises(InvalidValue):
        WORKFLOW.decide(None, Submit(spec=workflow(step("a", "b"))))


# ---- planning ---------------------------------------------------------------------------

DIAMOND = workflow(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))


def test_diamond_readiness_in_both_orders() -> None:
    for first, second in (("b", "c"), ("c", "b")):
        log = submitted(DIAMOND)
        assert ready_steps(log.s) == ["a"]
        assert waiting_reason(log.s, "d") == "waiting for b, c"
        log.start("a")
        assert log.end("a", output={"n": 1})[1:] == [StepReady(step="b"), StepReady(step="c")]
        log.start(first)
        log.start(second)
        assert log.end(first, output={first: 2})[1:] == []
        assert waiting_reason(log.s, "d") == f"waiting for {second}"
        assert log.end(second, output={second: 3})[1:] == [StepReady(step="d")]
        assert step_inputs(log.s, "d") == {first: {first: 2}, second: {second: 3}}
        assert list(step_inputs(log.s, "d")) == ["b", "c"]  # spec order, not end order
        assert step_inputs(log.s, "b") == {"a": {"n": 1}}
        log.start("d")
        assert [type(e).__name__ for e in log.end("d")] == ["StepSucceeded", "WorkflowSucceeded"]
        assert log.s.state is RunState.SUCCEEDED
        # the runtime may tell a job's end twice, even after the run's end: nothing new
        assert log.end("d") == []
        assert waiting_reason(log.s, "d") is None


def test_child_label_and_ids() -> None:
    rid = uuid.UUID("1a2b3c4d-0000-4000-8000-000000000000")
    assert child_label(rid, DIAMOND, "a") == "1a2b3c4d.1"
    assert child_label(rid, DIAMOND, "d") == "1a2b3c4d.4"
    with pytest.raises(NotFound):
        child_label(rid, DIAMOND, "e")
    assert child_job_id(rid, "b") == child_job_id(rid, "b") != child_job_id(rid, "c")


def with_cleanup(policy: FailurePolicy) -> WorkflowSpec:
    # a -> b -> c ; x (independent, long) -> y ; cleanup always after c ; alert on failure of b
    return workflow(
        step("a"), step("b", "a"), step("c", "b"), step("x"), step("y", "x"),
        step("cleanup", "c", condition=Condition.ALWAYS),
        step("alert", "c", condition=Condition.ON_FAILURE),
        failure_policy=policy,
    )  # fmt: skip


def test_stop_policy_starts_only_cleanup_and_alert_after_a_failure() -> None:
    log = submitted(with_cleanup(FailurePolicy.STOP))
    assert ready_steps(log.s) == ["a", "x"]
    log.start("a")
    log.start("x")
    log.end("a")
    log.start("b")
    log.end("b", Outcome.FAILED, reason="exit code 3")
    # c is skipped at once, so cleanup and alert (whose need c is finished) become ready;
    # y will not start after x although x is still going.
    assert log.states() == {
        "a": "succeeded", "b": "failed", "c": "skipped", "x": "running", "y": "skipped",
        "cleanup": "ready", "alert": "ready",
    }  # fmt: skip
    assert log.s.steps["y"].skip_reason is SkipReason.STOPPED
    assert log.s.steps["c"].skip_reason is SkipReason.STOPPED
    assert log.s.steps["b"].reason == "exit code 3"
    log.start("cleanup")
    log.start("alert")
    log.end("cleanup")
    log.end("alert")
    assert log.s.state is RunState.RUNNING  # x still runs
    events = log.end("x")
    assert type(events[-1]).__name__ == "WorkflowFailed" and events[-1].failed == ["b"]  # type: ignore[attr-defined]


def test_continue_policy_goes_on_with_what_does_not_depend_on_the_failure() -> None:
    log = submitted(with_cleanup(FailurePolicy.CONTINUE))
    for name in ("a", "x"):
        log.start(name)
    log.end("a")
    log.start("b")
    log.end("b", Outcome.FAILED, reason="boom")
    assert log.s.steps["c"].skip_reason is SkipReason.NEEDS_NOT_SUCCEEDED
    assert log.s.steps["c"].reason == "b failed"
    log.end("x")
    assert ready_steps(log.s) == ["y", "cleanup", "alert"]
    for name in ("y", "cleanup", "alert"):
        log.start(name)
        log.end(name)
    assert log.s.state is RunState.FAILED
    assert log.states()["y"] == "succeeded"


def test_no_failure_skips_the_alert_and_runs_the_cleanup() -> None:
    log = submitted(with_cleanup(FailurePolicy.STOP))
    while ready := ready_steps(log.s):
        for name in ready:
            log.start(name)
            log.end(name)
    assert log.s.state is RunState.SUCCEEDED
    assert log.s.steps["alert"].skip_reason is SkipReason.NO_FAILURE
    assert log.s.steps["cleanup"].state is StepState.SUCCEEDED


def test_skips_cascade_in_one_decision() -> None:
    on_failure = Condition.ON_FAILURE
    wf = workflow(step("a"), step("b", "a"), step("c", "b"), step("d", "c", condition=on_failure),
                  failure_policy=FailurePolicy.CONTINUE)  # fmt: skip
    log = submitted(wf)
    log.start("a")
    events = log.end("a", Outcome.FAILED, reason="x")
    # b and c skipped, and d (on_failure: a failed upstream) ready, all in this decision
    assert [type(e).__name__ for e in events] == [
        "StepFailed",
        "StepSkipped",
        "StepSkipped",
        "StepReady",
    ]
    assert plan(log.s) == []


def test_a_child_job_cancelled_on_its_own_counts_as_a_failure() -> None:
    log = submitted(
        workflow(step("a"), step("b", "a"), step("c", "a", condition=Condition.ON_FAILURE))
    )
    log.start("a")
    log.end("a", Outcome.CANCELLED)
    assert log.states() == {"a": "cancelled", "b": "skipped", "c": "ready"}
    log.start("c")
    log.end("c")
    assert log.s.state is RunState.FAILED


def test_commands_out_of_turn_are_refused_or_idempotent() -> None:
    log = submitted(DIAMOND)
    with pytest.raises(InvalidTransition):
        log.start("b")  # not ready
    job = log.start("a")
    assert log.run(StepJobStarted(step="a", job_id=job)) == []
    with pytest.raises(InvalidTransition):
        log.run(StepJobEnded(step="a", job_id=uuid.uuid4(), outcome=Outcome.SUCCEEDED))
    log.end("a")
    assert log.run(StepJobEnded(step="a", job_id=job, outcome=Outcome.FAILED)) == []
    assert log.s.steps["a"].state is StepState.SUCCEEDED


# ---- cancel -----------------------------------------------------------------------------


def test_cancel_skips_what_has_not_started_and_names_running_jobs() -> None:
    wf = workflow(step("a"), step("b"), step("c"), step("d", "a", "b"),
                  step("cleanup", "d", condition=Condition.ALWAYS))  # fmt: skip
    log = submitted(wf)
    ja, jb = log.start("a"), log.start("b")
    events = log.run(Cancel(reason="enough"))
    assert events[0] == WorkflowCancelRequested(reason="enough", jobs=[ja, jb])
    assert log.states() == {
        "a": "running", "b": "running", "c": "skipped", "d": "skipped", "cleanup": "skipped",
    }  # fmt: skip
    assert log.s.state is RunState.CANCELLING
    assert log.run(Cancel()) == []
    with pytest.raises(InvalidTransition):
        log.start("c")
    log.end("a", Outcome.CANCELLED)
    assert log.s.state is RunState.CANCELLING
    events = log.end("b")  # it finished before its cancel reached it
    assert type(events[-1]).__name__ == "WorkflowCancelled"
    assert log.s.state is RunState.CANCELLED
    with pytest.raises(InvalidTransition):
        log.run(Cancel())


def test_cancel_with_nothing_running_ends_at_once() -> None:
    log = submitted(DIAMOND)
    events = log.run(Cancel())
    assert [type(e).__name__ for e in events][-1] == "WorkflowCancelled"
    assert all(s.skip_reason is SkipReason.CANCELLED for s in log.s.steps.values())


# ---- rerun ------------------------------------------------------------------------------


def test_rerun_from_failure_reuses_what_succeeded() -> None:
    wf = workflow(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"),
                  step("cleanup", "d", condition=Condition.ALWAYS),
                  failure_policy=FailurePolicy.CONTINUE)  # fmt: skip
    old = submitted(wf)
    old.start("a")
    old.end("a", output={"rows": 3}, output_sha256="ab" * 32)
    old.start("b")
    old.start("c")
    old.end("b", output=1)
    old.end("c", Outcome.FAILED, reason="x")
    old.start("cleanup")
    old.end("cleanup")
    assert old.s.state is RunState.FAILED
    with pytest.raises(InvalidTransition):
        rerun_plan(submitted(wf).s, RerunMode.WHOLE)  # still running

    submit = rerun_plan(old.s, RerunMode.FROM_FAILURE)
    assert set(submit.reuse) == {"a", "b"}  # cleanup ran after a failure: again
    new = RunLog()
    events = new.run(submit)
    assert [type(e).__name__ for e in events] == [
        "WorkflowSubmitted", "StepReused", "StepReused", "StepReady",
    ]  # fmt: skip
    assert new.s.rerun_of == old.id
    assert new.s.steps["a"].from_run == old.id and new.s.steps["a"].output == {"rows": 3}
    assert ready_steps(new.s) == ["c"]
    assert step_inputs(new.s, "c") == {"a": {"rows": 3}}
    new.start("c")
    new.end("c", output=2)
    new.start("d")
    new.end("d")
    new.start("cleanup")
    new.end("cleanup")
    assert new.s.state is RunState.SUCCEEDED

    # A rerun of the rerun links reused steps to the run that really ran them.
    whole = rerun_plan(new.s, RerunMode.WHOLE)
    assert whole.reuse == {} and whole.rerun_of == new.id
    with pytest.raises(InvalidTransition):
        rerun_plan(new.s, RerunMode.FROM_FAILURE)  # nothing failed
    failed_again = RunLog()
    failed_again.run(rerun_plan(new.s, RerunMode.WHOLE))
    assert ready_steps(failed_again.s) == ["a"]


def test_reused_links_point_at_the_run_that_ran_the_step() -> None:
    wf = workflow(step("a"), step("b", "a"))
    first = submitted(wf)
    first.start("a")
    first.end("a", output="x")
    first.start("b")
    first.end("b", Outcome.FAILED, reason="x")
    second = RunLog()
    second.run(rerun_plan(first.s, RerunMode.FROM_FAILURE))
    second.start("b")
    second.end("b", Outcome.FAILED, reason="again")
    third = rerun_plan(second.s, RerunMode.FROM_FAILURE)
    assert third.reuse["a"].from_run == first.id


# ---- folds ------------------------------------------------------------------------------


def refold(log: RunLog) -> Run | None:
    """The state read back from the events' stored form."""
    codec = WORKFLOW.codec
    records = [
        msgspec.structs.replace(
            r,
            event=codec.decode(type(r.event).__name__, r.event.SCHEMA, encode_event(r.event)),
        )
        for r in log.records
    ]
    return fold(records)


# ---- the property test --------------------------------------------------------------------


@st.composite
def graphs(draw: st.DrawFn) -> WorkflowSpec:
    n = draw(st.integers(1, 15))
    steps = []
    for i in range(n):
        needs = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        conds = [Condition.ON_SUCCESS, Condition.ALWAYS] + ([Condition.ON_FAILURE] if needs else [])
        steps.append(
            step(f"s{i}", *(f"s{j}" for j in needs), condition=draw(st.sampled_from(conds)))
        )
    policy = draw(st.sampled_from(list(FailurePolicy)))
    return workflow(*steps, failure_policy=policy)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wf=graphs(), data=st.data())
def test_random_runs_respect_needs_and_always_end(wf: WorkflowSpec, data: st.DataObject) -> None:
    log = submitted(wf)
    needs = needs_of(wf)
    made_ready: set[str] = set()
    started: set[str] = set()
    cancelled = failed = False
    decisions = 0
    bound = 3 * len(wf.steps) + 2

    def check(events: list[Event]) -> None:
        nonlocal failed
        s = log.s
        for e in events:
            if isinstance(e, StepReady | StepStarted):
                assert not cancelled, "nothing becomes ready or starts after a cancel"
                seen = made_ready if isinstance(e, StepReady) else started
                assert e.step not in seen, f"{e.step} twice"
                seen.add(e.step)
                assert all(s.steps[n].state in STEP_TERMINAL for n in needs[e.step])
                cond = next(x.condition for x in wf.steps if x.name == e.step)
                if isinstance(e, StepReady) and failed and cond is Condition.ON_SUCCESS:
                    assert wf.failure_policy is FailurePolicy.CONTINUE
        failed = failed or any(x.state in STEP_FAILED for x in s.steps.values())
        assert plan(s) == [], "a decision records everything that follows from it"

    check([r.event for r in log.records])
    while not log.s.is_terminal:
        decisions += 1
        assert decisions <= bound, "the run does not end"
        ready = ready_steps(log.s)
        running = [n for n, x in log.s.steps.items() if x.state is StepState.RUNNING]
        assert ready or running, "stuck: nothing to start or wait for, yet not ended"
        moves = [("start", n) for n in ready] + [("end", n) for n in running]
        if not cancelled:
            moves.append(("cancel", ""))
        kind, name = data.draw(st.sampled_from(moves))
        if kind == "start":
            events = log.run(StepJobStarted(step=name, job_id=child_job_id(log.id, name)))
        elif kind == "end":
            outcome = data.draw(st.sampled_from(list(Outcome)))
            events = log.end(name, outcome, reason="r", output={"from": name})
        else:
            cancelled = True
            events = log.run(Cancel())
            running_jobs = {x.job_id for x in log.s.steps.values() if x.state is StepState.RUNNING}
            assert set(events[0].jobs) == running_jobs  # type: ignore[attr-defined]
        check(events)
    assert all(x.state in STEP_TERMINAL for x in log.s.steps.values())
    assert (log.s.state is RunState.CANCELLED) == cancelled
    assert refold(log) == log.s
