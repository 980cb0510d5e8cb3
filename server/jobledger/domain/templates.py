"""Job definitions (saved job templates with declared parameters) and environments (shared
settings), and how a submit by reference becomes a job spec. Pure: the content types, the
checks made when one is saved, parameter validation, placeholders, resolution and diffs.

Resolution order, each later one winning: the environment's settings < the definition's
< the submit's own fields. The result is an ordinary `JobSpec`, which every check on specs
then applies to, stored resolved in the job's `JobSubmitted` with a `FromDefinition`
saying which definition and environment versions and which parameters made it."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec

from .errors import InvalidValue
from .specs import (
    Arg,
    EnvName,
    EnvSetting,
    GraceSeconds,
    Image,
    JobSpec,
    Key,
    LabelKey,
    LabelValue,
    Name,
    Priority,
    Resources,
    RetryPolicy,
    Seconds,
    Tag,
)

#: Environment variable names jobledger keeps for what it injects.
RESERVED_ENV_PREFIX = "JOBLEDGER_"
#: A parameter reaches the job as the environment variable of this prefix + its name,
#: upper-cased (`date` -> `JOBLEDGER_PARAM_DATE`).
PARAM_ENV_PREFIX = "JOBLEDGER_PARAM_"
#: The concurrency key jobs of a definition share unless it or the submit says otherwise,
#: followed by PROJECT/NAME (concurrency keys are server-wide).
DEFAULT_KEY_PREFIX = "definition:"

ParamName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
Description = Annotated[str, msgspec.Meta(max_length=2000)]
Workdir = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=r"^/")]
EnumValue = Annotated[str, msgspec.Meta(max_length=255)]
ConcurrencyLimit = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
#: A parameter's value as JSON gives it; its declared type is checked apart.
ParamValue = str | int | float | bool


class ParamType(enum.StrEnum):
    """The types a parameter may be declared with."""

    #: Any text.
    STRING = "string"
    #: A whole number (JSON 3, or 3.0).
    INTEGER = "integer"
    #: Any finite number.
    NUMBER = "number"
    #: true or false.
    BOOLEAN = "boolean"
    #: One of `values` (text).
    ENUM = "enum"


class Param(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """A declared parameter of a definition."""

    name: ParamName
    type: ParamType = ParamType.STRING
    #: The value when a submit leaves it out (none: it is then absent, or refused if required).
    default: ParamValue | None = None
    required: bool = False
    description: Description | None = None
    #: The allowed values of an `enum` parameter (and only of one).
    values: Annotated[list[EnumValue], msgspec.Meta(min_length=1, max_length=256)] | None = None


class DefinitionSpec(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """A definition's content: a job template and its declared parameters. A field left
    unset takes the environment's value, else the job spec's default."""

    description: Description | None = None
    #: The environment whose settings lie under this definition's.
    environment: Name | None = None
    image: Image | None = None
    command: Annotated[list[Arg], msgspec.Meta(max_length=1024)] = []
    env: Annotated[dict[EnvName, EnvSetting], msgspec.Meta(max_length=512)] = {}
    workdir: Workdir | None = None
    resources: Resources | None = None
    timeout_seconds: Seconds | None = None
    stop_grace_seconds: GraceSeconds | None = None
    priority: Priority | None = None
    retry: RetryPolicy | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=32)] = []
    labels: Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=64)] = {}
    #: Default: `definition:PROJECT/NAME`, so a second job of the definition waits.
    concurrency_key: Key | None = None
    #: Default 1.
    concurrency_limit: ConcurrencyLimit | None = None
    params: Annotated[list[Param], msgspec.Meta(max_length=100)] = []


class EnvironmentSpec(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """An environment's content: settings shared by the definitions and jobs that name it."""

    description: Description | None = None
    image: Image | None = None
    env: Annotated[dict[EnvName, EnvSetting], msgspec.Meta(max_length=512)] = {}
    resources: Resources | None = None


