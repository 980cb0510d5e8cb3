"""Builders shared by tests: specs, commands, and a pure in-memory log for the domain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from jobledger.domain.events import Event, EventMeta, FailureReason, Recorded, Usage
from jobledger.domain.jobs import (
    Command,
    ConfirmCancelled,
    Fail,
    Finish,
    Job,
    RequestCancel,
    Start,
    Submit,
    decide,
    evolve,
)
from jobledger.domain.specs import JobSpec, RetryPolicy

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def spec(**kw: object) -> JobSpec:
    fields: dict[str, object] = {"image": "jobledger-test:latest", "command": ["true"], **kw}
    return JobSpec(**fields)  # type: ignore[arg-type]


class MemoryLog:
    """Applies commands the way the service does, without a database: decide, then record
    with a made-up position and a clock that ticks one second per event."""

    def __init__(self, job_id: uuid.UUID | None = None) -> None:
        self.job_id = job_id or uuid.uuid4()
        self.records: list[Recorded] = []
        self.state: Job | None = None

    def record(self, events: list[Event], actor: str = "test") -> list[Recorded]:
        new = []
        for event in events:
            n = len(self.records) + 1
            rec = Recorded(
                event_id=uuid.uuid4(),
                stream_id=self.job_id,
                version=n,
                position=n * 10,
                event=event,  # type: ignore[arg-type]
                meta=EventMeta(actor=actor),
                recorded_at=T0 + timedelta(seconds=n),
            )
            self.state = evolve(self.state, rec)
            self.records.append(rec)
            new.append(rec)
        return new

    def apply(self, command: Command, actor: str = "test") -> list[Recorded]:
        return self.record(decide(self.state, command), actor)


# PostgreSQL cannot store NUL, and lone surrogates are not UTF-8; commands carrying either
# are refused (tested on their own).
texts = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    max_size=40,
)

usages = st.none() | st.builds(
    Usage,
    wall_seconds=st.floats(0, 1e4, allow_nan=False),
    cpu_seconds=st.floats(0, 1e4, allow_nan=False),
    peak_memory_bytes=st.integers(0, 2**40),
)
commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Start, worker_id=st.sampled_from(["w1", "w2"])),
    st.builds(RequestCancel, reason=st.none() | texts),
    st.builds(Finish, exit_code=st.integers(0, 255), oom_killed=st.booleans(), usage=usages),
    st.builds(
        Fail,
        reason=st.sampled_from(list(FailureReason)),
        message=st.none() | texts,
        exit_code=st.none() | st.integers(0, 255),
        usage=usages,
    ),
    st.builds(ConfirmCancelled, exit_code=st.none() | st.integers(0, 255), usage=usages),
)
specs = st.builds(
    spec,
    priority=st.integers(-1000, 1000),
    retry=st.builds(RetryPolicy, max_retries=st.integers(0, 3), backoff_seconds=st.floats(0, 60)),
    labels=st.dictionaries(st.sampled_from(["team", "env", "a/b"]), texts, max_size=3),
)
submits = st.builds(Submit, spec=specs)
