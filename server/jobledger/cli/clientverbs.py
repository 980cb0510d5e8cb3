"""The client verbs of `jobledger` (logs, submit, jobs, audit, show, cancel, tokens): thin
argparse front ends over `jobledger.client.Client`, one `configure_*_parser` per verb. They
import the HTTP client, the wire types and the domain, never the server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..client import MAX_JOBS_PAGE, Client, ClientError, print_lines
from ..domain.jobs import JobState
from ..exitcodes import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Exit
from ..wire import IssuedToken, LinesMessage, RevokedToken, TokenList
from .formatting import audit_table, job_details, jobs_table, outcome, table
from .options import add_client_args, iso_time, key_value


async def with_client(args: argparse.Namespace, action: Callable[[Client], Awaitable[int]]) -> int:
    """Run `action` with a client of the server `args` name; a refused or failed request
    ends it with `jobledger: <message>` on stderr and exit 1."""
    try:
        async with Client(args.url, token=args.token) as client:
            return await action(client)
    except ClientError as exc:
        hint = (
            " (pass --token or set JOBLEDGER_TOKEN)" if exc.status == 401 and not args.token else ""
        )
        print(f"jobledger: {exc.message}{hint}", file=sys.stderr)
        return EXIT_ERROR


def job_states(text: str) -> list[str]:
    """One state or several comma-separated (an argparse type)."""
    states = [s.strip() for s in text.split(",") if s.strip()]
    known = [s.value for s in JobState]
    if not states or any(s not in known for s in states):
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of: {', '.join(known)}")
    return states


def configure_logs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("logs", help="print a job's logs; -f follows them until the job ends")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument(
        "-f", "--follow", action="store_true",
        help="stream new lines live until the job ends (resumes after a dropped connection)",
    )  # fmt: skip
    p.add_argument("--after", type=int, default=0, help="start after this line number (seq)")
    add_client_args(p)
    p.set_defaults(func=cmd_logs)


async def cmd_logs(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        if args.follow:
            async for message in client.follow_logs(args.job_id, after=args.after):
                if isinstance(message, LinesMessage):
                    print_lines(message.lines)
        else:
            async for lines in client.read_logs(args.job_id, after=args.after):
                print_lines(lines)
        return EXIT_OK

    return await with_client(args, run)


SUBMIT_USAGE = (
    "jobledger submit [OPTIONS] IMAGE [OPTIONS] [-- CMD ARG...]\n"
    "       jobledger submit --definition NAME [--param K=V ...] [OPTIONS]"
)


def _add_submit_options(p: argparse.ArgumentParser) -> None:
    spec = p.add_argument_group("job spec (unset fields take the server's defaults)")
    spec.add_argument(
        "--env", type=key_value, action="append", default=[], metavar="K=V",
        help="an environment variable of the job (repeatable)",
    )  # fmt: skip
    spec.add_argument(
        "--secret", type=key_value, action="append", default=[], metavar="VAR=NAME[:VERSION]",
        help="an environment variable set from the project's secret NAME at the start (the "
        "latest version, or VERSION); the value never enters the job's spec (repeatable)",
    )  # fmt: skip
    spec.add_argument(
        "--cpu", type=float, metavar="CORES", help="CPU cores, fractions allowed (default 1)"
    )
    spec.add_argument("--memory-mb", type=int, metavar="MB", help="memory limit (default 512)")
    spec.add_argument(
        "--timeout-seconds", "--timeout", type=int, metavar="SECONDS", help="wall-clock limit"
    )
    spec.add_argument(
        "--stop-grace-seconds", type=int, metavar="SECONDS",
        help="between the stop signal and the kill, on cancel or timeout (default 10)",
    )  # fmt: skip
    spec.add_argument(
        "--priority", type=int, metavar="N", help="-1000..1000, higher first (default 0)"
    )
    spec.add_argument(
        "--label", type=key_value, action="append", default=[], metavar="K=V",
        help="a label to filter on (repeatable)",
    )  # fmt: skip
    spec.add_argument(
        "--tag", action="append", default=[], metavar="T",
        help="a worker tag the job needs (repeatable)",
    )  # fmt: skip
    spec.add_argument(
        "--project",
        metavar="NAME",
        help="the job's project (default: the token's own, else default)",
    )
    spec.add_argument(
        "--scheduled-for", type=iso_time, metavar="ISO",
        help="earliest start, ISO 8601 with offset (e.g. 2030-01-01T09:00:00Z)",
    )  # fmt: skip
    spec.add_argument("--idempotency-key", metavar="KEY", help="one job per key and project")
    spec.add_argument(
        "--max-retries", "--retries", type=int, metavar="N",
        help="attempts more after a failure (retry.max_retries; default 0)",
    )  # fmt: skip
    spec.add_argument(
        "--backoff-seconds", type=float, metavar="SECONDS",
        help="delay before retry n is this times 2**(n-1) (retry.backoff_seconds; default 10)",
    )  # fmt: skip
    spec.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="jobs sharing a key run --concurrency-limit at once",
    )
    spec.add_argument(
        "--concurrency-limit", type=int, metavar="N",
        help="how many jobs sharing the concurrency key may run at once (default 1)",
    )  # fmt: skip
    spec.add_argument("--workdir", metavar="DIR", help="absolute working directory")
    ref = p.add_argument_group(
        "from a definition (instead of IMAGE; with --priority, --label, --project, "
        "--scheduled-for, --idempotency-key, --concurrency-key/-limit)"
    )
    ref.add_argument("--definition", metavar="NAME", help="submit the project's definition NAME")
    ref.add_argument(
        "--param", type=key_value, action="append", default=[], metavar="K=V",
        help="a parameter's value, typed as the definition declares it (repeatable)",
    )  # fmt: skip
    ref.add_argument(
        "--definition-version", type=int, metavar="N", help="that version (default: the latest)"
    )
    ref.add_argument(
        "--environment", metavar="NAME", help="instead of the environment the definition names"
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--json", action="store_true", help="print the whole job as JSON (with --wait: at its end)"
    )
    out.add_argument(
        "--wait", action="store_true",
        help="wait for the job to end and exit with its exit code (1 when it failed without "
        "one: timeout, start error, cancelled...)",
    )  # fmt: skip
    out.add_argument(
        "-f", "--follow", action="store_true",
        help="stream the job's output while waiting (implies --wait; the id goes to stderr)",
    )  # fmt: skip
    add_client_args(p)


class _AfterImage(argparse.Action):
    """What follows IMAGE: options up to `--`, then the job's command. Left alone, argparse
    would end the options at IMAGE and take everything after it as the command."""

    def __init__(self, *args: Any, options: argparse.ArgumentParser, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.options = options

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        rest = [str(v) for v in values or []]
        if "--" in rest:
            head, command = rest[: rest.index("--")], rest[rest.index("--") + 1 :]
        elif rest and not rest[0].startswith("-"):
            head, command = [], rest  # `IMAGE CMD ARG...`, the way `docker run` takes it
        else:
            head, command = rest, []
        if {"-h", "--help"} & set(head):
            parser.print_help()
            parser.exit()
        _, unknown = self.options.parse_known_args(head, namespace)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (the command goes after --)")
        if namespace.json and namespace.follow:
            parser.error("--json and --follow do not mix: the job's output goes to stdout")
        if namespace.image is None and namespace.definition is None:
            parser.error("IMAGE is required (or --definition NAME)")
        setattr(namespace, self.dest, command)


def configure_submit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "submit", usage=SUBMIT_USAGE, help="submit a job; --wait for its end, -f for its output"
    )
    _add_submit_options(p)
    after_image = argparse.ArgumentParser(prog=p.prog, usage=SUBMIT_USAGE, add_help=False)
    _add_submit_options(after_image)
    p.add_argument("image", metavar="IMAGE", nargs="?", help="container image")
    command = p.add_argument(
        "job_command", nargs=argparse.REMAINDER, action=_AfterImage, options=after_image,
        metavar="-- CMD ARG", help="the command and its arguments (default: the image's)",
    )  # fmt: skip
    # argparse counts a REMAINDER positional as required; the command is not.
    command.required = False
    p.set_defaults(func=cmd_submit)


def secret_refs(pairs: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """`--secret VAR=NAME[:VERSION]` options as the spec's env references."""
    refs: dict[str, dict[str, Any]] = {}
    for var, target in pairs:
        name, _, version = target.partition(":")
        ref: dict[str, Any] = {"secret": name}
        if version:
            if not version.isdigit():
                raise Exit(EXIT_USAGE, f"--secret {var}={target}: VERSION must be a number")
            ref["version"] = int(version)
        refs[var] = ref
    return refs


