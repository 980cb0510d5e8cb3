"""`jobledger submit | jobs | show | cancel` as a user runs them, against `jobledger serve
--executor process` (real processes run the jobs); and the pure formatting behind them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import msgspec
import pytest

from jobledger import cli
from jobledger.api.jobs import job_out
from jobledger.cli.formatting import cut, fit_widths, job_details, jobs_table, outcome, table
from jobledger.domain.events import FailureReason, Usage
from jobledger.domain.jobs import Fail, Finish, RequestCancel, Start, Submit
from jobledger.domain.specs import SecretRef
from jobledger.domain.templates import DefinitionSubmit, FromDefinition
from jobledger.projections.jobs import view_of
from jobledger.wire import JobOut
from tests.conftest import ADMIN_TOKEN
from tests.e2e.conftest import AUTH, ROOT, Server, child_env, free_port, jobledger, serving
from tests.e2e.conftest import run_cli as run
from tests.factories import MemoryLog, spec

MISSING = "01a2087c-db01-725b-b63a-f89db42493f1"
#: A failsafe against a hung test, never a timing assertion.
PATIENCE = 60


@pytest.fixture
async def server(dsn: str) -> AsyncIterator[Server]:
    async with serving(
        "--database-url", dsn, "--executor", "process", "--worker-id", "cli-e2e"
    ) as srv:
        yield srv


async def submit(url: str, *args: str) -> str:
    """Submit without waiting; the new job's id."""
    code, out, err = await run("submit", "--url", url, *args)
    assert code == 0, err
    return str(uuid.UUID(out.strip()))


async def until_state(url: str, job_id: str, state: str) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as http, asyncio.timeout(PATIENCE):
        while True:
            async with http.get(f"{url}/api/v1/jobs/{job_id}") as resp:
                if (await resp.json())["state"] == state:
                    return
            await asyncio.sleep(0.05)


def rows(table_text: str) -> list[list[str]]:
    """The table's rows below the header, split into cells."""
    return [line.split() for line in table_text.splitlines()[1:]]


# ---- submit -------------------------------------------------------------------------------


async def test_submit_wait_exits_with_the_jobs_exit_code(server: Server) -> None:
    url = server.url
    (ok, ok_out, ok_err), (three, _, three_err), (timeout, _, timeout_err) = await asyncio.gather(
        run("submit", "--url", url, "busybox:latest", "--wait", "--", "sh", "-c", "exit 0"),
        run("submit", "--url", url, "--wait", "busybox:latest", "--", "sh", "-c", "exit 3"),
        run("submit", "--url", url, "--timeout", "1", "--wait", "busybox:latest", "--", "sleep",
            "30"),
    )  # fmt: skip
    assert ok == 0, ok_err
    assert uuid.UUID(ok_out.strip()) and ok_err == ""
    assert three == 3
    assert "failed with exit code 3" in three_err
    assert timeout == 1  # killed by the timeout: its signal's exit code is not the command's
    assert "failed: timeout: timed out after 1s" in timeout_err


async def test_submit_json_and_start_errors(server: Server) -> None:
    url = server.url
    code, out, err = await run(
        "submit", "--url", url, "--json", "--cpu", "0.5", "--memory-mb", "64", "--priority", "5",
        "--retries", "2", "--tag", "linux", "--concurrency-key", "nightly", "--workdir", "/tmp",
        "--idempotency-key", "k-1", "--scheduled-for", "2099-01-01T00:00:00Z",
        "busybox:latest", "--", "true",
    )  # fmt: skip
    assert code == 0, err
    job = json.loads(out)
    assert job["state"] == "queued"
    assert job["spec"]["resources"] == {"cpu": 0.5, "memory_mb": 64}
    assert job["spec"]["retry"]["max_retries"] == 2
    assert job["spec"]["tags"] == ["linux"] and job["spec"]["concurrency_key"] == "nightly"
    assert job["spec"]["workdir"] == "/tmp" and job["spec"]["priority"] == 5
    assert job["scheduled_for"].startswith("2099-01-01T00:00:00")
    # The server validates the spec; its message and the field at fault are shown.
    code, out, err = await run("submit", "--url", url, "--cpu", "100", "busybox:latest")
    assert (code, out) == (1, "")
    assert err.startswith("jobledger: ") and "resources.cpu" in err
    # A command that cannot start has no exit code of its own: exit 1 and the reason.
    code, out, err = await run("submit", "--url", url, "--wait", "busybox:latest", "--", "/no/such")
    assert code == 1 and uuid.UUID(out.strip())
    assert "failed: start_error" in err


