"""Schedules, pure: cron in time zones (DST as cronsim defines it), and the policies
(catch-up, overlap, jitter, start/end, pause) decided on a fake clock."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobledger.domain import cron
from jobledger.domain.errors import InvalidInput, InvalidTransition, NotFound
from jobledger.domain.events import Event, EventMeta, Recorded
from jobledger.domain.schedules import (
    SCHEDULE,
    UNLIMITED,
    Bound,
    CatchUp,
    Create,
    Delete,
    Fire,
    Overlap,
    Pause,
    Resume,
    Schedule,
    ScheduleFired,
    ScheduleRun,
    ScheduleSettings,
    ScheduleSkipped,
    SkipReason,
    Trigger,
    Update,
    jitter,
    job_id,
    occurrence_request,
    occurrence_spec,
    occurrence_workflow,
    run_id,
)
from jobledger.domain.workflow_specs import WorkflowSpec
from tests.factories import spec

PRAGUE = ZoneInfo("Europe/Prague")
SID = SCHEDULE.stream_id("p", "nightly")
ZONES = ["UTC", "Europe/Prague", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/Sao_Paulo", "Pacific/Chatham", "Europe/London"]  # fmt: skip
EXPRS = ["30 2 * * *", "0 0 * * *", "*/15 * * * *", "30 * * * *", "@hourly", "@daily",
         "0 9 * * 1-5", "*/20 * * * * *", "0 30 2 * * *", "15,45 1-3 * * *"]  # fmt: skip


def settings_(**kw: object) -> ScheduleSettings:
    fields: dict[str, object] = {"cron": "* * * * *", "run": ScheduleRun(spec=spec()), **kw}
    return ScheduleSettings(**fields)  # type: ignore[arg-type]


class FakeLog:
    """Decides and records as the service does; the clock is set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.records: list[Recorded] = []
        self.state: Schedule | None = None

    def run(self, command: object) -> list[Event]:
        if isinstance(command, Fire | Trigger):
            command = Bound(SID, command)
        events = SCHEDULE.decide(self.state, command)
        for e in events:
            rec = Recorded(
                event_id=uuid.uuid4(), stream_id=SID, version=len(self.records) + 1,
                position=len(self.records) + 1, event=e, meta=EventMeta(actor="t"),
                recorded_at=self.now, stream_type="schedule",
            )  # fmt: skip
            self.records.append(rec)
            self.state = SCHEDULE.evolve(self.state, rec)
        return events

    def fire(self, at: datetime, running: int = 0, waiting: int = 0) -> list[Event]:
        self.now = at
        return self.run(Fire(now=at, running=running, waiting=waiting))


def created(t0: datetime, **kw: object) -> FakeLog:
    log = FakeLog(t0)
    log.run(Create(project="p", name="nightly", settings=settings_(**kw)))
    return log


T0 = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)


def kinds(events: list[Event]) -> list[tuple[str, datetime]]:
    out = []
    for e in events:
        if isinstance(e, ScheduleFired):
            out.append(("fired", e.occurrence))
        elif isinstance(e, ScheduleSkipped):
            out.append((str(e.reason), e.occurrence))
    return out


def minute(n: int) -> datetime:
    return datetime(2030, 1, 1, 12, n, tzinfo=UTC)


# ---- cron and time zones ------------------------------------------------------------------


def test_spring_forward_daily_0230_runs_at_0300_that_day() -> None:
    # Europe/Prague jumps from 02:00 to 03:00 on 2025-03-30: 02:30 does not exist.
    start = datetime(2025, 3, 29, 12, tzinfo=PRAGUE)
    got = list(itertools.islice(cron.after("30 2 * * *", "Europe/Prague", start), 3))
    assert [g.astimezone(PRAGUE).isoformat() for g in got] == [
        "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00", "2025-04-01T02:30:00+02:00",
    ]  # fmt: skip


