"""The `workflow_runs` table: each run's state, spec and steps (state, job id, times,
output), and the schedule that started it, kept inline with its stream's appends; the API
reads runs from it."""

from __future__ import annotations

import msgspec

from ..domain.workflows import WORKFLOW, Run
from .named import Row, StateProjection

_encoder = msgspec.json.Encoder()


def _row(state: Run) -> Row | None:
    return (
        state.spec.project, state.state.value, _encoder.encode(state.spec).decode(),
        _encoder.encode(list(state.steps.values())).decode(), state.rerun_of,
        state.submitted_by, state.created_at, state.updated_at, state.finished_at,
        state.version, state.schedule, state.occurrence,
    )  # fmt: skip


WORKFLOW_RUNS = StateProjection(
    WORKFLOW,
    "workflow_runs",
    ["project", "state", "spec", "steps", "rerun_of", "submitted_by", "created_at",
     "updated_at", "finished_at", "version", "schedule", "occurrence"],
    _row,
)  # fmt: skip
