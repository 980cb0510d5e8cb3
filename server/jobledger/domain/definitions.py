"""Definitions and environments as named, versioned streams: every save records the whole
content as a new version (with its actor in the metadata), so any version can be read
back and two compared from the stream alone; a definition may be disabled and enabled;
deleting leaves a tombstone, and saving the name again continues the numbering.

Saving exactly the current content records nothing (a repeated PUT is idempotent)."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import msgspec

from .errors import Conflict, CorruptLog, InvalidTransition, NotFound
from .events import Event, EventCodec, Recorded
from .kinds import StreamKind
from .templates import DefinitionSpec, EnvironmentSpec, validate_definition, validate_environment

# ---- events -------------------------------------------------------------------------------


class DefinitionSaved(Event, frozen=True, kw_only=True):
    """A new version of a definition, its whole content."""

    project: str
    name: str
    version: int
    definition: DefinitionSpec


class DefinitionDisabled(Event, frozen=True, kw_only=True):
    """Submits of the definition are refused until it is enabled."""

    reason: str | None = None


class DefinitionEnabled(Event, frozen=True, kw_only=True):
    """Submits of the definition are taken again."""


class DefinitionDeleted(Event, frozen=True, kw_only=True):
    """The tombstone: the name may be saved again, its versions counting on."""


class EnvironmentSaved(Event, frozen=True, kw_only=True):
    """A new version of an environment, its whole content."""

    project: str
    name: str
    version: int
    environment: EnvironmentSpec


class EnvironmentDeleted(Event, frozen=True, kw_only=True):
    """The tombstone of an environment."""


# ---- states -------------------------------------------------------------------------------


class Version(msgspec.Struct, frozen=True, kw_only=True):
    """One saved version: who saved it, when, and the log position of the save."""

    version: int
    saved_by: str
    saved_at: datetime
    position: int


class DefinitionVersion(Version, frozen=True, kw_only=True):
    content: DefinitionSpec


class EnvironmentVersion(Version, frozen=True, kw_only=True):
    content: EnvironmentSpec


class Definition(msgspec.Struct, frozen=True, kw_only=True):
    """A definition folded from its stream: every version it ever had (they are small)."""

    project: str
    name: str
    versions: tuple[DefinitionVersion, ...]
    disabled: bool = False
    disabled_reason: str | None = None
    deleted: bool = False
    updated_by: str
    updated_at: datetime
    #: The stream's version (saves, disables, enables, deletes all count).
    stream_version: int

    @property
    def current(self) -> DefinitionVersion:
        return self.versions[-1]

    def at(self, version: int | None) -> DefinitionVersion:
        """One version (None: the current one); `NotFound` for one it never had."""
        return _version(self.versions, version, f"definition {self.name}")


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    """An environment folded from its stream, every version kept."""

    project: str
    name: str
    versions: tuple[EnvironmentVersion, ...]
    deleted: bool = False
    updated_by: str
    updated_at: datetime
    stream_version: int

    @property
    def current(self) -> EnvironmentVersion:
        return self.versions[-1]

    def at(self, version: int | None) -> EnvironmentVersion:
        """One version (None: the current one); `NotFound` for one it never had."""
        return _version(self.versions, version, f"environment {self.name}")


V = TypeVar("V", DefinitionVersion, EnvironmentVersion)


def _version(versions: tuple[V, ...], version: int | None, what: str) -> V:
    """The version of that number among a stream's versions (None: the latest)."""
    if version is None:
        return versions[-1]
    for v in versions:
        if v.version == version:
            return v
    raise NotFound(
        f"{what} has no version {version} (latest: {versions[-1].version})", version=version
    )


# ---- commands -----------------------------------------------------------------------------