def test_autumn_daily_0230_runs_once_at_the_first_0230() -> None:
    # On 2025-10-26 the clocks go from 03:00 back to 02:00: 02:30 happens twice.
    start = datetime(2025, 10, 25, 12, tzinfo=PRAGUE)
    got = list(itertools.islice(cron.after("30 2 * * *", "Europe/Prague", start), 2))
    assert [g.isoformat() for g in got] == [
        "2025-10-26T00:30:00+00:00",
        "2025-10-27T01:30:00+00:00",
    ]


def test_wildcard_hours_follow_the_clock_through_both_dst_changes() -> None:
    spring = datetime(2025, 3, 30, 0, 0, tzinfo=PRAGUE)
    got = list(itertools.islice(cron.after("30 * * * *", "Europe/Prague", spring), 3))
    assert [g.astimezone(PRAGUE).strftime("%H:%M%z") for g in got] == ["00:30+0100",
            "01:30+0100", "03:30+0200"]  # fmt: skip
    autumn = datetime(2025, 10, 26, 1, 0, tzinfo=PRAGUE)
    got = list(itertools.islice(cron.after("30 * * * *", "Europe/Prague", autumn), 3))
    assert [g.astimezone(PRAGUE).strftime("%H:%M%z") for g in got] == ["01:30+0200",
            "02:30+0200", "02:30+0100"]  # fmt: skip


def test_six_fields_have_seconds_first_and_aliases_expand() -> None:
    t = datetime(2030, 1, 1, tzinfo=UTC)
    assert next(cron.after("*/20 * * * * *", "UTC", t)) == t + timedelta(seconds=20)
    assert next(cron.after("@hourly", "UTC", t)) == t + timedelta(hours=1)
    assert next(cron.after("@DAILY", "Asia/Kolkata", t)) == datetime(2030, 1, 1, 18, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"cron": "61 * * * *"}, "$.cron"),
        ({"cron": "* * *"}, "$.cron"),
        ({"cron": "0 0 30 2 *"}, "$.cron"),
        ({"cron": "@reboot"}, "$.cron"),
        ({"timezone": "Mars/Olympus"}, "$.timezone"),
        ({"timezone": "../etc/passwd"}, "$.timezone"),
        ({"start_at": T0, "end_at": T0}, "$.end_at"),
        ({"run": ScheduleRun(spec=spec(env={"JOBLEDGER_X": "1"}))}, "$.run.spec.env.JOBLEDGER_X"),
        ({"run": ScheduleRun(spec=spec(labels={"jobledger.schedule": "x"}))},
         "$.run.spec.labels.jobledger.schedule"),
        ({"run": ScheduleRun(spec=spec(idempotency_key="k"))}, "$.run.spec.idempotency_key"),
    ],
)  # fmt: skip
def test_invalid_settings_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        created(T0, **kw)
    assert exc.value.details["field"] == field


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone=st.sampled_from(ZONES),
    expr=st.sampled_from(EXPRS),
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31),
                       timezones=st.just(UTC)),
)  # fmt: skip
def test_occurrences_increase_and_restarting_from_one_continues_the_same_sequence(
    zone: str, expr: str, start: datetime
) -> None:
    # What a scheduler does: start again after the last occurrence, in UTC (a new process).
    seq = list(itertools.islice(cron.after(expr, zone, start), 6))
    assert all(a < b for a, b in itertools.pairwise(seq))
    assert seq[0] > start
    again = [seq[0]]
    for _ in range(5):
        again.append(next(cron.after(expr, zone, again[-1])))
    assert again == seq
    # Walking back from the newest finds the same occurrences.
    back = list(itertools.islice(cron.at_or_before(expr, zone, seq[-1]), 5))
    assert back == list(reversed(seq))[:5]


@settings(max_examples=60, deadline=None)
@given(zone=st.sampled_from(ZONES), day=st.dates(datetime(2024, 1, 1).date(),
                                                 datetime(2027, 12, 31).date()))  # fmt: skip
def test_a_fixed_time_daily_schedule_runs_once_every_local_day(zone: str, day: object) -> None:
    tz = ZoneInfo(zone)
    start = datetime.combine(day, datetime.min.time(), tzinfo=tz)  # type: ignore[arg-type]
    got = list(itertools.islice(cron.after("30 2 * * *", zone, start - timedelta(seconds=1)), 10))
    local_days = [g.astimezone(tz).date() for g in got]
    assert len(set(local_days)) == len(local_days) == 10