def spec_of(args: argparse.Namespace) -> dict[str, Any]:
    """The job spec (the API's JSON fields) the submit options ask for; what was not given
    is left out, for the server to fill in with its defaults."""
    resources = {"cpu": args.cpu, "memory_mb": args.memory_mb}
    retry = {"max_retries": args.max_retries, "backoff_seconds": args.backoff_seconds}
    fields: dict[str, Any] = {
        "image": args.image,
        "command": args.job_command,
        "env": {**dict(args.env), **secret_refs(args.secret)},
        "workdir": args.workdir,
        "resources": {k: v for k, v in resources.items() if v is not None},
        "timeout_seconds": args.timeout_seconds,
        "stop_grace_seconds": args.stop_grace_seconds,
        "priority": args.priority,
        "labels": dict(args.label),
        "tags": args.tag,
        "project": args.project,
        "scheduled_for": args.scheduled_for,
        "idempotency_key": args.idempotency_key,
        "retry": {k: v for k, v in retry.items() if v is not None},
        "concurrency_key": args.concurrency_key,
        "concurrency_limit": args.concurrency_limit,
    }
    return {k: v for k, v in fields.items() if v is not None and v != [] and v != {}}


#: Options of a spec that a submit by reference takes from its definition instead.
_SPEC_ONLY = ("env", "cpu", "memory_mb", "timeout_seconds", "stop_grace_seconds", "tag",
              "max_retries", "backoff_seconds", "workdir", "job_command")  # fmt: skip