async def test_submit_follow_prints_the_jobs_output(server: Server) -> None:
    script = "echo hello $WHO; echo oops >&2; echo bye; exit 4"
    code, out, err = await run(
        "submit", "--url", server.url, "-f", "--env", "WHO=jobledger", "--token", ADMIN_TOKEN,
        "busybox:latest", "--", "sh", "-c", script,
    )  # fmt: skip
    assert code == 4
    assert out == "hello jobledger\nbye\n"  # only the job's stdout: the id went to stderr
    assert "oops\n" in err and "jobledger: submitted job " in err


# ---- jobs and show ------------------------------------------------------------------------


def create_project(url: str, name: str) -> None:
    """As the server admin (a submit to an unknown project is a 404)."""
    req = urllib.request.Request(
        f"{url}/api/v1/projects", data=json.dumps({"name": name}).encode(), method="POST",
        headers={**AUTH, "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201


async def test_jobs_lists_filters_and_pages(server: Server) -> None:
    url = server.url
    await asyncio.to_thread(create_project, url, "etl")
    a, b, c = await asyncio.gather(
        submit(url, "--wait", "--label", "team=a", "busybox:latest", "--", "true"),
        submit(url, "--label", "team=b", "busybox:latest", "--", "sh", "-c", "exit 2"),
        submit(url, "--label", "team=a", "--project", "etl", "busybox:latest", "--", "true"),
    )
    await until_state(url, b, "failed")
    await until_state(url, c, "succeeded")
    results = await asyncio.gather(
        run("jobs", "--url", url),
        run("jobs", "--url", url, "--state", "failed"),
        run("jobs", "--url", url, "--label", "team=a", "--state", "succeeded,failed"),
        run("jobs", "--url", url, "--project", "etl"),
        run("jobs", "--url", url, "--json"),
        run("jobs", "--url", url, "--limit", "2"),
        run("jobs", "--url", url, "--limit", "1", "--all"),
        run("jobs", "--url", url, "--limit", "1", "--all", "--json"),
    )
    for code, _, err in results:
        assert code == 0, err
    (_, every, _), (_, failed, _), (_, team_a, _), (_, etl, _) = results[:4]
    (_, as_json, _), (_, two, hint), (_, paged, _), (_, paged_json, _) = results[4:]

    lines = every.splitlines()
    assert lines[0].split() == ["ID", "STATE", "PROJECT", "IMAGE", "CREATED", "EXIT"]
    assert all(len(line) <= 100 for line in lines)
    state_at = lines[0].index("STATE")
    assert all(line[state_at - 2 : state_at] == "  " for line in lines[1:])  # aligned
    by_id = {r[0]: r for r in rows(every)}
    assert set(by_id) == {a, b, c}
    assert by_id[b][1:4] == ["failed", "default", "busybox:latest"] and by_id[b][-1] == "2"
    assert by_id[c][1:3] == ["succeeded", "etl"] and by_id[c][-1] == "0"
    assert [r[0] for r in rows(failed)] == [b]
    assert {r[0] for r in rows(team_a)} == {a, c}
    assert [r[0] for r in rows(etl)] == [c]
    assert {j["id"] for j in json.loads(as_json)} == {a, b, c}
    assert len(rows(two)) == 2 and "--all" in hint
    assert {r[0] for r in rows(paged)} == {a, b, c}
    assert sorted(j["id"] for j in json.loads(paged_json)) == sorted([a, b, c])

    (code, out, err), (json_code, json_out, _) = await asyncio.gather(
        run("show", "--url", url, b), run("show", "--url", url, "--json", b)
    )
    assert code == json_code == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["id"].strip() == b
    assert fields["state"].strip() == "failed"
    assert fields["exit_code"].strip() == "2" and fields["failure_reason"].strip() == "exit_code"
    assert fields["command"].strip() == "sh -c 'exit 2'"
    assert fields["labels"].strip() == "team=b"
    assert {"attempt", "created_at", "started_at", "finished_at", "usage"} <= set(fields)
    assert json.loads(json_out)["id"] == b and json.loads(json_out)["exit_code"] == 2


# ---- audit --------------------------------------------------------------------------------


async def test_audit_answers_who_did_what(server: Server) -> None:
    url = server.url
    ok = await submit(url, "--wait", "busybox:latest", "--", "true")
    failing = await submit(url, "busybox:latest", "--", "sh", "-c", "exit 3")
    await until_state(url, failing, "failed")
    queued = await submit(url, "--scheduled-for", "2099-01-01T00:00:00Z", "busybox:latest")
    code, _, err = await run("cancel", "--url", url, queued)
    assert code == 0, err
    results = await asyncio.gather(
        run("audit", "--url", url),
        run("audit", "--url", url, "--type", "JobCancelRequested"),
        run("audit", "--url", url, "--job", failing, "--json"),
        run("audit", "--url", url, "--type", "JobFailed", "--reason", "exit_code"),
        run("audit", "--url", url, "--limit", "2"),
        run("audit", "--url", url, "--actor", "admin", "--type", "JobSubmitted", "--all"),
        run("audit", "--url", url, "--min-wait", "3600"),
    )
    for code, _, err in results:
        assert code == 0, err
    (_, every, _), (_, cancels, _), (_, failing_json, _), (_, failed, _) = results[:4]
    (_, two, hint), (_, by_admin, _), (_, slow, _) = results[4:]

    lines = every.splitlines()
    assert lines[0].split() == ["TIME", "JOB", "TYPE", "ACTOR", "DETAIL"]
    assert [r[1:4] for r in rows(cancels)] == [[queued, "JobCancelRequested", "admin"]]
    events = [json.loads(line) for line in failing_json.splitlines()]
    assert [e["type"] for e in events] == [
        "JobFailed", "JobStarted", "JobSubmitted"
    ]  # fmt: skip
    assert events[1]["meta"]["actor"] == "worker:cli-e2e" and events[1]["waited_seconds"] >= 0
    assert [(r[1], r[2]) for r in rows(failed)] == [(failing, "JobFailed")]
    assert "reason=exit_code" in failed and "exit_code=3" in failed
    assert len(rows(two)) == 2 and "--limit N or --all" in hint
    assert {r[1] for r in rows(by_admin)} == {ok, failing, queued}
    assert rows(slow) == []

    code, _, err = await run("audit", "--url", url, "--reason", "bored")
    assert code == 1 and "unknown reason 'bored'" in err
    code, _, err = await run("audit", "--url", url, "--since", "yesterday")
    assert code == 2 and "not an ISO 8601 time" in err


def admin_call(url: str, method: str, path: str, body: object) -> None:
    """An HTTP call as the server admin."""
    req = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), method=method,
        headers={**AUTH, "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req) as resp:
        assert resp.status in (200, 201)


async def test_audit_answers_who_raised_a_limit_and_who_issued_a_jobs_token(
    server: Server,
) -> None:
    url = server.url
    await asyncio.to_thread(create_project, url, "etl")
    await asyncio.to_thread(
        admin_call, url, "PUT", "/api/v1/projects/etl/limits", {"max_running_jobs": 20}
    )
    await asyncio.to_thread(
        admin_call, url, "POST", "/api/v1/projects/etl/service-accounts",
        {"name": "ci", "role": "operator"},
    )  # fmt: skip
    code, token, err = await run("tokens", "create", "--url", url, "etl", "ci")
    assert code == 0, err
    job = await submit(url, "--token", token.strip(), "--project", "etl", "busybox:latest")

    (c1, raised, e1), (c2, issued, e2) = await asyncio.gather(
        run("audit", "--url", url, "--stream-type", "project", "--stream", "etl",
            "--type", "ProjectLimitsChanged"),
        run("audit", "--url", url, "--tokens-of-job", job, "--type", "TokenIssued", "--json"),
    )  # fmt: skip
    assert c1 == c2 == 0, e1 + e2
    assert [r[2:4] for r in rows(raised)] == [["ProjectLimitsChanged", "admin"]]
    assert "max_running_jobs=20" in raised
    [event] = [json.loads(line) for line in issued.splitlines()]
    assert (event["type"], event["meta"]["actor"]) == ("TokenIssued", "admin")
    assert (event["data"]["project"], event["data"]["service_account"]) == ("etl", "ci")


# ---- cancel -------------------------------------------------------------------------------


async def test_cancel_a_running_then_a_finished_job(server: Server) -> None:
    url = server.url
    waiter = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobledger", "submit", "--url", url, "--token", ADMIN_TOKEN, "--wait",
        "busybox:latest", "--", "sleep", "30",
        cwd=ROOT, env=child_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert waiter.stdout is not None
        async with asyncio.timeout(PATIENCE):
            job = str(uuid.UUID((await waiter.stdout.readline()).decode().strip()))
        await until_state(url, job, "running")
        code, out, err = await run("cancel", "--url", url, "--reason", "not needed", job)
        assert (code, out) == (0, "cancelling\n"), err
        async with asyncio.timeout(PATIENCE):
            _, waiter_err = await waiter.communicate()
        assert waiter.returncode == 1  # the job was cancelled: no exit code of its own
        assert f"jobledger: job {job} was cancelled" in waiter_err.decode()
    finally:
        if waiter.returncode is None:
            waiter.kill()
            await waiter.wait()
    code, out, err = await run("cancel", "--url", url, job)
    assert (code, out) == (1, "")
    assert err == "jobledger: job is already cancelled\n"
    # A queued job shows why it waits, and a cancel ends it at once.
    queued = await submit(url, "--scheduled-for", "2099-01-01T00:00:00+00:00", "busybox:latest")
    code, out, err = await run("show", "--url", url, queued)
    assert code == 0, err
    assert "waiting_reason:" in out and "scheduled for" in out
    assert "scheduled_for:" in out and "2099-01-01T00:00:00Z" in out
    assert await run("cancel", "--url", url, queued) == (0, "cancelled\n", "")


# ---- errors -------------------------------------------------------------------------------


async def test_unknown_jobs_and_bad_tokens_are_errors(server: Server) -> None:
    url = server.url
    show, cancel, not_uuid, no_token, bad_token, good_token = await asyncio.gather(
        run("show", "--url", url, MISSING),
        run("cancel", "--url", url, MISSING),
        run("show", "--url", url, "not-a-uuid"),
        run("jobs", "--url", url, "--token", ""),
        run("jobs", "--url", url, "--token", "jl_not_a_real_token"),
        run("jobs", "--url", url, "--token", ADMIN_TOKEN),
    )
    assert show == cancel == (1, "", "jobledger: job not found\n")
    assert not_uuid[0] == 1 and "is not a UUID" in not_uuid[2]
    assert no_token[0] == 1 and no_token[2].startswith("jobledger: ")
    assert no_token[2].endswith("(pass --token or set JOBLEDGER_TOKEN)\n")
    assert bad_token[0] == 1 and bad_token[2].startswith("jobledger: ")
    assert "JOBLEDGER_TOKEN" not in bad_token[2]  # a token was given: no hint to give one
    assert good_token[0] == 0, good_token[2]


#: Run in a child Python: a client verb, then which server modules it loaded.
IMPORT_CHECK = """
import sys
from jobledger.cli import main
code = main(sys.argv[1:])
server = ("asyncpg", "aiohttp.web", "aiodocker", "jobledger.api", "jobledger.store",
          "jobledger.runtime", "jobledger.projections", "jobledger.service")
print("loaded:", [m for m in sys.modules if m.startswith(server)], file=sys.stderr)
sys.exit(code)
"""


async def test_a_client_verb_loads_no_server_module(server: Server) -> None:
    job_id = await submit(server.url, "--label", "probe=imports", "busybox:latest")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", IMPORT_CHECK, "jobs", "--label", "probe=imports", "--url",
         server.url],
        capture_output=True, text=True, timeout=PATIENCE, cwd=ROOT,
        env={**child_env(), "JOBLEDGER_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert job_id in done.stdout  # the verb did talk to the server
    assert done.stderr.splitlines()[-1] == "loaded: []"


async def test_url_and_token_before_the_verb(server: Server) -> None:
    job_id = await submit(server.url, "busybox:latest")
    code, out, err = await run("--url", server.url, "--token", ADMIN_TOKEN, "show", job_id)
    assert code == 0, err
    assert out.startswith("id:") and job_id in out


async def test_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    verbs = [["jobs"], ["show", MISSING], ["submit", "--wait", "busybox"]]
    results = await asyncio.gather(*(run(*argv, "--url", url) for argv in verbs))
    for argv, (code, out, err) in zip(verbs, results, strict=True):
        assert (code, out) == (1, ""), argv
        assert err.startswith(f"jobledger: cannot reach the server at {url}"), (argv, err)


async def test_bad_input_is_a_usage_error() -> None:
    code, out, err = await run("submit", "--env", "NOEQUALS", "busybox:latest")
    assert (code, out) == (2, "")
    assert "usage: jobledger submit" in err
    assert "error: argument --env: expected KEY=VALUE, got 'NOEQUALS'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "busybox:latest", "--label", "novalue"],
        ["submit", "busybox:latest", "--wait", "echo", "hi"],  # the command goes after --
        ["submit", "--scheduled-for", "2030-01-01T00:00:00", "busybox:latest"],  # no offset
        ["submit", "--cpu", "lots", "busybox:latest"],
        ["submit", "busybox:latest", "--json", "-f"],
        ["submit"],
        ["jobs", "--state", "finished"],
        ["cancel"],
    ],
)
def test_more_bad_input_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process (argparse exits before anything runs): the same code path, faster.
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: jobledger" in err and "error:" in err


