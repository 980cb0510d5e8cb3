"""Streams of several kinds: a toy kind registered here takes the path every new kind will
(named stream ids, tombstone and re-creation, the hash chain, verify, one kind per stream)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import msgspec
import pytest

from jobledger.domain.errors import InvalidInput, InvalidTransition, NotFound
from jobledger.domain.events import Event, EventCodec, EventMeta, Recorded
from jobledger.domain.kinds import Registry, StreamKind, named_stream_id
from jobledger.domain.registry import KINDS
from jobledger.projections.named import StateProjection
from jobledger.projections.registry import PROJECTIONS
from jobledger.replay.archive import export, import_lines, stream_at
from jobledger.replay.rebuild import rebuild
from jobledger.replay.verify import Verifier
from jobledger.service import JobService, StreamService
from jobledger.store.eventstore import AppendItem, EventStore
from tests.api.test_jobs_api import Client
from tests.factories import spec


class CounterCreated(Event, frozen=True, kw_only=True):
    project: str
    name: str


class CounterAdded(Event, frozen=True, kw_only=True):
    by: int


class CounterDeleted(Event, frozen=True, kw_only=True):
    """The tombstone: the name may be created again, continuing the stream."""


class Counter(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    name: str
    value: int = 0
    deleted: bool = False
    version: int = 0


class Create(msgspec.Struct, frozen=True):
    project: str
    name: str


class Add(msgspec.Struct, frozen=True):
    by: int


class Delete(msgspec.Struct, frozen=True):
    pass


def decide(state: Counter | None, command: object) -> list[Event]:
    match command:
        case Create(project=project, name=name):
            if state is not None and not state.deleted:
                raise InvalidTransition(f"counter {name} exists")
            return [CounterCreated(project=project, name=name)]
    if state is None or state.deleted:
        raise NotFound("no such counter")
    match command:
        case Add(by=by):
            return [CounterAdded(by=by)]
        case Delete():
            return [CounterDeleted()]
    raise InvalidTransition(f"cannot {type(command).__name__}")


def evolve(state: Counter | None, rec: Recorded) -> Counter:
    match rec.event:
        case CounterCreated(project=project, name=name):
            return Counter(project=project, name=name, version=rec.version)
        case CounterAdded(by=by) if state is not None:
            return msgspec.structs.replace(state, value=state.value + by, version=rec.version)
        case CounterDeleted() if state is not None:
            return msgspec.structs.replace(state, deleted=True, version=rec.version)
    raise AssertionError(f"unexpected {rec.event!r}")


COUNTER = StreamKind(
    "counter",
    EventCodec([CounterCreated, CounterAdded, CounterDeleted], {}),
    evolve,
    decide,
    named=True,
)
META = EventMeta(actor="test")


@pytest.fixture
def counter_kind() -> Iterator[StreamKind]:
    KINDS.register(COUNTER)
    try:
        yield COUNTER
    finally:
        KINDS.unregister(COUNTER.name)


@pytest.fixture
async def counter_table(
    pool: asyncpg.Pool, counter_kind: StreamKind
) -> AsyncIterator[StateProjection]:
    """The toy kind's state projection: a table of live counters (deleted ones have no row)."""
    await pool.execute(
        "CREATE TABLE counters (stream_id uuid PRIMARY KEY, project text NOT NULL,"
        " name text NOT NULL, value integer NOT NULL, version integer NOT NULL)"
    )
    projection = StateProjection(
        counter_kind,
        "counters",
        ["project", "name", "value", "version"],
        lambda c: None if c.deleted else (c.project, c.name, c.value, c.version),
    )
    PROJECTIONS.register(projection)
    try:
        yield projection
    finally:
        PROJECTIONS.unregister(counter_kind.name)


async def test_a_kinds_state_projection_is_kept_inline_verified_and_rebuilt(
    pool: asyncpg.Pool, store: EventStore, counter_table: StateProjection
) -> None:
    streams = StreamService(store)
    a, b = COUNTER.stream_id("p", "a"), COUNTER.stream_id("p", "b")
    await streams.execute("counter", a, Create("p", "a"), META)
    await streams.execute("counter", a, Add(3), META)
    await streams.execute("counter", b, Create("p", "b"), META)
    await streams.execute("counter", b, Delete(), META)
    rows = await pool.fetch("SELECT stream_id, name, value, version FROM counters")
    assert [tuple(r) for r in rows] == [(a, "a", 3, 2)]  # the deleted one has no row
    assert [p async for p in Verifier(pool).problems()] == []

    # A row changed behind the log's back, another lost, a third with no stream: verify
    # names each, and a rebuild makes the table equal to the fold again.
    await pool.execute("UPDATE counters SET value = 99")
    stray = uuid.uuid4()
    await pool.execute("INSERT INTO counters VALUES ($1, 'p', 'x', 1, 1)", stray)
    problems = {(p.kind, p.stream_id, p.detail) async for p in Verifier(pool).problems()}
    assert problems == {
        ("projection_differs", a, "counters row differs in: value"),
        ("orphan_projection", stray, "a counters row with no events"),
    }
    report = await rebuild(pool)
    assert report.tables["counters"] == 2  # (and the registered kinds' own tables)
    rows = await pool.fetch("SELECT stream_id, value FROM counters")
    assert [tuple(r) for r in rows] == [(a, 3)]
    assert [p async for p in Verifier(pool).problems()] == []


def test_named_stream_ids_are_deterministic_and_distinct() -> None:
    sid = COUNTER.stream_id("p", "n")
    assert sid == named_stream_id("counter", "p", "n") == COUNTER.stream_id("p", "n")
    assert len({sid, COUNTER.stream_id("q", "n"), COUNTER.stream_id("p", "m")}) == 3
    assert named_stream_id("schedule", "p", "n") != sid
    with pytest.raises(ValueError, match="not named"):
        KINDS.get("job").stream_id("p", "n")