class DefinitionSubmit(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A submit by reference: run a definition (its latest version, or `definition_version`)
    with these parameter values and per-run fields."""

    definition: Name
    definition_version: Annotated[int, msgspec.Meta(ge=1)] | None = None
    params: Annotated[dict[str, ParamValue], msgspec.Meta(max_length=100)] = {}
    #: The project whose definition it is (default: the token's own, else `default`).
    project: Name | None = None
    priority: Priority | None = None
    #: Added to the definition's labels (the submit's win).
    labels: Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=64)] = {}
    scheduled_for: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    idempotency_key: Key | None = None
    #: Instead of the definition's (or its default `definition:PROJECT/NAME`).
    concurrency_key: Key | None = None
    concurrency_limit: ConcurrencyLimit | None = None
    #: Instead of the environment the definition names.
    environment: Name | None = None


class FromDefinition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a job made from a definition records: the versions its spec was resolved from,
    the parameters it runs with (defaults filled in), and the request as submitted (what an
    idempotent retry is compared with)."""

    definition: str
    definition_version: int
    environment: str | None = None
    environment_version: int | None = None
    params: dict[str, ParamValue] = {}
    request: DefinitionSubmit


# ---- checks when saving -------------------------------------------------------------------


def reserved_env(env: dict[str, Any], path: str, allowed: frozenset[str] = frozenset()) -> None:
    """Refuse an environment variable named `JOBLEDGER_...` (jobledger's own), but `allowed`."""
    for name in env:
        if name.startswith(RESERVED_ENV_PREFIX) and name not in allowed:
            raise InvalidValue(
                f"environment variable {name} is reserved: names starting with "
                f"{RESERVED_ENV_PREFIX} are set by jobledger",
                field=f"{path}.{name}",
            )


def _type_error(param: Param, value: object) -> str | None:
    """Why `value` is not of the parameter's type (None: it is)."""
    match param.type:
        case ParamType.STRING:
            ok = isinstance(value, str)
        case ParamType.INTEGER:
            ok = isinstance(value, int) and not isinstance(value, bool)
        case ParamType.NUMBER:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and isinstance(value, float) and value != value:  # NaN
                ok = False
        case ParamType.BOOLEAN:
            ok = isinstance(value, bool)
        case ParamType.ENUM:
            if not isinstance(value, str):
                ok = False
            elif value not in (param.values or []):
                return f"must be one of: {', '.join(param.values or [])} (got {value!r})"
            else:
                ok = True
    if ok:
        return None
    return f"must be of type {param.type.value} (got {_json_type(value)})"


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def validate_definition(spec: DefinitionSpec) -> None:
    """Refuse a definition whose declaration does not hold together (422 naming the field):
    parameters named twice, an enum without values, a default of the wrong type, a
    placeholder naming no parameter, a reserved environment variable."""
    seen: dict[str, int] = {}
    for n, param in enumerate(spec.params):
        at = f"$.params[{n}]"
        upper = param.name.upper()
        if upper in seen:
            raise InvalidValue(
                f"parameter {param.name!r} is declared twice (names are compared upper-cased, "
                "as the environment variables they become)",
                field=f"{at}.name",
            )
        seen[upper] = n
        if param.type is ParamType.ENUM and not param.values:
            raise InvalidValue("an enum parameter needs its `values`", field=f"{at}.values")
        if param.type is not ParamType.ENUM and param.values is not None:
            raise InvalidValue("only an enum parameter has `values`", field=f"{at}.values")
        if param.default is not None:
            if param.required:
                raise InvalidValue(
                    "a required parameter has no default (leave one of them out)",
                    field=f"{at}.default",
                )
            if why := _type_error(param, param.default):
                raise InvalidValue(f"default {why}", field=f"{at}.default")
    reserved_env(spec.env, "$.env")
    names = {p.name for p in spec.params}
    for i, arg in enumerate(spec.command):
        check_placeholders(arg, names, f"$.command[{i}]")
    for key, value in spec.env.items():
        if isinstance(value, str):
            check_placeholders(value, names, f"$.env.{key}")
    if spec.workdir is not None:
        check_placeholders(spec.workdir, names, "$.workdir")


def validate_environment(spec: EnvironmentSpec) -> None:
    """Refuse an environment that sets a reserved variable."""
    reserved_env(spec.env, "$.env")


# ---- placeholders -------------------------------------------------------------------------

# `{{{{` is a literal `{{`; `{{ params.NAME }}` a parameter; any other `{{` is an error.
_TOKEN = re.compile(r"\{\{\{\{|\{\{\s*(?P<inner>[^{}]*?)\s*\}\}|\{\{")
_PARAM_REF = re.compile(r"^params\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


def _scan(text: str, path: str) -> list[str | tuple[str]]:
    """Text pieces and (parameter name,) placeholders of a template string, in order."""
    out: list[str | tuple[str]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token == "{{{{":
            out.append("{{")
            continue
        inner = m.group("inner")
        ref = _PARAM_REF.match(inner) if inner is not None else None
        if ref is None:
            shown = token if inner is not None else text[m.start() : m.start() + 20]
            raise InvalidValue(
                f"unknown placeholder {shown!r}: write {{{{params.NAME}}}} for a parameter, "
                "or {{{{{{{{ for a literal {{{{",
                field=path,
            )
        out.append((ref.group("name"),))
    out.append(text[pos:])
    return out


def check_placeholders(text: str, names: set[str], path: str) -> None:
    """Refuse a placeholder that is malformed or names an undeclared parameter."""
    for piece in _scan(text, path):
        if isinstance(piece, tuple) and piece[0] not in names:
            raise InvalidValue(
                f"placeholder {{{{params.{piece[0]}}}}} names no declared parameter", field=path
            )


def param_text(value: ParamValue) -> str:
    """A parameter's value as text: a string as it is, anything else in its JSON form."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def substitute(text: str, params: dict[str, ParamValue]) -> str:
    """A template string with its placeholders replaced (an absent parameter: empty)."""
    pieces = _scan(text, "$")
    if len(pieces) == 1:
        return text
    return "".join(
        p if isinstance(p, str) else (param_text(params[p[0]]) if p[0] in params else "")
        for p in pieces
    )


# ---- parameters and resolution -------------------------------------------------------------


def check_params(declared: list[Param], given: dict[str, ParamValue]) -> dict[str, ParamValue]:
    """The parameters a job runs with: the given ones, checked against the declaration
    (422 naming `$.params.NAME`), and the defaults of the others."""
    by_name = {p.name: p for p in declared}
    for name, value in given.items():
        param = by_name.get(name)
        if param is None:
            known = ", ".join(by_name) or "none"
            raise InvalidValue(
                f"unknown parameter {name!r} (declared: {known})", field=f"$.params.{name}"
            )
        if param.type is ParamType.INTEGER and isinstance(value, float) and value.is_integer():
            value = int(value)
        if why := _type_error(param, value):
            raise InvalidValue(f"parameter {name} {why}", field=f"$.params.{name}")
    out: dict[str, ParamValue] = {}
    for param in declared:
        if param.name in given:
            value = given[param.name]
            if param.type is ParamType.INTEGER and isinstance(value, float):
                value = int(value)
            out[param.name] = value
        elif param.default is not None:
            out[param.name] = param.default
        elif param.required:
            raise InvalidValue(
                f"parameter {param.name} is required", field=f"$.params.{param.name}"
            )
    return out


def param_env(name: str) -> str:
    """The environment variable a parameter reaches the job as."""
    return PARAM_ENV_PREFIX + name.upper()


def resolve(
    name: str,
    definition: DefinitionSpec,
    environment: EnvironmentSpec | None,
    request: DefinitionSubmit,
    project: str,
) -> tuple[JobSpec, dict[str, ParamValue]]:
    """The job spec a submit by reference asks for, and its parameters: environment <
    definition < the submit's own fields. Raises `InvalidValue` for bad parameters or a
    spec the environment leaves without an image."""
    params = check_params(definition.params, request.params)
    env_settings = environment or EnvironmentSpec()
    env: dict[str, EnvSetting] = dict(env_settings.env)
    for key, value in definition.env.items():
        env[key] = substitute(value, params) if isinstance(value, str) else value
    for pname, value in params.items():
        env[param_env(pname)] = param_text(value)
    image = definition.image or env_settings.image
    if image is None:
        raise InvalidValue(
            f"definition {name} has no image, nor has its environment", field="$.definition"
        )
    fields: dict[str, Any] = {
        "image": image,
        "command": [substitute(arg, params) for arg in definition.command],
        "env": env,
        "workdir": substitute(definition.workdir, params) if definition.workdir else None,
        "resources": definition.resources or env_settings.resources or Resources(),
        "timeout_seconds": definition.timeout_seconds,
        "priority": request.priority if request.priority is not None else definition.priority,
        "labels": {**definition.labels, **request.labels},
        "project": project,
        "scheduled_for": request.scheduled_for,
        "idempotency_key": request.idempotency_key,
        "retry": definition.retry,
        "tags": definition.tags,
        "concurrency_key": request.concurrency_key
        or definition.concurrency_key
        or f"{DEFAULT_KEY_PREFIX}{project}/{name}",
        "concurrency_limit": request.concurrency_limit or definition.concurrency_limit,
        "stop_grace_seconds": definition.stop_grace_seconds,
    }
    try:
        spec = msgspec.convert(
            {k: v for k, v in fields.items() if v is not None}, JobSpec, from_attributes=True
        )
    except msgspec.ValidationError as exc:
        # A substituted value out of bounds (e.g. a command argument grown too long).
        raise InvalidValue(f"the resolved spec is invalid: {exc}", field="$.params") from None
    return spec, params


# ---- diffs --------------------------------------------------------------------------------


class Change(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One difference between two versions: the JSON path, and the value before and after
    (absent: the path did not exist on that side)."""

    path: str
    old: Any = msgspec.UNSET
    new: Any = msgspec.UNSET


def diff(old: Any, new: Any, path: str = "$") -> list[Change]:
    """The paths where two JSON values differ, objects compared key by key, lists item by
    item (a list of different length: the tail's items added or removed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Change] = []
        for key in sorted(old.keys() | new.keys()):
            at = f"{path}.{key}"
            if key not in new:
                out.append(Change(path=at, old=old[key]))
            elif key not in old:
                out.append(Change(path=at, new=new[key]))
            else:
                out += diff(old[key], new[key], at)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            at = f"{path}[{i}]"
            if i >= len(new):
                out.append(Change(path=at, old=old[i]))
            elif i >= len(old):
                out.append(Change(path=at, new=new[i]))
            else:
                out += diff(old[i], new[i], at)
        return out
    if old == new and type(old) is type(new):
        return []
    return [Change(path=path, old=old, new=new)]