# ---- formatting (pure) --------------------------------------------------------------------


def a_job(*commands: object, **spec_fields: object) -> JobOut:
    log = MemoryLog()
    log.apply(Submit(spec=spec(**spec_fields)))
    for command in commands:
        log.apply(command)  # type: ignore[arg-type]
    assert log.state is not None
    return job_out(view_of(log.state))


def test_cut_marks_what_it_cuts() -> None:
    assert cut("busybox", 10) == "busybox"
    assert cut("busybox:latest", 8) == "busybox…"
    assert cut("registry.example.com/tool:1.2", 10, front=True) == "…/tool:1.2"


def test_table_aligns_and_fits_by_cutting_the_shrinkable_columns() -> None:
    headers = ["A", "LONG", "B"]
    text = table(headers, [["x", "y" * 30, "zz"], ["xyz", "w", "z"]], right={"B"})
    assert text.splitlines() == [
        "A    LONG" + " " * 26 + "   B",
        "x    " + "y" * 30 + "  zz",
        "xyz  w" + " " * 29 + "   z",
    ]
    narrow = table(headers, [["x", "y" * 30, "zz"]], max_width=20, shrink={"LONG": 4})
    assert narrow.splitlines() == ["A  LONG" + " " * 9 + "  B", "x  " + "y" * 12 + "…  zz"]
    # The widest shrinkable column gives first, none below its minimum.
    assert fit_widths(["P", "I"], [20, 30], 40, {"P": 7, "I": 10}) == [19, 19]
    assert fit_widths(["P", "I"], [20, 30], 10, {"P": 7, "I": 10}) == [7, 10]