# ---- lifecycle ----------------------------------------------------------------------------


def test_create_pause_resume_delete_and_create_again() -> None:
    log = created(T0)
    assert log.state is not None and log.state.next_occurrence == minute(1)
    with pytest.raises(InvalidTransition):
        log.run(Create(project="p", name="nightly", settings=settings_()))
    log.now = minute(1) - timedelta(seconds=10)
    log.run(Pause())
    assert log.state.paused and log.state.next_due_at is None
    assert log.fire(minute(5)) == []  # paused: nothing recorded
    log.now = minute(5) + timedelta(seconds=30)
    log.run(Resume())
    assert log.state.next_occurrence == minute(6)  # resumes from now: no catch-up
    log.run(Update(settings=settings_(cron="0 * * * *")))
    assert log.state.next_occurrence == datetime(2030, 1, 1, 13, tzinfo=UTC)
    log.run(Delete())
    with pytest.raises(NotFound):
        log.run(Pause())
    with pytest.raises(NotFound):
        log.fire(minute(59))
    log.run(Create(project="p", name="nightly", settings=settings_()))
    assert log.state.version == len(log.records)


def test_fire_records_each_occurrence_once_at_its_time() -> None:
    log = created(T0)
    assert log.fire(minute(0) + timedelta(seconds=59)) == []
    [e] = log.fire(minute(1) + timedelta(seconds=0.25))
    assert isinstance(e, ScheduleFired) and e.occurrence == minute(1) and e.lag_seconds == 0.25
    assert log.fire(minute(1) + timedelta(seconds=30)) == []  # decided once
    assert log.state is not None and log.state.next_occurrence == minute(2)


def test_job_ids_and_specs_are_deterministic_and_carry_the_schedule() -> None:
    a, b = created(T0), created(T0)
    [ea] = a.fire(minute(1))
    [eb] = b.fire(minute(1) + timedelta(seconds=3))
    assert isinstance(ea, ScheduleFired) and isinstance(eb, ScheduleFired)
    assert ea.job_id == eb.job_id
    assert a.state is not None
    job = occurrence_spec(a.state, a.state.recent[-1])
    assert job.env["JOBLEDGER_SCHEDULE"] == "nightly"
    assert job.env["JOBLEDGER_OCCURRENCE"] == "2030-01-01T12:01:00+00:00"
    assert job.labels == {"jobledger.schedule": "nightly",
                          "jobledger.occurrence": "2030-01-01T12:01:00+00:00"}  # fmt: skip
    assert job.idempotency_key == "schedule/nightly/2030-01-01T12:01:00+00:00"
    assert job.project == "p"


# ---- catch-up -----------------------------------------------------------------------------


def test_catch_up_latest_fires_the_newest_and_records_the_rest_missed() -> None:
    log = created(T0, catch_up=CatchUp.LATEST)
    got = kinds(log.fire(minute(5) + timedelta(seconds=2)))
    assert got == [("missed", minute(n)) for n in range(1, 5)] + [("fired", minute(5))]


def test_catch_up_none_skips_everything_late_but_fires_on_time() -> None:
    log = created(T0, catch_up=CatchUp.NONE, grace_seconds=10)
    got = kinds(log.fire(minute(5) + timedelta(seconds=30)))
    assert got == [("missed", minute(n)) for n in range(1, 6)]
    assert kinds(log.fire(minute(6) + timedelta(seconds=5))) == [("fired", minute(6))]


def test_catch_up_all_fires_up_to_the_limit() -> None:
    log = created(T0, catch_up=CatchUp.ALL, catch_up_limit=3, overlap=Overlap.ALLOW)
    got = kinds(log.fire(minute(6)))
    assert got == [("missed", minute(n)) for n in (1, 2, 3)] + [
        ("fired", minute(n)) for n in (4, 5, 6)
    ]


