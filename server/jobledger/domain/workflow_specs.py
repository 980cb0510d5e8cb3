"""Workflow specs, pure: named steps, each a job spec or a definition with params, with
`needs`, a condition and an optional stage, and the run's failure policy; `validate` refuses
a spec that does not hold together, naming the field (see `domain.workflows` for runs)."""

from __future__ import annotations

import enum
import itertools
from typing import Annotated

import msgspec

from .errors import InvalidValue
from .specs import DEFAULT_PROJECT, JobSpec, LabelKey, LabelValue, Name
from .templates import DefinitionSubmit, reserved_env

#: Most steps a workflow may have.
MAX_STEPS = 100


class Condition(enum.StrEnum):
    """When a step runs, once all its needs have finished."""

    #: Every need succeeded (or was reused).
    ON_SUCCESS = "on_success"
    #: Whatever became of its needs (clean-up steps); not after a run's cancel.
    ALWAYS = "always"
    #: A step it depends on (directly or through its needs) failed or was cancelled.
    ON_FAILURE = "on_failure"


class FailurePolicy(enum.StrEnum):
    """What a run does after a step failed."""

    #: Start nothing new but `always` and `on_failure` steps (whose needs are finished).
    STOP = "stop"
    #: Go on with every step that does not depend on the failure.
    CONTINUE = "continue"


class Step(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """One step: what its child job runs (a job `spec`, or a `definition` with params: the
    body `POST /api/v1/jobs` takes for a submit by reference), and when."""

    name: Name
    spec: JobSpec | None = None
    definition: DefinitionSubmit | None = None
    needs: Annotated[list[Name], msgspec.Meta(max_length=MAX_STEPS)] = []
    condition: Condition = Condition.ON_SUCCESS
    #: Shorthand for needs: a step of stage n needs every step of the previous stage (the
    #: next lower number any step has).
    stage: Annotated[int, msgspec.Meta(ge=1, le=MAX_STEPS)] | None = None


class WorkflowSpec(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """A workflow as submitted: its steps in order (a step's position, from 1, is its child
    job's number in `RUN.N`; a list, since a JSON object's key order does not survive
    jsonb), the failure policy, and the project and labels its child jobs get."""

    steps: Annotated[list[Step], msgspec.Meta(min_length=1, max_length=MAX_STEPS)]
    failure_policy: FailurePolicy = FailurePolicy.STOP
    project: Name = DEFAULT_PROJECT
    labels: Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=64)] = {}


# ---- validation ---------------------------------------------------------------------------


def needs_of(spec: WorkflowSpec) -> dict[str, tuple[str, ...]]:
    """Each step's needs, its own and its stage's, in spec order (no duplicates)."""
    stages = sorted({s.stage for s in spec.steps if s.stage is not None})
    previous = {b: a for a, b in itertools.pairwise(stages)}
    out: dict[str, tuple[str, ...]] = {}
    for step in spec.steps:
        wanted = set(step.needs)
        if step.stage in previous:
            wanted |= {s.name for s in spec.steps if s.stage == previous[step.stage]}
        out[step.name] = tuple(s.name for s in spec.steps if s.name in wanted)
    return out


