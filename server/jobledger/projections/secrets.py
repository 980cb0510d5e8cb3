"""The `secrets` table: each live secret's latest version, fingerprint, who set or deleted
it and when (a deleted secret has no row), kept inline with its stream's appends. The
values are not here: they are in `secret_values`, beside the log."""

from __future__ import annotations

from ..domain.secrets import SECRET, Secret
from .named import Row, StateProjection


def _row(state: Secret) -> Row | None:
    if state.deleted:
        return None
    return (
        state.project, state.name, state.version, state.fingerprint, state.updated_by,
        state.updated_at,
    )  # fmt: skip


SECRETS = StateProjection(
    SECRET,
    "secrets",
    ["project", "name", "version", "fingerprint", "updated_by", "updated_at"],
    _row,
)