def test_a_long_downtime_lists_a_bounded_number_and_sums_up_the_rest() -> None:
    log = created(T0, cron="* * * * * *")  # every second, down for a day
    events = log.fire(T0 + timedelta(days=1))
    assert len(events) == 102
    summary = events[100]
    assert isinstance(summary, ScheduleSkipped) and summary.until is not None
    last = events[-1]
    assert isinstance(last, ScheduleFired) and last.occurrence == T0 + timedelta(days=1)
    assert summary.until == last.occurrence - timedelta(seconds=1)
    assert log.state is not None and log.state.next_occurrence == last.occurrence + timedelta(
        seconds=1
    )


@settings(max_examples=100, deadline=None)
@given(
    policy=st.sampled_from(list(CatchUp)),
    limit=st.integers(1, 5),
    gaps=st.lists(st.integers(0, 400), min_size=1, max_size=8),
    zone=st.sampled_from(ZONES),
)
def test_every_occurrence_is_decided_exactly_once_whatever_the_downtime(
    policy: CatchUp, limit: int, gaps: list[int], zone: str
) -> None:
    log = created(T0, cron="*/7 * * * * *", timezone=zone, catch_up=policy, catch_up_limit=limit,
                  overlap=Overlap.ALLOW)  # fmt: skip
    now = T0
    decided: list[datetime] = []
    for gap in gaps:
        now += timedelta(seconds=gap)
        for e in log.fire(now):
            assert isinstance(e, ScheduleFired | ScheduleSkipped)
            assert e.occurrence <= now
            decided.append(e.occurrence)
            assert isinstance(e, ScheduleFired) or e.until is None  # never that long here
    expected = [o for o in itertools.takewhile(lambda o: o <= now, cron.after("*/7 * * * * *",
                zone, T0))]  # fmt: skip
    assert decided == expected


# ---- overlap ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlap", "running", "waiting", "expected"),
    [
        (Overlap.SKIP, 0, 0, "fired"),
        (Overlap.SKIP, 1, 0, "overlap"),
        (Overlap.SKIP, 0, 1, "overlap"),
        (Overlap.QUEUE_ONE, 1, 0, "fired"),
        (Overlap.QUEUE_ONE, 1, 1, "overlap"),
        (Overlap.ALLOW, 3, 5, "fired"),
    ],
)
def test_overlap_policy(overlap: Overlap, running: int, waiting: int, expected: str) -> None:
    log = created(T0, overlap=overlap)
    [(kind, _)] = kinds(log.fire(minute(1), running=running, waiting=waiting))
    assert kind == expected


def test_queue_one_while_catching_up_queues_at_most_one_behind_the_running_one() -> None:
    log = created(T0, overlap=Overlap.QUEUE_ONE, catch_up=CatchUp.ALL, catch_up_limit=3)
    got = kinds(log.fire(minute(3), running=1))
    assert got == [("fired", minute(1)), ("overlap", minute(2)), ("overlap", minute(3))]


# ---- jitter, start/end, trigger -----------------------------------------------------------


@given(o=st.datetimes(timezones=st.just(UTC)), n=st.integers(0, 3600))
def test_jitter_is_a_bounded_hash(o: datetime, n: int) -> None:
    j = jitter("p", "nightly", o, n)
    assert 0 <= j <= n and j == jitter("p", "nightly", o, n)


def test_jitter_delays_the_occurrence_and_is_recorded() -> None:
    log = created(T0, cron="0 * * * *", jitter_seconds=600)
    assert log.state is not None
    hour = datetime(2030, 1, 1, 13, tzinfo=UTC)
    j = jitter("p", "nightly", hour, 600)
    assert log.state.next_due_at == hour + timedelta(seconds=j)
    if j > 0:
        assert log.fire(hour + timedelta(seconds=j - 0.5)) == []
    [e] = log.fire(hour + timedelta(seconds=j))
    assert isinstance(e, ScheduleFired) and e.jitter_seconds == j


def test_start_and_end_bound_the_occurrences() -> None:
    log = created(T0, start_at=minute(3), end_at=minute(4))
    assert log.state is not None and log.state.next_occurrence == minute(3)
    assert kinds(log.fire(minute(3))) == [("fired", minute(3))]
    assert kinds(log.fire(minute(4))) == [("fired", minute(4))]
    assert log.fire(minute(9)) == [] and log.state.next_occurrence is None