def validate(spec: WorkflowSpec) -> None:
    """Refuse a spec that does not hold together (`InvalidValue`, 422, `details.field` the
    JSON path, `details.step` the step): too many or no steps, a name used twice, a step
    that is not exactly one of spec/definition, an unknown or repeated need, a step needing
    itself, a cycle (its steps named in order), an `on_failure` step without needs, and
    fields a run sets itself."""
    if not 1 <= len(spec.steps) <= MAX_STEPS:
        raise InvalidValue(
            f"a workflow has 1 to {MAX_STEPS} steps (got {len(spec.steps)})", field="$.steps"
        )
    index: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        at = f"$.steps[{i}]"
        if step.name in index:
            raise InvalidValue(
                f"step name {step.name!r} is used twice (steps {index[step.name] + 1} and {i + 1})",
                field=f"{at}.name",
                step=step.name,
            )
        index[step.name] = i
        _check_what(spec, step, at)
    for i, step in enumerate(spec.steps):
        at = f"$.steps[{i}]"
        for j, need in enumerate(step.needs):
            where = f"{at}.needs[{j}]"
            if need == step.name:
                raise InvalidValue(f"step {need} needs itself", field=where, step=step.name)
            if need not in index:
                raise InvalidValue(
                    f"step {step.name} needs {need!r}, which is no step of this workflow",
                    field=where,
                    step=step.name,
                )
            if need in step.needs[:j]:
                raise InvalidValue(
                    f"step {step.name} names need {need} twice", field=where, step=step.name
                )
    needs = needs_of(spec)
    for i, step in enumerate(spec.steps):
        if step.condition is Condition.ON_FAILURE and not needs[step.name]:
            raise InvalidValue(
                f"step {step.name} runs on_failure but needs nothing: name the steps whose "
                "failure it handles",
                field=f"$.steps[{i}].condition",
                step=step.name,
            )
    if cycle := _cycle(spec, needs):
        first = cycle[0]
        step = spec.steps[index[first]]
        at = f"$.steps[{index[first]}]"
        field = (
            f"{at}.needs[{step.needs.index(cycle[1])}]" if cycle[1] in step.needs else f"{at}.stage"
        )
        raise InvalidValue(
            f"the steps' needs make a cycle: {' -> '.join(cycle)}",
            field=field,
            step=first,
            cycle=cycle,
        )


def _check_what(spec: WorkflowSpec, step: Step, at: str) -> None:
    """Exactly one of spec/definition, in the run's project, nothing the run sets itself."""
    if (step.spec is None) == (step.definition is None):
        raise InvalidValue(
            f"step {step.name} runs either a `spec` or a `definition` (exactly one)",
            field=at,
            step=step.name,
        )
    if step.spec is not None:
        own, where = step.spec, f"{at}.spec"
        # A spec's project defaults to `default`: only a different one is a contradiction.
        if own.project not in (DEFAULT_PROJECT, spec.project):
            raise InvalidValue(
                f"step {step.name} is in project {own.project}, its run in {spec.project}",
                field=f"{where}.project",
                step=step.name,
            )
        reserved_env(own.env, f"{where}.env")
        labels, key, scheduled = own.labels, own.idempotency_key, own.scheduled_for
    else:
        assert step.definition is not None
        ref, where = step.definition, f"{at}.definition"
        if ref.project not in (None, spec.project):
            raise InvalidValue(
                f"step {step.name} is in project {ref.project}, its run in {spec.project}",
                field=f"{where}.project",
                step=step.name,
            )
        labels, key, scheduled = ref.labels, ref.idempotency_key, ref.scheduled_for
    for label in (*spec.labels, *labels):
        if label.lower().startswith("jobledger."):
            path = "$.labels" if label in spec.labels else f"{where}.labels"
            raise InvalidValue(
                "labels starting with jobledger. are set by jobledger",
                field=f"{path}.{label}",
                step=step.name,
            )
    if key is not None:
        raise InvalidValue(
            "a step's child job is made once per run: it has no idempotency key",
            field=f"{where}.idempotency_key",
            step=step.name,
        )
    if scheduled is not None:
        raise InvalidValue(
            "a step runs when its needs are finished",
            field=f"{where}.scheduled_for",
            step=step.name,
        )


def _cycle(spec: WorkflowSpec, needs: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle of needs as [a, b, ..., a] (a needs b ...), starting at its first step in
    spec order; None if there is none."""
    order = {s.name: i for i, s in enumerate(spec.steps)}
    colour: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        colour[name] = 1
        path.append(name)
        for need in needs[name]:
            if colour.get(need) == 1:
                loop = path[path.index(need) :]
                k = loop.index(min(loop, key=order.__getitem__))
                loop = loop[k:] + loop[:k]
                return [*loop, loop[0]]
            if need not in colour and (found := visit(need)):
                return found
        path.pop()
        colour[name] = 2
        return None

    for step in spec.steps:
        if step.name not in colour and (found := visit(step.name)):
            return found
    return None