def test_an_empty_job_table_is_its_header() -> None:
    assert jobs_table([]) == "ID  STATE  PROJECT  IMAGE  CREATED  EXIT\n"


def test_jobs_table_reads_in_100_columns_and_shows_images_whole() -> None:
    long_image = "registry.example.com/some/team/an-image-with-a-long-name:2030.01.01-rc1"
    jobs = [
        a_job(Start(worker_id="w"), Finish(exit_code=3), image=long_image, project="etl"),
        a_job(project="a-project-with-a-rather-long-name"),
    ]
    text = jobs_table(jobs)
    lines = text.splitlines()
    failed, queued = lines[1].split(), lines[2].split()
    assert failed[:3] == [str(jobs[0].id), "failed", "etl"]
    assert failed[3] == long_image  # never cut: cut, it would name another image
    assert failed[4:] == ["2030-01-01T00:00:01Z", "3"]
    assert queued[1] == "queued" and queued[2].startswith("a-proj") and queued[2].endswith("…")
    assert queued[-1] == "2030-01-01T00:00:01Z"  # no exit code yet
    # Past the image's own excess, the table fits in 100 columns.
    excess = max(0, len(long_image) - len("busybox:latest"))
    assert all(len(line) <= 100 + excess for line in lines), lines
    short = jobs_table([a_job(image="busybox:latest", project="a-project-with-a-rather-long-name")])
    assert all(len(line) <= 100 for line in short.splitlines())


