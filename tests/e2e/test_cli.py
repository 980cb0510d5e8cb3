"""The `jobledger` command as a new user meets it: its help, its options and their
environment variables, and what it prints besides its answer."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from jobledger import logconfig
from jobledger.cli import build_parser, main
from jobledger.cli.clientverbs import spec_of
from jobledger.cli.replay import PROJECTIONS, ProgressLine
from jobledger.cli.server import EXECUTORS
from tests.e2e.conftest import Server, jobledger


def test_help_describes_jobledger_to_a_user(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "jobledger runs jobs" in out and "jobledger serve" in out
    assert "configure_" not in out  # no developer note


def test_submit_without_arguments_asks_for_the_image_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["submit"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.splitlines()[-1] == "jobledger submit: error: IMAGE is required (or --definition NAME)"
    )
    assert "CMD" not in err.splitlines()[-1]  # the command is optional


def test_submit_flags_are_named_after_the_fields_they_set() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["submit", "--timeout-seconds", "5", "--max-retries", "2", "--backoff-seconds", "1.5",
         "--stop-grace-seconds", "3", "--concurrency-key", "k", "--concurrency-limit", "2",
         "img", "--", "echo", "hi"]
    )  # fmt: skip
    assert spec_of(args) == {
        "image": "img",
        "command": ["echo", "hi"],
        "timeout_seconds": 5,
        "stop_grace_seconds": 3,
        "retry": {"max_retries": 2, "backoff_seconds": 1.5},
        "concurrency_key": "k",
        "concurrency_limit": 2,
    }
    # The short names of before still work.
    old = parser.parse_args(["submit", "--timeout", "7", "--retries", "1", "img"])
    assert spec_of(old) == {"image": "img", "timeout_seconds": 7, "retry": {"max_retries": 1}}


def test_url_and_token_go_before_or_after_the_verb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBLEDGER_URL", "http://from-env:1")
    monkeypatch.delenv("JOBLEDGER_TOKEN", raising=False)
    parser = build_parser()
    before = parser.parse_args(["--url", "http://a:1", "--token", "t1", "jobs"])
    after = parser.parse_args(["jobs", "--url", "http://b:2", "--token", "t2"])
    neither = parser.parse_args(["show", "x"])
    assert (before.url, before.token) == ("http://a:1", "t1")
    assert (after.url, after.token) == ("http://b:2", "t2")
    assert (neither.url, neither.token) == ("http://from-env:1", None)
    nested = parser.parse_args(["--url", "http://a:1", "tokens", "list", "p", "bot"])
    assert nested.url == "http://a:1"


def test_an_option_takes_its_default_from_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBLEDGER_CAPACITY", "7")
    monkeypatch.setenv("JOBLEDGER_POLL_INTERVAL", "0.5")
    args = build_parser().parse_args(["worker"])
    assert (args.capacity, args.poll_interval, args.lease_seconds) == (7, 0.5, 15.0)
    assert build_parser().parse_args(["worker", "--capacity", "2"]).capacity == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(env JOBLEDGER_CAPACITY; default: 7)" in help_text
    assert "(env JOBLEDGER_LEASE_SECONDS; default: 15.0)" in help_text
    monkeypatch.setenv("JOBLEDGER_CAPACITY", "many")
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["worker"])
    assert exited.value.code == 2


def test_the_parser_names_what_the_server_has() -> None:
    # Named in the CLI so the parser does not import the server: kept equal here.
    from jobledger.replay.rebuild import PROJECTION
    from jobledger.runtime.executors import EXECUTORS as RUNTIME_EXECUTORS

    assert EXECUTORS == RUNTIME_EXECUTORS and PROJECTIONS == (PROJECTION,)


def test_progress_rate_counts_from_the_start_of_the_work() -> None:
    now = [100.0]  # the process started long before: the database came up meanwhile
    out = io.StringIO()
    bar = ProgressLine("verify", stream=out, every=0, clock=lambda: now[0])
    now[0] = 110.0
    bar(0, 1000)  # verify's first report: nothing done yet, the work begins
    now[0] = 112.0
    bar(1000, 1000)
    assert out.getvalue().endswith("1,000/1,000 events, 500 events/s\n")
    resumed = ProgressLine("rebuild", stream=out, every=0, clock=lambda: now[0])
    resumed.start(done=600)  # a resumed rebuild: 600 done before
    now[0] = 116.0
    resumed(1000, 1000)
    assert out.getvalue().endswith("1,000/1,000 events, 100 events/s\n")


def test_replay_prints_its_answer_without_server_logs(data_dir: Path) -> None:
    server = Server("--data-dir", str(data_dir), "--no-scheduler")
    try:
        verified = jobledger("replay", "--data-dir", str(data_dir), "verify")
        exported = jobledger("replay", "--data-dir", str(data_dir), "export")
    finally:
        server.stop()
    assert verified.returncode == 0, verified.stderr
    assert "verified 0 events" in verified.stdout
    assert exported.returncode == 0 and exported.stderr == "exported 0 events\n"
    for err in (verified.stderr, exported.stderr):
        assert "embedded postgresql" not in err
        assert not [line for line in err.splitlines() if line.startswith("{")]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the test process's logging after a test configures it as the CLI does."""
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_lines_go_to_the_stderr_of_the_moment(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    # The CLI configures logging once; whoever swaps sys.stderr later (pytest's capture,
    # an embedding program) gets the lines, and a stream closed since is never written to
    # (a logger bound to one made every later log call raise in this test process).
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logconfig.configure("json", "info")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger("jobledger.test").info("from structlog", n=1)
    logging.getLogger("aiohttp.test").warning("from the standard library")
    lines = [json.loads(line) for line in second.getvalue().splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [
        ("from structlog", "info"),
        ("from the standard library", "warning"),
    ]
