"""`jobledger schedules`: create, list, show, pause, resume, trigger, delete a project's cron
schedules and read their occurrences, over HTTP (a client verb: no server module here)."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..client import Client
from ..domain.specs import DEFAULT_PROJECT
from ..exitcodes import EXIT_OK, EXIT_USAGE, Exit
from ..wire import OccurrenceList, ScheduleList, ScheduleOut, TriggeredOut
from .clientverbs import with_client
from .definitionverbs import declared_params, typed
from .formatting import table
from .options import add_client_args, key_value, read_json_arg

VERBS = ("create", "list", "show", "pause", "resume", "trigger", "delete", "occurrences")


def configure_schedules_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "schedules",
        help="cron schedules: create, list, show, pause, resume, trigger, delete, occurrences",
        description="A schedule runs a job spec (--image), a definition (--definition, "
        "resolved at each occurrence) or a workflow (--workflow FILE.json, as `workflows "
        "submit` takes it) at the times of a cron expression (5 fields, "
        "6 with seconds first, or @hourly/@daily/...) in an IANA time zone. Examples: "
        "jobledger schedules create nightly --cron '30 2 * * *' --timezone Europe/Prague "
        "--image busybox --command 'sh -c \"echo $JOBLEDGER_OCCURRENCE\"'; "
        "jobledger schedules create load --cron '@daily' --definition nightly-etl "
        "--param table=events --param rows=100; "
        "jobledger schedules create etl --cron '0 3 * * *' --workflow etl.json",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    create = verbs.add_parser("create", help="create a schedule")
    create.add_argument("name")
    create.add_argument("--cron", required=True, help="e.g. '30 2 * * *', '*/10 * * * * *'")
    create.add_argument("--timezone", default="UTC", help="IANA zone (default: %(default)s)")
    what = create.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="run a job spec with this image (with --command, --env)")
    what.add_argument(
        "--definition", metavar="NAME",
        help="run the project's definition NAME, its latest version at each occurrence "
        "(with --param, --definition-version, --environment, --priority, --label, "
        "--concurrency-key/-limit)",
    )  # fmt: skip
    what.add_argument(
        "--workflow", metavar="FILE.json",
        help="run this workflow (a JSON file as `workflows submit` takes it, - for stdin) at "
        "each occurrence, in the schedule's project",
    )  # fmt: skip
    create.add_argument("--env", action="append", default=[], metavar="VAR=VALUE")
    create.add_argument(
        "--param", type=key_value, action="append", default=[], metavar="K=V",
        help="a parameter's value, typed as the definition declares it (repeatable)",
    )  # fmt: skip
    create.add_argument(
        "--definition-version",
        type=int,
        metavar="N",
        help="pin that version (default: the latest at each occurrence)",
    )
    create.add_argument(
        "--environment", metavar="NAME", help="instead of the environment the definition names"
    )
    create.add_argument("--priority", type=int)
    create.add_argument("--label", type=key_value, action="append", default=[], metavar="K=V")
    create.add_argument(
        "--concurrency-key", metavar="KEY", help="default with --definition: schedule:PROJECT/NAME"
    )
    create.add_argument("--concurrency-limit", type=int, metavar="N")  # fmt: skip
    create.add_argument("--overlap", choices=("skip", "queue_one", "allow"), default="skip")
    create.add_argument("--catch-up", choices=("none", "latest", "all"), default="latest")
    create.add_argument("--catch-up-limit", type=int, default=10)
    create.add_argument("--jitter-seconds", type=int, default=0)
    create.add_argument(
        "--command", dest="argv", default="", help="the job's command, split like a shell "
        "would: --command 'sh -c \"echo $JOBLEDGER_OCCURRENCE\"'",
    )  # fmt: skip
    listing = verbs.add_parser("list", help="a project's schedules")
    show = verbs.add_parser("show", help="one schedule and its next times")
    show.add_argument("name")
    show.add_argument("--preview", type=int, default=5, help="next N times (default: 5)")
    occ = verbs.add_parser("occurrences", help="fired and skipped occurrences, newest first")
    occ.add_argument("name")
    occ.add_argument("--since", help="occurrences at or after this ISO time")
    occ.add_argument("--until", help="occurrences before this ISO time")
    occ.add_argument("--limit", type=int, default=50)
    simple = [verbs.add_parser(v, help=f"{v} a schedule") for v in ("pause", "resume",
              "trigger", "delete")]  # fmt: skip
    for q in simple:
        q.add_argument("name")
    for q in (create, listing, show, occ, *simple):
        q.add_argument("--project", default=DEFAULT_PROJECT, help="(default: %(default)s)")
        q.add_argument("--json", action="store_true", help="print the answer as JSON")
        add_client_args(q)
        q.set_defaults(func=cmd_schedules)


def _t(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"


def _describe(s: ScheduleOut) -> str:
    state = "paused" if s.paused else "active"
    lines = [
        f"schedule {s.name} of project {s.project}: {s.cron} ({s.timezone}), {state}",
        f"  overlap {s.overlap}, catch-up {s.catch_up}, jitter {s.jitter_seconds}s; "
        f"fired {s.fired}, skipped {s.skipped}",
        f"  next {_t(s.next_occurrence)}, last {_t(s.last_occurrence)}",
    ]
    run = s.run
    if run.workflow is not None:
        steps = [step.name for step in run.workflow.steps]
        lines.insert(1, f"  runs a workflow of {len(steps)} steps: {', '.join(steps)}")
    elif run.definition is not None:
        pinned = f" version {run.definition_version}" if run.definition_version else " (latest)"
        params = " ".join(f"{k}={v}" for k, v in run.params.items())
        lines.insert(1, f"  runs definition {run.definition}{pinned} {params}".rstrip())
    elif run.spec is not None:
        lines.insert(1, f"  runs {run.spec.image} {shlex.join(run.spec.command)}".rstrip())
    for p in s.preview or []:
        lines.append(f"  {p.local.isoformat()}  ({_t(p.utc)})")
    return "\n".join(lines)


async def _run(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """What `create` runs: a spec from --image, a workflow from --workflow's file, or a
    definition with its --param values typed as it declares them (as `submit --definition`
    types them)."""
    spec_only = {"--command": args.argv, "--env": args.env}
    definition_only = {
        "--param": args.param, "--definition-version": args.definition_version,
        "--environment": args.environment, "--priority": args.priority, "--label": args.label,
        "--concurrency-key": args.concurrency_key, "--concurrency-limit": args.concurrency_limit,
    }  # fmt: skip
    if args.workflow is not None:
        if given := [k for k, v in {**spec_only, **definition_only}.items() if v]:
            raise Exit(EXIT_USAGE, f"{', '.join(given)} do not go with --workflow (its steps "
                       "say them)")  # fmt: skip
        return {"workflow": read_json_arg(args.workflow, "a workflow")}
    if args.definition is None:
        if given := [k for k, v in definition_only.items() if v]:
            raise Exit(EXIT_USAGE, f"{', '.join(given)} go with --definition")
        env = dict(pair.partition("=")[::2] for pair in args.env)
        spec = {"image": args.image, "command": shlex.split(args.argv), "env": env,
                "project": args.project}  # fmt: skip
        return {"spec": spec}
    if given := [k for k, v in spec_only.items() if v]:
        raise Exit(EXIT_USAGE, f"{', '.join(given)} go with --image (the definition sets them)")
    declared = await declared_params(client, args.project, args) if args.param else {}
    fields: dict[str, Any] = {
        "definition": args.definition,
        "definition_version": args.definition_version,
        "params": {k: typed(declared.get(k), v) for k, v in args.param},
        "environment": args.environment,
        "priority": args.priority,
        "labels": dict(args.label) or None,
        "concurrency_key": args.concurrency_key,
        "concurrency_limit": args.concurrency_limit,
    }
    return {k: v for k, v in fields.items() if v is not None}


async def cmd_schedules(args: argparse.Namespace) -> int:
    base = f"/api/v1/projects/{args.project}/schedules"

    async def run(client: Client) -> int:
        if args.verb == "create":
            body = {
                "name": args.name, "cron": args.cron, "timezone": args.timezone,
                "overlap": args.overlap, "catch_up": args.catch_up,
                "catch_up_limit": args.catch_up_limit, "jitter_seconds": args.jitter_seconds,
                "run": await _run(client, args),
            }  # fmt: skip
            raw = await client.request_raw("POST", base, body=body)
        elif args.verb == "list":
            raw = await client.request_raw("GET", base)
        elif args.verb == "show":
            raw = await client.request_raw(
                "GET", f"{base}/{args.name}", params={"preview": str(args.preview)}
            )
        elif args.verb == "occurrences":
            params = {"limit": str(args.limit)}
            params |= {k: v for k in ("since", "until") if (v := getattr(args, k))}
            raw = await client.request_raw("GET", f"{base}/{args.name}/occurrences",
                                           params=params)  # fmt: skip
        elif args.verb == "delete":
            await client.request_raw("DELETE", f"{base}/{args.name}")
            print(f"deleted schedule {args.name} of project {args.project}")
            return EXIT_OK
        else:
            raw = await client.request_raw("POST", f"{base}/{args.name}/{args.verb}")
        if args.json:
            print(raw.decode())
        elif args.verb in ("create", "show", "pause", "resume"):
            print(_describe(msgspec.json.decode(raw, type=ScheduleOut)))
        elif args.verb == "trigger":
            done = msgspec.json.decode(raw, type=TriggeredOut)
            if done.workflow_run is not None:
                print(f"triggered schedule {args.name}: workflow run {done.workflow_run}")
            else:
                print(f"triggered schedule {args.name}: job {done.job_id}")
        elif args.verb == "list":
            rows = [[s.name, s.cron, s.timezone, "paused" if s.paused else "active",
                     _t(s.next_occurrence), str(s.fired), str(s.skipped)]
                    for s in msgspec.json.decode(raw, type=ScheduleList).schedules]  # fmt: skip
            print(table(["NAME", "CRON", "ZONE", "STATE", "NEXT", "FIRED", "SKIPPED"], rows))
        else:
            page = msgspec.json.decode(raw, type=OccurrenceList)
            rows = [[_t(o.occurrence), o.outcome + (" (manual)" if o.manual else ""),
                     (o.reason or "") + (f": {o.detail}" if o.detail else ""),
                     str(o.job_id or "") or (f"run {o.workflow_run}" if o.workflow_run else ""),
                     f"{o.job_lag_seconds:.3f}s"
                     if o.job_lag_seconds is not None else ""]
                    for o in page.occurrences]  # fmt: skip
            print(table(["OCCURRENCE", "OUTCOME", "REASON", "JOB", "LAG"], rows))
            if not page.occurrences:
                print("no occurrence recorded (none was due, or no scheduler ran since)",
                      file=sys.stderr)  # fmt: skip
        return EXIT_OK

    return await with_client(args, run)