def test_job_details_shows_set_fields_by_their_api_names() -> None:
    usage = Usage(wall_seconds=1.5, cpu_seconds=0.25, peak_memory_bytes=3 * 1024 * 1024)
    job = a_job(
        Start(worker_id="w1"),
        Fail(
            reason=FailureReason.TIMEOUT, exit_code=143, message="timed out after 5s", usage=usage
        ),
        command=["sh", "-c", "sleep 60"],
        env={"A": "1", "B": "two words"},
        labels={"team": "data"},
        timeout_seconds=5,
    )
    lines = job_details(job).splitlines()
    column = len("stop_grace_seconds: ")  # the longest key shown, and its colon and space
    assert all(line[column - 1] == " " and line[column] != " " for line in lines)
    fields = {line[:column].strip().rstrip(":"): line[column:] for line in lines}
    assert list(fields)[:2] == ["id", "state"]
    assert fields["id"] == str(job.id) and fields["state"] == "failed"
    assert fields["failure_reason"] == "timeout" and fields["exit_code"] == "143"
    assert fields["message"] == "timed out after 5s"
    assert fields["command"] == "sh -c 'sleep 60'"
    assert fields["env"] == "A=1" and fields[""] == "B=two words"  # continues under itself
    assert fields["labels"] == "team=data" and fields["timeout_seconds"] == "5"
    assert fields["usage"] == "wall 1.50 s, cpu 0.25 s, peak memory 3.0 MiB"
    assert (
        fields["finished_at"].startswith("2030-01-01T00:00:0") and fields["finished_at"][-1] == "Z"
    )
    assert not {"workdir", "waiting_reason", "retry", "scheduled_for"} & set(fields)