def _submit_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the submit options' combination, if anything."""
    if args.definition is None:
        if args.image is None:
            return "IMAGE is required (or --definition NAME)"
        if args.param or args.definition_version or args.environment:
            return "--param, --definition-version and --environment go with --definition"
        return None
    if args.image is not None:
        return "--definition takes no IMAGE: the definition names it"
    given = [f"--{n.replace('_', '-')}" for n in _SPEC_ONLY if getattr(args, n, None)]
    if given:
        return f"{', '.join(given)} do not go with --definition (the definition sets them)"
    return None


async def cmd_submit(args: argparse.Namespace) -> int:
    wait = args.wait or args.follow
    if (problem := _submit_error(args)) is not None:
        print(f"jobledger submit: {problem}", file=sys.stderr)
        return EXIT_USAGE

    async def run(client: Client) -> int:
        if args.definition is not None:
            from .definitionverbs import definition_body  # it imports this module

            job = await client.submit(await definition_body(client, args))
        else:
            job = await client.submit(spec_of(args))
        if args.follow:
            print(f"jobledger: submitted job {job.id}", file=sys.stderr, flush=True)
        elif not (args.json and wait):
            print(msgspec.json.encode(job).decode() if args.json else job.id, flush=True)
        if not wait:
            return EXIT_OK
        job = await client.wait(str(job.id), print_lines if args.follow else None)
        if args.json:
            print(msgspec.json.encode(job).decode())
        code, message = outcome(job)
        if message:
            print(f"jobledger: {message}", file=sys.stderr)
        return code

    return await with_client(args, run)


def configure_jobs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("jobs", help="list jobs, newest first")
    p.add_argument(
        "--state", type=job_states, action="append", default=[], metavar="S",
        help="only jobs in this state (repeatable, or comma-separated)",
    )  # fmt: skip
    p.add_argument("--project", metavar="NAME", help="only this project's jobs")
    p.add_argument(
        "--label", type=key_value, action="append", default=[], metavar="K=V",
        help="only jobs with this label (repeatable; all must match)",
    )  # fmt: skip
    p.add_argument(
        "--schedule", metavar="NAME",
        help="only the jobs this schedule made (with --project: of that project)",
    )  # fmt: skip
    p.add_argument("--definition", metavar="NAME", help="only jobs made from this definition")
    p.add_argument(
        "--parent", metavar="JOB_ID", help="only the children of this job (made with its token)"
    )
    p.add_argument(
        "--limit", type=int, metavar="N", help="jobs per page (1-500; default 50, 500 with --all)"
    )
    p.add_argument("--all", action="store_true", help="every matching job, page after page")
    p.add_argument("--json", action="store_true", help="the jobs as a JSON array")
    add_client_args(p)
    p.set_defaults(func=cmd_jobs)


