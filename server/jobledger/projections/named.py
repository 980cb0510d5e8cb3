"""Projections of the small kinds of streams (definitions, environments, secrets, projects,
service accounts, tokens...): one row per stream, holding what its folded state shows.

A kind's projection is a `StateProjection`: its table (keyed by `stream_id`), its columns,
and `row(state)` giving those columns' values (None: the stream has no row, e.g. deleted).
It is kept inline with the appends (`inline`), rebuilt from the log in one transaction
(`rebuild`: these tables are small), and compared with the fold by `replay verify`
(`differences`). `projections.registry.PROJECTIONS` maps a kind's name to its projection;
`StreamService` keeps the registered one of a kind without being told."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import asyncpg

from ..domain.events import Recorded
from ..domain.kinds import StreamKind
from ..store.db import Conn
from ..store.eventstore import Announce, InlineHook, record_from_row

#: A row's column values, in the projection's column order (without `stream_id`).
Row = tuple[Any, ...]


class StateProjection:
    """One row per stream of `kind` in `table`: `stream_id` plus `columns`."""

    def __init__(
        self,
        kind: StreamKind,
        table: str,
        columns: Sequence[str],
        row: Callable[[Any], Row | None],
        *,
        key: str = "stream_id",
    ) -> None:
        self.kind = kind
        self.table = table
        self.columns = tuple(columns)
        self.row = row
        #: The column holding the stream id (unique): `stream_id`, or e.g. a token's `id`,
        #: which is its stream's id.
        self.key = key
        cols = ", ".join((key, *self.columns))
        marks = ", ".join(f"${n}" for n in range(1, len(self.columns) + 2))
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.columns)
        self._upsert = (
            f"INSERT INTO {table} ({cols}) VALUES ({marks}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
        )
        self._delete = f"DELETE FROM {table} WHERE {key} = ANY($1::uuid[])"
        self._select = f"SELECT {cols} FROM {table} WHERE {key} = ANY($1::uuid[])"
        #: The stream ids of rows with no events (`replay verify`'s orphans), but for
        #: built-in streams, whose rows stand without events.
        self.orphans = (
            f"SELECT {key} AS stream_id FROM {table} p WHERE NOT EXISTS "
            f"(SELECT 1 FROM events e WHERE e.stream_id = p.{key}) "
            f"AND (p.{key} = ANY($1::uuid[])) IS NOT TRUE"
        )

    def inline(self, priors: Mapping[uuid.UUID, Any]) -> InlineHook:
        """The inline projection of an append: fold each stream's new events onto its prior
        state and write (or delete) its row, in the append's transaction."""

        async def hook(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
            await self.write(conn, self.fold_new(recorded, priors))

        return hook

    def fold_new(
        self, recorded: Sequence[Recorded], priors: Mapping[uuid.UUID, Any]
    ) -> dict[uuid.UUID, Any]:
        """Each stream's state after its new events, from its prior state."""
        states: dict[uuid.UUID, Any] = {}
        for rec in recorded:
            prior = states[rec.stream_id] if rec.stream_id in states else priors.get(rec.stream_id)
            states[rec.stream_id] = self.kind.evolve(prior, rec)
        return states

    async def write(self, conn: Conn, states: Mapping[uuid.UUID, Any]) -> None:
        """Make the rows of these streams show these states."""
        upserts: list[Row] = []
        gone: list[uuid.UUID] = []
        for sid, state in states.items():
            row = self.row(state) if state is not None else None
            if row is None:
                gone.append(sid)
            else:
                upserts.append((sid, *row))
        if gone:
            await conn.execute(self._delete, gone)
        if upserts:
            await conn.executemany(self._upsert, upserts)

    async def rebuild(self, conn: Conn, kept: Mapping[uuid.UUID, Any] | None = None) -> int:
        """Fold every stream of the kind again and make the table hold exactly their rows,
        in the caller's transaction (writers of the kind wait; readers see the old rows
        until it commits). `kept`: the states of streams no longer in the log (archived),
        whose rows stay as those states show them. Returns the number of streams folded."""
        await conn.execute(f"LOCK TABLE {self.table} IN EXCLUSIVE MODE")
        states = {**(kept or {}), **dict(await self.fold_all(conn))}
        # Rows are changed in place, not emptied and refilled: a table may hold columns
        # kept beside the log (a token's hash), which the fold cannot give back.
        live = [sid for sid, st in states.items() if st is not None and self.row(st) is not None]
        await conn.execute(f"DELETE FROM {self.table} WHERE {self.key} <> ALL($1::uuid[])", live)
        await self.write(conn, states)
        return len(states)

    async def fold_all(self, conn: Conn) -> list[tuple[uuid.UUID, Any]]:
        """Every stream of the kind, folded from the log."""
        rows = await conn.fetch(
            "SELECT * FROM events WHERE stream_type = $1 ORDER BY stream_id, version",
            self.kind.name,
        )
        out: list[tuple[uuid.UUID, Any]] = []
        for sid, records in _by_stream(record_from_row(r) for r in rows):
            out.append((sid, self.kind.fold(records, self.kind.initial(sid))))
        # A built-in stream (the project `default`) has its row before any event.
        folded = {sid for sid, _ in out}
        out.extend((sid, st) for sid, st in self.kind.builtin.items() if sid not in folded)
        return out

    async def rows(
        self, conn: Conn | asyncpg.Pool, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Row]:
        """The stored rows of some streams, by stream id (column values without the id)."""
        found = await conn.fetch(self._select, list(ids))
        return {r[self.key]: tuple(r[c] for c in self.columns) for r in found}

    def differences(self, state: Any, stored: Row | None) -> list[str]:
        """What differs between a stream's folded state and its stored row: column names,
        or `row` when one of them has a row and the other has none."""
        expected = self.row(state) if state is not None else None
        if expected is None or stored is None:
            return [] if expected is None and stored is None else ["row"]
        return [c for c, a, b in zip(self.columns, expected, stored, strict=True) if a != b]


def _by_stream(records: Iterator[Recorded]) -> Iterator[tuple[uuid.UUID, list[Recorded]]]:
    current: uuid.UUID | None = None
    batch: list[Recorded] = []
    for rec in records:
        if rec.stream_id != current and batch:
            assert current is not None
            yield current, batch
            batch = []
        current = rec.stream_id
        batch.append(rec)
    if batch:
        assert current is not None
        yield current, batch


class Projections:
    """The state projections of the kinds that have one, by kind name."""

    def __init__(self, projections: Sequence[StateProjection] = ()) -> None:
        self._by_kind: dict[str, StateProjection] = {}
        for p in projections:
            self.register(p)

    def register(self, projection: StateProjection) -> None:
        name = projection.kind.name
        if name in self._by_kind:
            raise ValueError(f"kind {name!r} has a projection already")
        self._by_kind[name] = projection

    def unregister(self, kind: str) -> None:
        self._by_kind.pop(kind, None)

    def get(self, kind: str) -> StateProjection | None:
        return self._by_kind.get(kind)

    def __iter__(self) -> Iterator[StateProjection]:
        return iter(list(self._by_kind.values()))
