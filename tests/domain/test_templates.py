"""The pure parts of definitions: placeholders, parameter checks, resolution, diffs, and the
definition stream's decide/evolve."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from jobledger.domain.definitions import (
    DEFINITION,
    DefinitionSaved,
    DisableDefinition,
    SaveDefinition,
    decide_definition,
)
from jobledger.domain.errors import InvalidValue, NotFound
from jobledger.domain.events import EventMeta, Recorded
from jobledger.domain.templates import (
    Change,
    DefinitionSpec,
    DefinitionSubmit,
    Param,
    ParamType,
    check_placeholders,
    diff,
    resolve,
    substitute,
)


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("plain", "plain"),
        ("{{params.a}}", "1"),
        ("x{{ params.a }}y{{params.b}}", "x1ytrue"),
        ("{{{{params.a}}", "{{params.a}}"),  # a literal {{, then text
        ("}} and {", "}} and {"),
        ("{{params.absent}}", ""),
    ],
)
def test_placeholders_substitute_values_as_text(text: str, out: str) -> None:
    assert substitute(text, {"a": 1, "b": True}) == out


@pytest.mark.parametrize("text", ["{{params.zz}}", "{{ shell }}", "{{params.a", "a {{ b"])
def test_a_bad_placeholder_is_refused(text: str) -> None:
    with pytest.raises(InvalidValue) as err:
        check_placeholders(text, {"a"}, "$.command[0]")
    assert err.value.details["field"] == "$.command[0]"


def test_resolve_layers_and_params() -> None:
    definition = DefinitionSpec(
        image="img", command=["run", "{{params.n}}"],
        params=[Param(name="n", type=ParamType.INTEGER, default=2)],
    )  # fmt: skip
    spec, params = resolve("d", definition, None, DefinitionSubmit(definition="d"), "p")
    assert (spec.command, params, spec.env) == (["run", "2"], {"n": 2}, {"JOBLEDGER_PARAM_N": "2"})
    assert (spec.project, spec.concurrency_key) == ("p", "definition:p/d")
    assert spec.concurrency_limit == 1


def test_diff_names_paths_with_old_and_new() -> None:
    assert diff({"a": 1, "l": [1, 2], "x": None}, {"a": 2, "l": [1], "y": 0}) == [
        Change(path="$.a", old=1, new=2),
        Change(path="$.l[1]", old=2),
        Change(path="$.x", old=None),
        Change(path="$.y", new=0),
    ]
    assert diff({"a": 1}, {"a": 1.0}) == [Change(path="$.a", old=1, new=1.0)]


def test_a_definition_saves_versions_and_refuses_commands_once_deleted() -> None:
    sid = DEFINITION.stream_id("p", "d")
    content = DefinitionSpec(image="img")
    [saved] = decide_definition(None, SaveDefinition(project="p", name="d", content=content))
    assert saved == DefinitionSaved(project="p", name="d", version=1, definition=content)
    rec = Recorded(
        event_id=uuid.uuid4(), stream_id=sid, version=1, position=1, event=saved,
        meta=EventMeta(actor="a"), recorded_at=datetime(2030, 1, 1, tzinfo=UTC),
        stream_type="definition",
    )  # fmt: skip
    state = DEFINITION.fold([rec])
    assert decide_definition(state, SaveDefinition(project="p", name="d", content=content)) == []
    assert state.at(1).content == content
    with pytest.raises(NotFound):
        state.at(2)
    with pytest.raises(NotFound):
        decide_definition(None, DisableDefinition())
