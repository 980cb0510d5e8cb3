"""I2: the `jobs` rows are exactly the fold of the log (rebuilds: tests/replay)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import asyncpg
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobledger.domain.errors import DomainError
from jobledger.domain.events import EventMeta
from jobledger.domain.jobs import (
    Command,
    Submit,
    fold,
)
from jobledger.projections import jobs as jobs_projection
from jobledger.projections.jobs import JobView, job_of, view_from_row, view_of
from jobledger.service import JobService
from tests.factories import commands, spec, submits

META = EventMeta(actor="test")


async def projected(pool: asyncpg.Pool) -> dict[object, JobView]:
    return {r["id"]: view_from_row(r) for r in await pool.fetch("SELECT * FROM jobs")}


async def folded(service: JobService, job_id: object) -> JobView:
    job = fold(await service.store.read_stream(job_id))  # type: ignore[arg-type]
    assert job is not None
    return view_of(job)


def test_view_fields_are_the_table_columns_in_order() -> None:
    sql = jobs_projection.QUERIES["write_jobs"]
    start = sql.index("INSERT INTO jobs (") + len("INSERT INTO jobs (")
    listed = sql[start : sql.index(")", start)]
    assert [c.strip() for c in listed.split(",")] == list(jobs_projection.COLUMNS)


def test_a_transition_sets_exactly_the_changed_columns() -> None:
    sql = jobs_projection.QUERIES["write_jobs"]
    sets = sql[
        sql.index("UPDATE jobs j SET") : sql.index(
            "FROM jsonb_populate_recordset", sql.index("UPDATE")
        )
    ]
    assigned = [line.split("=")[0].strip() for line in sets.splitlines()[1:] if "=" in line]
    assert assigned == list(jobs_projection.CHANGED)
    assert set(jobs_projection.CHANGED) <= set(jobs_projection.COLUMNS)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(submit=submits, cmds=st.lists(commands, max_size=12))
async def test_projection_row_equals_the_fold_of_the_log(
    service: JobService, submit: Submit, cmds: list[Command]
) -> None:
    view, _ = await service.submit(submit.spec, META)
    for cmd in cmds:
        with contextlib.suppress(DomainError):
            await service.execute(view.id, cmd, META)
    row = await jobs_projection.get(service.pool, view.id)
    assert row == await folded(service, view.id)
    # The row holds the whole fold: a writer may decide from it (claims, outcomes).
    assert row is not None
    assert jobs_projection.job_of(row) == fold(await service.store.read_stream(view.id))


async def test_a_transition_reads_the_rows_it_changes_by_primary_key(
    service: JobService,
) -> None:
    """The update of a few jobs' rows must not scan the table: joined with the record set
    alone (guessed at 100 rows), a table of a few thousand jobs was read whole at every
    transition."""
    views = [v for v, _ in await service.submit_batch([spec()] * 20, META)]
    async with service.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO jobs SELECT (jsonb_populate_record(j, jsonb_build_object('id',"
            " gen_random_uuid()))).* FROM jobs j, generate_series(1, 150); ANALYZE jobs"
        )
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 3020
        changes = msgspec.json.encode([jobs_projection.change_of(job_of(v)) for v in views])
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + jobs_projection.QUERIES["write_jobs"],
            "[]", "test", "{}", changes.decode(), None, [v.id for v in views],
        )  # fmt: skip

    def scans(node: dict[str, Any]) -> list[tuple[str, str]]:
        found = [(node.get("Operation", node["Node Type"]), node.get("Relation Name", ""))]
        return found + [s for child in node.get("Plans", []) for s in scans(child)]

    read = scans(json.loads(plan)[0]["Plan"])
    assert ("Update", "jobs") in read  # the plan is the update's
    assert ("Seq Scan", "jobs") not in read
