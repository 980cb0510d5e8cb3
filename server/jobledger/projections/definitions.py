"""The state projections of definitions and environments: one row per live one (deleted:
no row) with its current version's content, what the lists and the submit path read."""

from __future__ import annotations

import msgspec

from ..domain.definitions import DEFINITION, ENVIRONMENT, Definition, Environment
from .named import Row, StateProjection

_encoder = msgspec.json.Encoder()


def _definition_row(state: Definition) -> Row | None:
    if state.deleted:
        return None
    current = state.current
    content = _encoder.encode(current.content).decode()
    return (state.project, state.name, current.version, content, state.disabled,
            state.updated_by, state.updated_at)  # fmt: skip


def _environment_row(state: Environment) -> Row | None:
    if state.deleted:
        return None
    current = state.current
    content = _encoder.encode(current.content).decode()
    return (state.project, state.name, current.version, content, state.updated_by,
            state.updated_at)  # fmt: skip


DEFINITIONS = StateProjection(
    DEFINITION,
    "definitions",
    ["project", "name", "version", "content", "disabled", "updated_by", "updated_at"],
    _definition_row,
)
ENVIRONMENTS = StateProjection(
    ENVIRONMENT,
    "environments",
    ["project", "name", "version", "content", "updated_by", "updated_at"],
    _environment_row,
)