def test_job_details_show_the_output_and_its_hash_as_compact_json() -> None:
    job = a_job(
        Start(worker_id="w1"),
        Finish(exit_code=0, output={"rows": [1, 2]}, output_sha256="ab" * 32),
    )
    fields = dict(line.split(": ", 1) for line in job_details(job).splitlines() if ": " in line)
    assert fields["output"].strip() == '{"rows":[1,2]}'
    assert fields["output_sha256"].strip() == "ab" * 32
    assert "inputs" not in fields  # none given
    assert not any(line.startswith("output") for line in job_details(a_job()).splitlines())


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        ([Start(worker_id="w"), Finish(exit_code=0)], (0, None)),
        ([Start(worker_id="w"), Finish(exit_code=3)], (3, "failed with exit code 3")),
        ([Start(worker_id="w"), Finish(exit_code=137, oom_killed=True)], (1, "failed: oom")),
        (
            [Start(worker_id="w"), Fail(reason=FailureReason.START_ERROR, message="no such file")],
            (1, "failed: start_error: no such file"),
        ),
        ([RequestCancel()], (1, "was cancelled")),
    ],
)
def test_outcome_is_the_commands_own_exit_code_or_1(
    commands: list[object], expected: tuple[int, str | None]
) -> None:
    job = a_job(*commands)
    code, message = outcome(job)
    assert code == expected[0]
    if expected[1] is None:
        assert message is None
    else:
        assert message is not None and expected[1] in message and str(job.id) in message


