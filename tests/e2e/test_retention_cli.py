"""Retention as a user sees it (issue 19): `jobledger logs` of a pruned job prints the line
that says its output was pruned and when; `serve --help` names the setting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from jobledger.runtime.retention import Retention
from jobledger.service import JobService
from tests.e2e.conftest import Server, serving
from tests.e2e.conftest import run_cli as run
from tests.store.test_retention import DAYS, finished_at, job_with_output


@pytest.fixture
async def server(dsn: str) -> AsyncIterator[Server]:
    async with serving("--database-url", dsn, "--no-scheduler") as srv:
        yield srv


async def test_logs_of_a_pruned_job(server: Server, service: JobService) -> None:
    job = await job_with_output(service)
    kept = await job_with_output(service)
    as_of = await finished_at(service.pool, job) + timedelta(days=DAYS, microseconds=1)
    await Retention(service.pool, DAYS).round(as_of=as_of)
    code, out, err = await run("logs", "--url", server.url, str(job))
    assert code == 0, err
    assert out == ""  # stdout: the job's own lines, gone
    assert err.startswith("output pruned at ") and "5 lines" in err  # system lines: stderr
    code, out, err = await run("logs", "--url", server.url, str(kept))
    assert (code, out) == (0, "".join(f"line {s}\n" for s in range(1, 6))), err


async def test_serve_help_names_the_retention_settings() -> None:
    code, out, _ = await run("serve", "--help")
    assert code == 0
    assert "--retention-days" in out and "JOBLEDGER_RETENTION_DAYS" in out
