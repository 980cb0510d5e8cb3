"""`jobledger workflows`: submit a workflow run from a JSON file, show a run's steps as a
tree with their states, print their output (`logs`, in workflowlogs.py), cancel and rerun
runs, over HTTP (a client verb: no server module here)."""

from __future__ import annotations

import argparse

import msgspec

from ..client import Client
from ..exitcodes import EXIT_OK
from ..wire import WorkflowRunList, WorkflowRunOut, WorkflowStepOut
from .clientverbs import with_client
from .formatting import table
from .options import add_client_args, read_json_arg
from .workflowlogs import cmd_workflow_logs

VERBS = ("submit", "list", "show", "logs", "cancel", "rerun")
_BASE = "/api/v1/workflows"


def configure_workflows_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "workflows",
        help="workflow runs: submit, list, show, logs, cancel, rerun",
        description="A workflow is named steps, each a job spec or a definition, with "
        "`needs`; each step runs as a child job when its needs have finished. Examples: "
        "jobledger workflows submit etl.json; jobledger workflows show RUN; "
        "jobledger workflows logs -f RUN; jobledger workflows rerun RUN --from-failure",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    submit = verbs.add_parser("submit", help="run a workflow spec (a JSON file, - for stdin)")
    submit.add_argument("file", metavar="FILE.json")
    lister = verbs.add_parser("list", help="list runs, newest first")
    lister.add_argument("--project")
    lister.add_argument("--state", help="running, cancelling, succeeded, failed, cancelled")
    lister.add_argument("--schedule", help="only the runs this schedule started (with --project)")
    for verb in ("show", "cancel", "rerun"):
        q = verbs.add_parser(verb, help=f"{verb} a run")
        q.add_argument("run", metavar="RUN_ID")
        if verb == "cancel":
            q.add_argument("--reason")
        if verb == "rerun":
            q.add_argument(
                "--from-failure", action="store_true",
                help="run only what did not succeed; succeeded steps are reused",
            )  # fmt: skip
    for q in (submit, lister, *(verbs.choices[v] for v in ("show", "cancel", "rerun"))):
        q.add_argument("--json", action="store_true", help="print the answer as JSON")
        add_client_args(q)
        q.set_defaults(func=cmd_workflows)
    logs = verbs.add_parser(
        "logs", help="every step's output, each line prefixed by its step; -f follows the run",
        description="Lines are prefixed by the step's name; stdout lines go to stdout, "
        "stderr lines to stderr. Without -f: what the started steps printed so far, step by "
        "step in start order. With -f: live, across steps, until the run ends; then exit 0 "
        "if it succeeded, 1 if it failed or was cancelled.",
    )  # fmt: skip
    logs.add_argument("run", metavar="RUN_ID")
    logs.add_argument(
        "-f", "--follow", action="store_true",
        help="follow every step live until the run ends (exit 0 if it succeeded, else 1)",
    )  # fmt: skip
    logs.add_argument(
        "--json", action="store_true",
        help="one JSON object a line: step, job_id, seq, stream, ts, text (all on stdout)",
    )  # fmt: skip
    add_client_args(logs)
    logs.set_defaults(func=cmd_workflow_logs)


def _step_line(step: WorkflowStepOut) -> str:
    what = (
        step.waiting_reason
        or step.reason
        or (f"skipped: {step.skip_reason}" if step.skip_reason else "")
    )
    job = f" job {step.job_id}" if step.job_id else ""
    reused = f" from run {step.from_run}" if step.from_run else ""
    return f"{step.name} [{step.label}] {step.state}{job}{reused}" + (f" ({what})" if what else "")


def describe(run: WorkflowRunOut) -> str:
    """A run and its steps as a tree: each step under its first need (others named)."""
    lines = [f"workflow run {run.id} ({run.project}): {run.state}"]
    children: dict[str | None, list[WorkflowStepOut]] = {}
    for step in run.steps:
        children.setdefault(step.needs[-1] if step.needs else None, []).append(step)

    def walk(parent: str | None, depth: int) -> None:
        for step in children.get(parent, []):
            also = [n for n in step.needs[:-1]]
            extra = f"  (also needs {', '.join(also)})" if also else ""
            lines.append("  " * depth + "└ " + _step_line(step) + extra)
            walk(step.name, depth + 1)

    walk(None, 1)
    return "\n".join(lines)


async def cmd_workflows(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        if args.verb == "submit":
            body = read_json_arg(args.file, "a workflow")
            raw = await client.request_raw("POST", _BASE, body=body)
        elif args.verb == "list":
            params = {k: v for k in ("project", "state", "schedule") if (v := getattr(args, k))}
            raw = await client.request_raw("GET", _BASE, params=params)
        elif args.verb == "show":
            raw = await client.request_raw("GET", f"{_BASE}/{args.run}")
        elif args.verb == "cancel":
            body = {"reason": args.reason} if args.reason else None
            raw = await client.request_raw("POST", f"{_BASE}/{args.run}/cancel", body=body)
        else:
            mode = "from_failure" if args.from_failure else "whole"
            raw = await client.request_raw("POST", f"{_BASE}/{args.run}/rerun",
                                           body={"mode": mode})  # fmt: skip
        if args.json:
            print(raw.decode())
        elif args.verb == "list":
            runs = msgspec.json.decode(raw, type=WorkflowRunList).runs
            rows = [[str(r.id), r.project, r.state.value, str(len(r.steps)),
                     r.created_at.isoformat(timespec="seconds")] for r in runs]  # fmt: skip
            print(table(["RUN", "PROJECT", "STATE", "STEPS", "CREATED"], rows))
        else:
            print(describe(msgspec.json.decode(raw, type=WorkflowRunOut)))
        return EXIT_OK

    return await with_client(args, run)
