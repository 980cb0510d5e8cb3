"""Secrets as a kind of stream: a project's named value, versioned. Events carry the name,
the version and a keyed fingerprint of the value, never the value (it is kept encrypted
beside the log, see `store.secretbox`). Deleting appends a tombstone; setting the name again
continues the same stream and its version numbers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from .errors import Conflict, CorruptLog, DomainError, InvalidTransition, NotFound
from .events import Event, EventCodec, Recorded
from .kinds import StreamKind
from .specs import Name

#: Most bytes a secret's value may hold (UTF-8): enough for a key or a certificate chain.
MAX_SECRET_BYTES = 32_768
#: A fingerprint: the first 16 hex digits of an HMAC-SHA256 of the value.
Fingerprint = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]


class UnknownSecret(DomainError):
    """A spec refers to a secret (or a version of one) that its project does not hold: the
    request is well formed, but cannot be processed (HTTP 422)."""

    code = "unknown_secret"


class NoSecretsKey(Conflict):
    """This process holds no secrets key, so it can neither store nor read a value."""

    code = "no_secrets_key"


class SecretSet(Event, frozen=True, kw_only=True):
    """A new version of a secret's value was stored (the value itself is not here)."""

    project: str
    name: str
    version: int
    fingerprint: str


class SecretDeleted(Event, frozen=True, kw_only=True):
    """The secret and its stored values were removed; setting it again continues the
    version numbers."""

    name: str


class Secret(msgspec.Struct, frozen=True, kw_only=True):
    """A secret's state: its latest version (deleted: none is stored any more)."""

    project: str
    name: str
    version: int
    fingerprint: str
    deleted: bool = False
    updated_by: str
    updated_at: datetime
    #: The version its current life began with (after its creation or a delete).
    first_version: int = 1


class SetSecret(msgspec.Struct, frozen=True, kw_only=True):
    """Store a new version (its fingerprint: the value never enters the domain)."""

    project: str
    name: Name
    fingerprint: Fingerprint


class DeleteSecret(msgspec.Struct, frozen=True, kw_only=True):
    """Remove the secret and every stored version of it."""


def decide(state: Secret | None, command: object) -> list[Event]:
    """The events a command produces on a secret, or a `DomainError`."""
    match command:
        case SetSecret(project=project, name=name, fingerprint=fingerprint):
            version = state.version + 1 if state is not None else 1
            return [SecretSet(project=project, name=name, version=version, fingerprint=fingerprint)]
        case DeleteSecret():
            if state is None or state.deleted:
                raise NotFound("no such secret")
            return [SecretDeleted(name=state.name)]
    raise InvalidTransition(f"cannot {type(command).__name__} a secret")


def evolve(state: Secret | None, rec: Recorded) -> Secret:
    """The state after one recorded event."""
    match rec.event:
        case SecretSet(project=project, name=name, version=version, fingerprint=fp):
            return Secret(
                project=project,
                name=name,
                version=version,
                fingerprint=fp,
                updated_by=rec.meta.actor,
                updated_at=rec.recorded_at,
                first_version=state.first_version
                if state is not None and not state.deleted
                else version,
            )
        case SecretDeleted() if state is not None:
            return msgspec.structs.replace(
                state, deleted=True, updated_by=rec.meta.actor, updated_at=rec.recorded_at
            )
    raise CorruptLog(f"unexpected {type(rec.event).__name__}", stream_id=str(rec.stream_id))


#: Secrets as a kind of stream (named: `SECRET.stream_id(project, name)`).
SECRET = StreamKind(
    "secret", EventCodec([SecretSet, SecretDeleted], {}), evolve, decide, named=True
)