def test_format_time_is_utc() -> None:
    from datetime import timedelta, timezone

    from jobledger.cli.formatting import format_time

    t = datetime(2030, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(t) == "2030-01-01T00:00:00Z"
    assert format_time(t.astimezone(UTC)) == "2030-01-01T00:00:00Z"


def test_tokens_create_list_revoke(dsn: str) -> None:
    server = Server("--database-url", dsn, "--no-scheduler")
    try:
        for path, body in [
            ("/api/v1/projects", {"name": "cli"}),
            ("/api/v1/projects/cli/service-accounts", {"name": "bot", "role": "viewer"}),
        ]:
            req = urllib.request.Request(
                server.url + path, data=json.dumps(body).encode(), method="POST",
                headers={"Content-Type": "application/json", **AUTH},
            )  # fmt: skip
            urllib.request.urlopen(req, timeout=10).close()
        url = ["--url", server.url]  # jobledger() passes the admin token
        made = jobledger(
            "tokens", "create", "cli", "bot", "--description", "ci", "--expires-in", "3600", *url
        )
        assert made.returncode == 0, made.stderr
        secret = made.stdout.strip()
        assert secret.startswith("jl_") and "shown this once" in made.stderr
        # The new token works, as the viewer it is.
        mine = jobledger("jobs", "--url", server.url, "--token", secret)
        assert mine.returncode == 0, mine.stderr
        listed = jobledger("tokens", "list", "cli", "bot", *url)
        assert listed.returncode == 0 and "ci" in listed.stdout and secret not in listed.stdout
        token_id = made.stderr.split()[1]
        revoked = jobledger("tokens", "revoke", "cli", token_id, *url)
        assert revoked.returncode == 0 and revoked.stdout.startswith(f"revoked {token_id}")
        refused = jobledger("jobs", "--url", server.url, "--token", secret)
        assert refused.returncode == 1 and "invalid, expired or revoked" in refused.stderr
        unknown = jobledger("tokens", "list", "cli", "nobody", *url)
        assert unknown.returncode == 1 and "no service account" in unknown.stderr
    finally:
        server.stop()


def to_a_closed_pipe(*args: str) -> tuple[int, bytes]:
    """Run the CLI with a stdout whose reader has gone before anything is written."""
    env = {**child_env(), "JOBLEDGER_TOKEN": ADMIN_TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobledger", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=PATIENCE)
    return proc.returncode, err


async def test_a_closed_stdout_ends_the_cli_quietly(server: Server) -> None:
    """`jobledger jobs --all | head -1`, `jobledger audit --json | head -1`: the reader has
    gone before the answer is printed; the verb ends with 0 and says nothing."""
    for _ in range(3):
        await submit(server.url, "busybox:latest", "--", "true")
    for verb in (["jobs", "--all"], ["audit", "--json"]):
        code, err = await asyncio.to_thread(to_a_closed_pipe, *verb, "--url", server.url)
        assert code == 0, err
        assert b"Broken pipe" not in err and b"Errno 32" not in err, err


def test_job_details_name_secrets_and_the_definition_never_a_value() -> None:
    job = a_job(
        env={
            "PLAIN": "1",
            "DB": SecretRef(secret="db-password"),
            "PINNED": SecretRef(secret="api-key", version=2),
            "LATER": SecretRef(secret="other"),
        }
    )
    request = DefinitionSubmit(definition="etl", params={"day": "2030-01-02"})
    job = msgspec.structs.replace(
        job,
        # What the current attempt's start resolved: DB to version 3 (LATER not started yet).
        secrets={"DB": SecretRef(secret="db-password", version=3)},
        definition="etl",
        definition_version=4,
        source=FromDefinition(
            definition="etl", definition_version=4, environment="prod", environment_version=1,
            params={"day": "2030-01-02", "rows": 50, "dry_run": False}, request=request,
        ),
    )  # fmt: skip
    lines = job_details(job).splitlines()
    column = lines[0].index(str(job.id))
    fields = [(line[:column].strip().rstrip(":"), line[column:]) for line in lines]
    env = [v for k, v in fields[[k for k, _ in fields].index("env") :][:4]]
    assert env == [
        "PLAIN=1", "DB=<secret db-password v3>", "PINNED=<secret api-key v2>",
        "LATER=<secret other latest>",
    ]  # fmt: skip
    shown = dict(fields)
    assert shown["definition"] == "etl v4" and shown["environment"] == "prod v1"
    assert shown["params"] == "day=2030-01-02, rows=50, dry_run=false"  # as placeholders write them


@pytest.mark.parametrize(
    ("argv", "what", "content"),
    [
        (["definitions", "put", "etl", "-f", "{file}"], "the definition", None),
        (["environments", "put", "prod", "-f", "{file}"], "the environment", b"{not json"),
        (["workflows", "submit", "{file}"], "a workflow", b"\xff\xfe"),
        (["schedules", "create", "nightly", "--cron", "0 3 * * *", "--workflow", "{file}"],
         "a workflow", b"{not json"),
    ],
)  # fmt: skip
async def test_a_json_file_argument_that_cannot_be_read_is_a_usage_error(
    argv: list[str], what: str, content: bytes | None, tmp_path: Path
) -> None:
    # Read before any request: the URL is never asked (nothing listens there). A missing
    # file, broken JSON, bytes that are not UTF-8; every verb reads through one function.
    path = tmp_path / "in.json"
    if content is not None:
        path.write_bytes(content)
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await run(*(a.format(file=path) for a in argv), "--url", url, "--token", "t")
    assert code == 2, (out, err)
    assert f"cannot read {what} from {path}" in err
