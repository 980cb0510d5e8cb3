"""Kinds of streams. The log holds streams of several kinds (jobs now; schedules, workflow
runs, definitions, environments, secrets as they come): each kind has its event types and
upcasters (an `EventCodec`), its pure `decide` and `evolve`, and says whether its streams
are named. Replay, verify, audit and export find a stream's kind by the `stream_type` the
log stores with every event, and work through it.

A named aggregate (a project's schedule "nightly", say) has a deterministic stream id, so
every writer and reader agrees on it without a lookup; deleting one appends a tombstone,
and creating the name again continues the same stream."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import Event, EventCodec, Recorded

#: Namespace of named streams' ids: uuid5(NAMED_STREAMS, "kind/project/name").
NAMED_STREAMS = uuid.UUID("6a6c6564-6765-7200-8000-6e616d656473")


@dataclass(frozen=True)
class StreamKind:
    """One kind of stream: how its events are read and how they fold and are decided."""

    name: str
    codec: EventCodec
    #: The state after one recorded event (None: the stream does not exist yet).
    evolve: Callable[[Any, Recorded], Any]
    #: The events a command produces on a state, or a `DomainError`.
    decide: Callable[[Any, Any], list[Event]]
    #: Whether its streams are named by (project, name) rather than given a fresh id.
    named: bool = False
    #: Streams that exist before their first event, with their state (the schema creates
    #: them: the project `default`). Their folds start from it; others' from None.
    builtin: Mapping[uuid.UUID, Any] = field(default_factory=dict, hash=False, compare=False)
    #: Its streams are named by their project alone (a project's own stream: NAME/NAME).
    own_project: bool = False

    def initial(self, stream_id: uuid.UUID) -> Any:
        """A stream's state before its first event: None but for a built-in stream."""
        return self.builtin.get(stream_id)

    def decode(self, type_name: str, schema: int, data: str | bytes) -> Any:
        return self.codec.decode(type_name, schema, data)

    def fold(self, records: Iterable[Recorded], state: Any = None) -> Any:
        """Apply recorded events in order to a state."""
        for rec in records:
            state = self.evolve(state, rec)
        return state

    def stream_id(self, project: str, name: str) -> uuid.UUID:
        """The id of a named stream of this kind: the same for every writer, forever."""
        if not self.named:
            raise ValueError(f"streams of kind {self.name!r} are not named")
        return named_stream_id(self.name, project, name)

    def stream_of(self, text: str, default_project: str) -> uuid.UUID:
        """A stream id as a user writes it: a UUID, or for a named kind PROJECT/NAME (NAME
        alone: in `default_project`, or for a kind named by its project, NAME/NAME).
        `ValueError` for a name of a kind whose streams are not named."""
        try:
            return uuid.UUID(text)
        except ValueError:
            if not self.named:
                raise ValueError(f"{text!r} is not a {self.name} id (a UUID)") from None
        project, _, name = text.rpartition("/")
        return self.stream_id(project or (name if self.own_project else default_project), name)


def named_stream_id(kind: str, project: str, name: str) -> uuid.UUID:
    """The deterministic id of the stream of a named aggregate."""
    return uuid.uuid5(NAMED_STREAMS, f"{kind}/{project}/{name}")


class Registry:
    """The kinds of streams the log may hold, by name."""

    def __init__(self, kinds: Iterable[StreamKind] = ()) -> None:
        self._kinds: dict[str, StreamKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: StreamKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"stream kind {kind.name!r} is registered already")
        self._kinds[kind.name] = kind

    def unregister(self, name: str) -> None:
        self._kinds.pop(name, None)

    def get(self, name: str) -> StreamKind:
        """The kind of that name; `ValueError` for one nothing registered."""
        try:
            return self._kinds[name]
        except KeyError:
            raise ValueError(f"unknown stream kind {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[StreamKind]:
        return iter(list(self._kinds.values()))

    def names(self) -> list[str]:
        return list(self._kinds)