async def cmd_jobs(args: argparse.Namespace) -> int:
    states = [s for group in args.state for s in group]
    labels = dict(args.label)
    project = args.project
    which = {"schedule": args.schedule, "definition": args.definition, "parent_job": args.parent}

    async def run(client: Client) -> int:
        more = False
        if args.all:
            pages = client.iter_jobs(
                states=states, project=project, labels=labels,
                page_size=args.limit or MAX_JOBS_PAGE, **which,
            )  # fmt: skip
            jobs = [job async for page in pages for job in page]
        else:
            page = await client.list_jobs(
                states=states, project=project, labels=labels, limit=args.limit, **which
            )
            jobs, more = page.jobs, page.next_cursor is not None
        if args.json:
            print(msgspec.json.encode(jobs).decode())
            return EXIT_OK
        sys.stdout.write(jobs_table(jobs))
        if more:
            print("jobledger: more jobs match; --all lists every one", file=sys.stderr)
        return EXIT_OK

    return await with_client(args, run)


def configure_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="events from the log, newest first: who did what to which job, project or "
        "token, and when",
        description="Examples: who cancelled a job: `jobledger audit --job ID --type "
        "JobCancelRequested`; jobs lost with a worker since a time: `jobledger audit --type "
        "JobFailed --reason worker_lost --since 2030-01-01T00:00:00Z`; jobs that waited over "
        "ten minutes to start: `jobledger audit --min-wait 600`; who raised the limit of "
        "etl: `jobledger audit --stream-type project --stream etl --type "
        "ProjectLimitsChanged`; who issued the token used for a job: `jobledger audit "
        "--tokens-of-job ID --type TokenIssued`.",
    )
    p.add_argument("--project", metavar="NAME", help="only this project's jobs")
    p.add_argument("--actor", help="who acted: PROJECT/ACCOUNT, admin, worker:ID")
    p.add_argument("--token-id", metavar="ID", help="with which API token")
    p.add_argument("--job", metavar="ID", help="one job's events")
    p.add_argument(
        "--stream-type", metavar="KIND",
        help="only streams of this kind: job, project, service_account, token, ...",
    )  # fmt: skip
    p.add_argument(
        "--stream", metavar="ID|PROJECT/NAME",
        help="one stream: its id, or with --stream-type PROJECT/NAME (a project: its name)",
    )  # fmt: skip
    p.add_argument(
        "--tokens-of-job", metavar="JOB",
        help="events of the API tokens used on this job (--type TokenIssued: who issued them)",
    )  # fmt: skip
    p.add_argument(
        "--type", action="append", default=[], metavar="T",
        help="event type, e.g. JobCancelRequested (repeatable, or comma-separated)",
    )  # fmt: skip
    p.add_argument("--reason", help="failure reason, e.g. worker_lost, timeout, oom")
    p.add_argument(
        "--min-wait", type=float, metavar="SECONDS",
        help="starts of jobs that waited longer than this to start",
    )  # fmt: skip
    p.add_argument("--since", type=iso_time, help="recorded at or after (ISO 8601)")
    p.add_argument("--until", type=iso_time, help="recorded before (ISO 8601)")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N events (50)")
    p.add_argument("--all", action="store_true", help="every matching event")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    add_client_args(p)
    p.set_defaults(func=cmd_audit)


async def cmd_audit(args: argparse.Namespace) -> int:
    filters: list[tuple[str, str | int]] = [("type", t) for t in args.type]
    for name in ("project", "actor", "token_id", "job", "reason", "min_wait", "stream_type",
                 "stream", "tokens_of_job"):  # fmt: skip
        if (value := getattr(args, name)) is not None:
            filters.append((name, str(value)))
    for name in ("since", "until"):
        if (value := getattr(args, name)) is not None:
            filters.append((name, value.isoformat()))
    want = None if args.all else args.limit

    async def run(client: Client) -> int:
        events = []
        # One more than wanted tells whether there are more.
        async for page in client.iter_audit(filters, page_size=min((want or 499) + 1, 500)):
            events += page
            if want is not None and len(events) > want:
                break
        more = want is not None and len(events) > want
        events = events[:want]
        if args.json:
            for event in events:
                print(msgspec.json.encode(event).decode())
            return EXIT_OK
        sys.stdout.write(audit_table(events))
        if more:
            print(f"jobledger: showing {len(events)}; --limit N or --all for more", file=sys.stderr)
        return EXIT_OK

    return await with_client(args, run)