def test_the_registry_refuses_a_kind_twice_and_names_unknown_ones() -> None:
    registry = Registry([COUNTER])
    with pytest.raises(ValueError, match="registered already"):
        registry.register(COUNTER)
    with pytest.raises(ValueError, match="unknown stream kind 'nope'"):
        registry.get("nope")
    assert registry.names() == ["counter"]


async def test_a_named_aggregate_is_deleted_by_a_tombstone_and_created_again_on_its_stream(
    store: EventStore, counter_kind: StreamKind
) -> None:
    streams = StreamService(store)
    sid = counter_kind.stream_id("p", "visits")
    await streams.execute("counter", sid, Create("p", "visits"), META)
    await streams.execute("counter", sid, Add(2), META)
    with pytest.raises(InvalidTransition):
        await streams.execute("counter", sid, Create("p", "visits"), META)
    await streams.execute("counter", sid, Delete(), META)
    with pytest.raises(NotFound):
        await streams.execute("counter", sid, Add(1), META)
    again = await streams.execute("counter", sid, Create("p", "visits"), META)
    assert again == Counter(project="p", name="visits", value=0, version=4)

    records = await store.read_stream(sid)
    assert [type(r.event).__name__ for r in records] == [
        "CounterCreated", "CounterAdded", "CounterDeleted", "CounterCreated",
    ]  # fmt: skip
    assert {r.stream_type for r in records} == {"counter"}
    assert COUNTER.fold(records[:2]).value == 2  # the state at any point, from the log alone


async def test_verify_checks_every_kind_and_the_chain_covers_the_kind(
    pool: asyncpg.Pool, store: EventStore, counter_kind: StreamKind
) -> None:
    await JobService(store).submit(spec(), META)
    sid = counter_kind.stream_id("p", "n")
    streams = StreamService(store)
    await streams.execute("counter", sid, Create("p", "n"), META)
    await streams.execute("counter", sid, Add(5), META)

    verifier = Verifier(pool)
    assert [p async for p in verifier.problems()] == []
    assert (verifier.report.streams, verifier.report.events) == (2, 3)

    # A kind changed behind the append-only guard no longer matches the chain.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
        await conn.execute(
            "UPDATE events SET stream_type = 'counter2' WHERE stream_id = $1 AND version = 2", sid
        )
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_no_update")
    kinds = {(p.kind, p.stream_id, p.version) async for p in Verifier(pool).problems()}
    assert ("broken_chain", sid, 2) in kinds


async def test_a_stream_keeps_its_kind(store: EventStore, counter_kind: StreamKind) -> None:
    view, _ = await JobService(store).submit(spec(), META)
    with pytest.raises(asyncpg.CheckViolationError, match="is a job stream, not counter"):
        await store.append_many(
            [AppendItem(view.id, 1, [CounterAdded(by=1)], stream_type="counter")], META
        )
    with pytest.raises(InvalidInput, match="is a job stream, not counter"):
        await StreamService(store).execute("counter", view.id, Add(1), META)
    assert len(await store.read_stream(view.id)) == 1


async def test_an_event_of_an_unregistered_kind_is_reported_not_guessed(
    pool: asyncpg.Pool, store: EventStore, counter_kind: StreamKind
) -> None:
    sid = uuid.uuid4()
    await StreamService(store).execute("counter", sid, Create("p", "gone"), META)
    KINDS.unregister("counter")
    problems = [p async for p in Verifier(pool).problems()]
    assert [(p.kind, p.stream_type, p.stream_id) for p in problems] == [
        ("undecodable", "counter", sid)
    ]
    assert "unknown stream kind 'counter'" in problems[0].detail


async def test_time_travel_export_import_and_audit_go_through_the_kind(
    pool: asyncpg.Pool,
    other_pool: asyncpg.Pool,
    store: EventStore,
    client: Client,
    counter_kind: StreamKind,
) -> None:
    job, _ = await JobService(store).submit(spec(), META)
    sid = counter_kind.stream_id("p", "n")
    streams = StreamService(store)
    for command in (Create("p", "n"), Add(2), Add(3)):
        await streams.execute("counter", sid, command, META)
    positions = [r.position for r in await store.read_stream(sid)]

    then = await stream_at(pool, "counter", sid, position=positions[1])
    assert (then.stream_type, then.as_of_position, then.state.value) == ("counter", positions[1], 2)
    assert (await stream_at(pool, "counter", sid)).state.value == 5
    with pytest.raises(NotFound):
        await stream_at(pool, "job", sid)  # a counter's stream is no job

    lines = [line async for line in export(pool)]
    assert [json.loads(line)["stream_type"] for line in lines] == ["job"] + ["counter"] * 3
    assert await import_lines(other_pool, lines) == 4
    assert [p async for p in Verifier(other_pool).problems()] != []  # no jobs rows yet
    copied = await EventStore(other_pool).read_stream(sid)
    assert [(r.stream_type, r.event) for r in copied] == [
        (r.stream_type, r.event) for r in await store.read_stream(sid)
    ]
    assert (await stream_at(other_pool, "counter", sid)).state.value == 5

    page = await (await client.get("/api/v1/audit?stream_type=counter")).json()
    assert [(e["stream_type"], e["stream_id"], e["type"]) for e in page["events"]] == [
        ("counter", str(sid), t) for t in ("CounterAdded", "CounterAdded", "CounterCreated")
    ]
    assert all("job_id" not in e and "project" not in e for e in page["events"])
    jobs_only = await (await client.get("/api/v1/audit?stream_type=job")).json()
    assert [e["stream_id"] for e in jobs_only["events"]] == [str(job.id)]