class SaveDefinition(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    name: str
    content: DefinitionSpec


class DisableDefinition(msgspec.Struct, frozen=True, kw_only=True):
    reason: str | None = None


class EnableDefinition(msgspec.Struct, frozen=True, kw_only=True):
    pass


class DeleteDefinition(msgspec.Struct, frozen=True, kw_only=True):
    pass


class SaveEnvironment(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    name: str
    content: EnvironmentSpec


class DeleteEnvironment(msgspec.Struct, frozen=True, kw_only=True):
    pass


def decide_definition(state: Definition | None, command: object) -> list[Event]:
    """The events a command produces on a definition, or a `DomainError`."""
    if isinstance(command, SaveDefinition):
        validate_definition(command.content)
        live = state is not None and not state.deleted
        if state is not None and live and state.current.content == command.content:
            return []  # the same content again: nothing new to record
        version = state.current.version + 1 if state is not None else 1
        return [
            DefinitionSaved(
                project=command.project, name=command.name, version=version,
                definition=command.content,
            )
        ]  # fmt: skip
    if state is None or state.deleted:
        raise NotFound("definition not found")
    match command:
        case DisableDefinition(reason=reason):
            return [] if state.disabled else [DefinitionDisabled(reason=reason)]
        case EnableDefinition():
            return [DefinitionEnabled()] if state.disabled else []
        case DeleteDefinition():
            return [DefinitionDeleted()]
    raise InvalidTransition(f"cannot {type(command).__name__} a definition")


def evolve_definition(state: Definition | None, rec: Recorded) -> Definition:
    """The state of a definition after one recorded event."""
    event = rec.event
    common = {
        "updated_by": rec.meta.actor,
        "updated_at": rec.recorded_at,
        "stream_version": rec.version,
    }
    if isinstance(event, DefinitionSaved):
        saved = DefinitionVersion(
            version=event.version, saved_by=rec.meta.actor, saved_at=rec.recorded_at,
            position=rec.position, content=event.definition,
        )  # fmt: skip
        if state is None:
            return Definition(project=event.project, name=event.name, versions=(saved,), **common)
        return msgspec.structs.replace(
            state, versions=(*state.versions, saved), deleted=False, **common
        )
    if state is None:
        raise CorruptLog(f"stream starts with {type(event).__name__}", stream_id=str(rec.stream_id))
    match event:
        case DefinitionDisabled(reason=reason):
            return msgspec.structs.replace(state, disabled=True, disabled_reason=reason, **common)
        case DefinitionEnabled():
            return msgspec.structs.replace(state, disabled=False, disabled_reason=None, **common)
        case DefinitionDeleted():
            return msgspec.structs.replace(
                state, deleted=True, disabled=False, disabled_reason=None, **common
            )
    raise CorruptLog(f"unexpected {type(event).__name__} in a definition stream")


def decide_environment(state: Environment | None, command: object) -> list[Event]:
    """The events a command produces on an environment, or a `DomainError`."""
    if isinstance(command, SaveEnvironment):
        validate_environment(command.content)
        live = state is not None and not state.deleted
        if state is not None and live and state.current.content == command.content:
            return []
        version = state.current.version + 1 if state is not None else 1
        return [
            EnvironmentSaved(
                project=command.project, name=command.name, version=version,
                environment=command.content,
            )
        ]  # fmt: skip
    if state is None or state.deleted:
        raise NotFound("environment not found")
    if isinstance(command, DeleteEnvironment):
        return [EnvironmentDeleted()]
    raise InvalidTransition(f"cannot {type(command).__name__} an environment")


def evolve_environment(state: Environment | None, rec: Recorded) -> Environment:
    """The state of an environment after one recorded event."""
    event = rec.event
    common = {
        "updated_by": rec.meta.actor,
        "updated_at": rec.recorded_at,
        "stream_version": rec.version,
    }
    if isinstance(event, EnvironmentSaved):
        saved = EnvironmentVersion(
            version=event.version, saved_by=rec.meta.actor, saved_at=rec.recorded_at,
            position=rec.position, content=event.environment,
        )  # fmt: skip
        if state is None:
            return Environment(project=event.project, name=event.name, versions=(saved,), **common)
        return msgspec.structs.replace(
            state, versions=(*state.versions, saved), deleted=False, **common
        )
    if state is None:
        raise CorruptLog(f"stream starts with {type(event).__name__}", stream_id=str(rec.stream_id))
    if isinstance(event, EnvironmentDeleted):
        return msgspec.structs.replace(state, deleted=True, **common)
    raise CorruptLog(f"unexpected {type(event).__name__} in an environment stream")


def refuse_disabled(state: Definition) -> None:
    """A disabled definition takes no submits (409 with its reason)."""
    if state.disabled:
        why = f": {state.disabled_reason}" if state.disabled_reason else ""
        raise Conflict(
            f"definition {state.name} is disabled{why}; enable it to submit", field="$.definition"
        )


DEFINITION_EVENTS = EventCodec(
    [DefinitionSaved, DefinitionDisabled, DefinitionEnabled, DefinitionDeleted], {}
)
ENVIRONMENT_EVENTS = EventCodec([EnvironmentSaved, EnvironmentDeleted], {})

#: Definitions as a kind of stream, named by (project, name).
DEFINITION = StreamKind(
    "definition", DEFINITION_EVENTS, evolve_definition, decide_definition, named=True
)
#: Environments as a kind of stream, named by (project, name).
ENVIRONMENT = StreamKind(
    "environment", ENVIRONMENT_EVENTS, evolve_environment, decide_environment, named=True
)