def configure_show_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("show", help="one job's spec, state, outcome, usage and times")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="the job as the API returns it")
    add_client_args(p)
    p.set_defaults(func=cmd_show)


async def cmd_show(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        job = await client.get_job(args.job_id)
        if args.json:
            print(msgspec.json.encode(job).decode())
        else:
            sys.stdout.write(job_details(job))
        return EXIT_OK

    return await with_client(args, run)


def configure_cancel_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cancel", help="cancel a job; prints its state afterwards")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--reason", metavar="TEXT", help="why, recorded in the job's history")
    add_client_args(p)
    p.set_defaults(func=cmd_cancel)


async def cmd_cancel(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        job = await client.cancel(args.job_id, args.reason)
        print(job.state.value)
        return EXIT_OK

    return await with_client(args, run)


def configure_tokens_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokens", help="issue, list and revoke a service account's API tokens")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    create = verbs.add_parser("create", help="issue a token: printed once, on stdout")
    create.add_argument("project")
    create.add_argument("account", help="the service account the token acts as")
    create.add_argument("--description", metavar="TEXT")
    create.add_argument(
        "--expires-in", type=int, metavar="SECONDS", help="lifetime (default: until revoked)"
    )
    create.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    listing = verbs.add_parser("list", help="a service account's tokens (never their secrets)")
    listing.add_argument("project")
    listing.add_argument("account")
    listing.add_argument("--json", action="store_true")
    revoke = verbs.add_parser("revoke", help="revoke a token: it stops working at once")
    revoke.add_argument("project")
    revoke.add_argument("token_id", metavar="TOKEN_ID")
    for q in (create, listing, revoke):
        add_client_args(q)
        q.set_defaults(func=cmd_tokens)


async def cmd_tokens(args: argparse.Namespace) -> int:
    base = f"/api/v1/projects/{args.project}"

    async def run(client: Client) -> int:
        if args.verb == "create":
            body = {"description": args.description, "expires_in_seconds": args.expires_in}
            raw = await client.request_raw(
                "POST", f"{base}/service-accounts/{args.account}/tokens",
                body={k: v for k, v in body.items() if v is not None},
            )  # fmt: skip
            issued = msgspec.json.decode(raw, type=IssuedToken)
            if args.json:
                print(raw.decode())
            else:
                print(issued.token)  # stdout holds the secret alone, for `export X=$(...)`
                until = issued.expires_at.isoformat() if issued.expires_at else "revoked"
                print(
                    f"token {issued.id} for {issued.project}/{issued.service_account}, "
                    f"valid until {until}; it is shown this once",
                    file=sys.stderr,
                )
        elif args.verb == "list":
            raw = await client.request_raw("GET", f"{base}/service-accounts/{args.account}/tokens")
            if args.json:
                print(raw.decode())
                return EXIT_OK
            rows = [
                [str(t.id), t.description or "", _when(t.created_at), _when(t.expires_at),
                 _when(t.revoked_at), _when(t.last_used_at)]
                for t in msgspec.json.decode(raw, type=TokenList).tokens
            ]  # fmt: skip
            print(table(["ID", "DESCRIPTION", "CREATED", "EXPIRES", "REVOKED", "LAST USED"], rows))
        else:
            raw = await client.request_raw("DELETE", f"{base}/tokens/{args.token_id}")
            revoked = msgspec.json.decode(raw, type=RevokedToken)
            print(f"revoked {revoked.id} at {_when(revoked.revoked_at)}")
        return EXIT_OK

    return await with_client(args, run)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else ""


def configure_rerun_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rerun", help="run an ended job again: a new job of its spec; prints the new job's id"
    )
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument(
        "--wait", action="store_true",
        help="wait for the new job to end and exit with its exit code (as submit --wait)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the new job as JSON")
    add_client_args(p)
    p.set_defaults(func=cmd_rerun)


async def cmd_rerun(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        job = await client.rerun(args.job_id)
        print(msgspec.json.encode(job).decode() if args.json else job.id, flush=True)
        if not args.wait:
            return EXIT_OK
        job = await client.wait(str(job.id))
        code, message = outcome(job)
        if message:
            print(f"jobledger: {message}", file=sys.stderr)
        return code

    return await with_client(args, run)