def test_trigger_fires_a_manual_occurrence_and_leaves_the_cron_times_alone() -> None:
    log = created(T0)
    [e] = log.run(Trigger(now=T0 + timedelta(seconds=5)))
    assert isinstance(e, ScheduleFired) and e.manual
    assert log.state is not None and log.state.next_occurrence == minute(1)
    job = occurrence_spec(log.state, log.state.recent[-1])
    assert (
        job.idempotency_key == f"schedule/nightly/manual/{(T0 + timedelta(seconds=5)).isoformat()}"
    )
    assert kinds(log.fire(minute(1))) == [("fired", minute(1))]
    assert log.state.fired == 2
    assert [r.event for r in log.records if isinstance(r.event, ScheduleSkipped)] == []
    assert SkipReason.MISSED == "missed"


# ---- a schedule that runs a definition -------------------------------------------------------


def definition_run(**kw: object) -> ScheduleRun:
    return ScheduleRun(definition="etl", params={"day": "x"}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("run", "field"),
    [
        (ScheduleRun(), "$.run"),
        (ScheduleRun(spec=spec(), definition="etl"), "$.run"),
        (ScheduleRun(spec=spec(), params={"day": "x"}), "$.run.params"),
        (ScheduleRun(spec=spec(), priority=3), "$.run.priority"),
        (definition_run(labels={"jobledger.occurrence": "x"}), "$.run.labels.jobledger.occurrence"),
    ],
)  # fmt: skip
def test_a_run_is_a_spec_or_a_definition(run: ScheduleRun, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        created(T0, run=run)
    assert exc.value.details["field"] == field


def test_a_definitions_occurrence_asks_for_the_schedules_own_concurrency_and_key() -> None:
    log = created(T0, run=definition_run(labels={"team": "data"}, priority=5))
    [fired] = log.fire(minute(1))
    assert isinstance(fired, ScheduleFired) and log.state is not None
    request = occurrence_request("p", "nightly", log.state.settings, fired.occurrence)
    assert request.definition == "etl" and request.params == {"day": "x"}
    assert request.priority == 5 and request.project == "p"
    assert request.labels == {"team": "data", "jobledger.schedule": "nightly",
                              "jobledger.occurrence": "2030-01-01T12:01:00+00:00"}  # fmt: skip
    assert request.idempotency_key == "schedule/nightly/2030-01-01T12:01:00+00:00"
    assert (request.concurrency_key, request.concurrency_limit) == ("schedule:p/nightly", 1)
    allow = settings_(run=definition_run(), overlap=Overlap.ALLOW)
    assert occurrence_request("p", "n", allow, minute(1)).concurrency_limit == UNLIMITED
    own = settings_(run=definition_run(concurrency_key="warehouse", concurrency_limit=2))
    got = occurrence_request("p", "n", own, minute(1))
    assert (got.concurrency_key, got.concurrency_limit) == ("warehouse", 2)


def test_a_blocked_run_records_the_occurrence_skipped_with_the_reason() -> None:
    log = created(T0, run=definition_run(), catch_up=CatchUp.LATEST)
    log.now = minute(2) + timedelta(seconds=1)
    got = log.run(
        Fire(now=log.now, blocked=SkipReason.DEFINITION_DISABLED, blocked_detail="maintenance")
    )
    assert kinds(got) == [("missed", minute(1)), ("definition_disabled", minute(2))]
    assert isinstance(got[-1], ScheduleSkipped) and got[-1].detail == "maintenance"
    assert log.state is not None and log.state.next_occurrence == minute(3)
    # Enabled again: the next occurrence fires.
    assert kinds(log.fire(minute(3))) == [("fired", minute(3))]


# ---- a schedule that runs a workflow --------------------------------------------------------


def workflow(*steps: dict[str, object], **kw: object) -> WorkflowSpec:
    body = {
        "steps": list(steps)
        or [
            {"name": "a", "spec": {"image": "b"}},
            {"name": "b", "spec": {"image": "b"}, "needs": ["a"]},
        ]
    }
    return msgspec.convert({**body, **kw}, WorkflowSpec)  # fmt: skip


def bad_step(**kw: object) -> dict[str, object]:
    return {"name": "a", "spec": {"image": "b"}, **kw}


@pytest.mark.parametrize(
    ("run", "field"),
    [
        (ScheduleRun(spec=spec(), workflow=workflow()), "$.run"),
        (ScheduleRun(definition="etl", workflow=workflow()), "$.run"),
        (ScheduleRun(workflow=workflow(), params={"day": "x"}), "$.run.params"),
        (ScheduleRun(workflow=workflow(bad_step(needs=["zz"]))),
         "$.run.workflow.steps[0].needs[0]"),
        (ScheduleRun(workflow=workflow(bad_step(), bad_step())), "$.run.workflow.steps[1].name"),
        (ScheduleRun(workflow=workflow(bad_step(spec={"image": "b", "idempotency_key": "k"}))),
         "$.run.workflow.steps[0].spec.idempotency_key"),
        (ScheduleRun(workflow=workflow(bad_step(spec={"image": "b", "project": "q"}))),
         "$.run.workflow.steps[0].spec.project"),
        (ScheduleRun(workflow=workflow(bad_step(), project="q")), "$.run.workflow.project"),
        (ScheduleRun(workflow=workflow(bad_step(), labels={"jobledger.schedule": "x"})),
         "$.run.workflow.labels.jobledger.schedule"),
    ],
)  # fmt: skip
def test_a_workflow_run_is_checked_as_post_workflows_checks_it_under_the_run(
    run: ScheduleRun, field: str
) -> None:
    with pytest.raises(InvalidInput) as exc:
        created(T0, run=run)
    assert exc.value.details["field"] == field


def test_a_workflow_schedule_starts_a_run_per_occurrence_with_an_id_from_it() -> None:
    # A step in the schedule's project by name is fine (as `default`, the field's default).
    wf = workflow(bad_step(spec={"image": "b", "project": "p"}), {"name": "z", "spec":
                  {"image": "b"}, "needs": ["a"]}, labels={"team": "data"})  # fmt: skip
    a, b = created(T0, run=ScheduleRun(workflow=wf)), created(T0, run=ScheduleRun(workflow=wf))
    [ea] = a.fire(minute(1))
    [eb] = b.fire(minute(1) + timedelta(seconds=3))
    assert isinstance(ea, ScheduleFired) and isinstance(eb, ScheduleFired)
    assert ea.job_id is None and ea.workflow_run is not None
    assert ea.workflow_run == eb.workflow_run == run_id(SID, minute(1))
    assert ea.workflow_run != job_id(SID, minute(1))
    assert a.state is not None
    ref = a.state.recent[-1]
    assert ref.started == ea.workflow_run and ref.job_id is None
    submit = occurrence_workflow(a.state, ref)
    assert submit.spec.project == "p" and submit.spec.labels == {"team": "data"}
    assert (submit.schedule, submit.occurrence) == ("nightly", minute(1))
    # A manual occurrence gets its own id; the overlap policy counts runs as jobs.
    [manual] = a.run(Trigger(now=minute(1) + timedelta(seconds=5)))
    assert isinstance(manual, ScheduleFired) and manual.manual
    assert manual.workflow_run == run_id(SID, minute(1) + timedelta(seconds=5), manual=True)
    assert kinds(a.fire(minute(2), running=1)) == [("overlap", minute(2))]
    assert kinds(a.fire(minute(3), waiting=0, running=0)) == [("fired", minute(3))]


def test_a_fired_event_written_before_workflows_still_decodes() -> None:
    old = (
        b'{"type": "ScheduleFired", "occurrence": "2030-01-01T12:01:00Z", "job_id": "%s", '
        b'"lag_seconds": 0.5}'
    )
    jid = job_id(SID, minute(1))
    event = SCHEDULE.decode("ScheduleFired", 1, old % str(jid).encode())
    assert isinstance(event, ScheduleFired)
    assert (event.job_id, event.workflow_run, event.manual) == (jid, None, False)
