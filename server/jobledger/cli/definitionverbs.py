"""`jobledger definitions ...` and `jobledger environments ...`: save, list, show, compare,
disable/enable and delete them over HTTP; and the part of `submit --definition` that turns
`--param k=v` into typed values. Client side only: the HTTP client, wire types, the domain."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import msgspec

from ..client import Client
from ..domain.specs import DEFAULT_PROJECT
from ..domain.templates import Param, ParamType, ParamValue
from ..exitcodes import EXIT_OK
from ..wire import (
    DefinitionList,
    DefinitionOut,
    DiffOut,
    EnvironmentList,
    EnvironmentOut,
    VersionList,
)  # fmt: skip
from .clientverbs import _when, with_client
from .formatting import table
from .options import add_client_args, env_option, read_json_arg


def _project_arg(p: argparse.ArgumentParser) -> None:
    env_option(p, "--project", env="JOBLEDGER_PROJECT", default=DEFAULT_PROJECT,
               help="the project they belong to")  # fmt: skip


def configure_definitions_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "definitions", help="saved job templates with parameters: put, list, show, diff, ..."
    )
    _configure_kind(p, "definition")


def configure_environments_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    p = sub.add_parser(
        "environments", help="shared settings (env, image, resources): put, list, show, ..."
    )
    _configure_kind(p, "environment")


def _configure_kind(p: argparse.ArgumentParser, kind: str) -> None:
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    put = verbs.add_parser("put", help=f"save a {kind} from a JSON file (a new version)")
    put.add_argument("name", metavar="NAME")
    put.add_argument("-f", "--file", required=True, metavar="FILE",
                     help="its content as JSON (- for stdin)")  # fmt: skip
    verbs.add_parser("list", help=f"the project's {kind}s")
    show = verbs.add_parser("show", help=f"a {kind} at its latest version (or --version)")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--version", type=int, metavar="N")
    history = verbs.add_parser("versions", help="who saved each version, and when")
    history.add_argument("name", metavar="NAME")
    diff = verbs.add_parser("diff", help="what changed between two versions")
    diff.add_argument("name", metavar="NAME")
    diff.add_argument("old", type=int, metavar="FROM")
    diff.add_argument("new", type=int, metavar="TO")
    delete = verbs.add_parser("delete", help=f"delete a {kind} (its versions stay in the log)")
    delete.add_argument("name", metavar="NAME")
    extra: list[argparse.ArgumentParser] = []
    if kind == "definition":
        disable = verbs.add_parser("disable", help="refuse its submits until enabled")
        disable.add_argument("name", metavar="NAME")
        disable.add_argument("--reason", metavar="TEXT", help="shown to refused submitters")
        enable = verbs.add_parser("enable", help="take its submits again")
        enable.add_argument("name", metavar="NAME")
        extra = [disable, enable]
    for q in (put, verbs.choices["list"], show, history, diff, delete, *extra):
        q.add_argument("--json", action="store_true", help="print the answer as JSON")
        _project_arg(q)
        add_client_args(q)
        q.set_defaults(func=cmd_kind, kind=kind)


async def cmd_kind(args: argparse.Namespace) -> int:
    base = f"/api/v1/projects/{args.project}/{args.kind}s"
    one = f"{base}/{getattr(args, 'name', '')}"
    out_type: Any = DefinitionOut if args.kind == "definition" else EnvironmentOut

    async def run(client: Client) -> int:
        raw: bytes
        match args.verb:
            case "put":
                body = read_json_arg(args.file, f"the {args.kind}")
                raw = await client.request_raw("PUT", one, body=body)
                if not args.json:
                    saved = msgspec.json.decode(raw, type=out_type)
                    print(f"{args.kind} {saved.name} version {saved.version}")
                    return EXIT_OK
            case "list":
                raw = await client.request_raw("GET", base)
                if not args.json:
                    print(_list_table(args.kind, raw), end="")
                    return EXIT_OK
            case "show":
                params = {"version": args.version} if args.version else None
                raw = await client.request_raw("GET", one, params=params)
                if not args.json:
                    shown = msgspec.json.decode(raw, type=out_type)
                    print(
                        f"{args.kind} {shown.name} version {shown.version} of "
                        f"{shown.latest_version}, saved by {shown.saved_by} at "
                        f"{_when(shown.saved_at)}"
                        + (" (disabled)" if getattr(shown, "disabled", False) else "")
                    )
                    content = shown.definition if args.kind == "definition" else shown.environment
                    print(json.dumps(msgspec.to_builtins(content), indent=2))  # fmt: skip
                    return EXIT_OK
            case "versions":
                raw = await client.request_raw("GET", f"{one}/versions")
                if not args.json:
                    versions = msgspec.json.decode(raw, type=VersionList).versions
                    rows = [[str(v.version), v.saved_by, _when(v.saved_at)] for v in versions]
                    print(table(["VERSION", "SAVED BY", "SAVED AT"], rows))
                    return EXIT_OK
            case "diff":
                raw = await client.request_raw(
                    "GET", f"{one}/diff", params={"from": args.old, "to": args.new}
                )
                if not args.json:
                    print(_diff_text(msgspec.json.decode(raw, type=DiffOut)), end="")
                    return EXIT_OK
            case "delete":
                await client.request_raw("DELETE", one)
                print(f"deleted {args.kind} {args.name}")
                return EXIT_OK
            case "disable" | "enable":
                body = {"reason": args.reason} if getattr(args, "reason", None) else None
                raw = await client.request_raw("POST", f"{one}/{args.verb}", body=body)
                if not args.json:
                    print(f"definition {args.name} {args.verb}d")
                    return EXIT_OK
        print(raw.decode())
        return EXIT_OK

    return await with_client(args, run)


def _list_table(kind: str, raw: bytes) -> str:
    if kind == "definition":
        defs = msgspec.json.decode(raw, type=DefinitionList).definitions
        rows = [[d.name, str(d.version), "yes" if d.disabled else "", ",".join(d.params),
                 d.updated_by, _when(d.updated_at)] for d in defs]  # fmt: skip
        return table(["NAME", "VERSION", "DISABLED", "PARAMS", "UPDATED BY", "UPDATED AT"], rows)
    envs = msgspec.json.decode(raw, type=EnvironmentList).environments
    rows = [[e.name, str(e.version), e.updated_by, _when(e.updated_at)] for e in envs]
    return table(["NAME", "VERSION", "UPDATED BY", "UPDATED AT"], rows)


def _diff_text(d: DiffOut) -> str:
    """One line per changed path: `PATH: OLD -> NEW` (`-` for a side without it)."""
    lines = [f"{d.name}: version {d.from_version} -> {d.to_version}"]

    def show(value: Any) -> str:
        return "-" if value is msgspec.UNSET else json.dumps(value)

    lines += [f"  {c.path}: {show(c.old)} -> {show(c.new)}" for c in d.changes]
    if not d.changes:
        lines.append("  no changes")
    return "\n".join(lines) + "\n"


# ---- submit --definition ----------------------------------------------------------------------


def typed(param: Param | None, text: str) -> ParamValue:
    """A `--param` value as its declared type asks (left as text when it does not parse, or
    the parameter is unknown: the server then says what is wrong, naming it)."""
    if param is None:
        return text
    match param.type:
        case ParamType.INTEGER:
            try:
                return int(text)
            except ValueError:
                return text
        case ParamType.NUMBER:
            try:
                return float(text) if any(c in text for c in ".eE") else int(text)
            except ValueError:
                return text
        case ParamType.BOOLEAN:
            return {"true": True, "false": False}.get(text.lower(), text)
    return text


async def declared_params(
    client: Client, project: str, args: argparse.Namespace
) -> dict[str, Param]:
    """The params `--definition` (at `--definition-version`, else its latest) declares, read
    from the server: their types make `--param` values JSON of the right type."""
    where = f"/api/v1/projects/{project}/definitions/{args.definition}"
    query = {"version": args.definition_version} if args.definition_version else None
    shown = msgspec.json.decode(
        await client.request_raw("GET", where, params=query), type=DefinitionOut
    )
    return {p.name: p for p in shown.definition.params}


async def definition_body(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """The body of `submit --definition`: the definition's declared types (read from the
    server) give `--param` values their JSON type."""
    project = args.project or os.environ.get("JOBLEDGER_PROJECT") or None
    declared = await declared_params(client, project or DEFAULT_PROJECT, args) if args.param else {}
    fields: dict[str, Any] = {
        "definition": args.definition,
        "definition_version": args.definition_version,
        "params": {k: typed(declared.get(k), v) for k, v in args.param},
        "project": project,
        "priority": args.priority,
        "labels": dict(args.label) or None,
        "scheduled_for": args.scheduled_for,
        "idempotency_key": args.idempotency_key,
        "concurrency_key": args.concurrency_key,
        "concurrency_limit": args.concurrency_limit,
        "environment": args.environment,
    }
    return {k: v for k, v in fields.items() if v is not None}
