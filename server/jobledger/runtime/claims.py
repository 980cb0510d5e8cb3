"""Claiming queued jobs: best first, as the admission policy allows, within quotas that every
scheduler agrees on."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg
import msgspec

from ..domain import admission
from ..domain.errors import DomainError
from ..domain.events import EventMeta, Recorded
from ..domain.jobs import ACTIVE_STATES, Command, Job, Start, decide
from ..domain.specs import DEFAULT_MAX_RUNNING_JOBS
from ..projections.jobs import get_many, job_of, view_from_row
from ..service import JobService
from ..store import secretvalues
from ..store.db import Conn
from ..store.queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("scheduler.sql"))


class Claimed(msgspec.Struct, frozen=True):
    """A job this worker started, and the output limit its project set (None: default)."""

    job: Job
    log_limit_bytes: int | None


class Cycle(msgspec.Struct, frozen=True):
    """What one claim transaction did: the jobs it started, and the outcomes it recorded
    (a job's new state, or None if its outcome was refused: ask again on its own)."""

    claimed: list[Claimed]
    recorded: dict[uuid.UUID, Job | None]
    #: Fewer jobs were started than may be startable now (a quota was held by another
    #: claim, or another claim took slots the candidates' counts showed free): claim again.
    contended: bool = False
    #: The project of the best job this claim found startable (else the lead it was given):
    #: the next claim's `lead`.
    lead: str | None = None


def _candidate(row: asyncpg.Record) -> admission.Candidate:
    return admission.Candidate(
        id=row["id"],
        project=row["project"],
        tags=row["tags"],
        concurrency_key=row["concurrency_key"],
        concurrency_limit=row["concurrency_limit"],
        scheduled_for=row["scheduled_for"],
        requeue_reason=row["requeue_reason"],
        uses_secrets=row["uses_secrets"],
    )


#: Running jobs per project and per concurrency key.
Counts = tuple[dict[str, int], dict[str, int]]


def pick(
    rows: Sequence[asyncpg.Record],
    tags: Sequence[str],
    n: int,
    has_key: bool = False,
    counts: Counts | None = None,
) -> list[asyncpg.Record]:
    """Take up to `n` of the prefiltered candidates in order, as the admission policy allows
    for a worker with `tags` (holding the secrets key or not), from the limits and time the
    rows carry, and the running counts they carry or else `counts`."""
    if not rows or n <= 0:
        return []
    if counts is None:
        counts = (
            {r["project"]: r["project_running"] for r in rows},
            {
                r["concurrency_key"]: r["key_running"]
                for r in rows
                if r["concurrency_key"] is not None
            },
        )
    facts = admission.Facts(
        now=rows[0]["now"],
        project_running=counts[0],
        key_running=counts[1],
        project_limits={r["project"]: r["project_limit"] for r in rows},
        default_project_limit=DEFAULT_MAX_RUNNING_JOBS,
        worker_tags=[frozenset(tags)],
        keyed_worker_tags=[frozenset(tags)] if has_key else [],
    )
    by_id = {r["id"]: r for r in rows}
    return [by_id[c.id] for c in admission.pick([_candidate(r) for r in rows], facts, n)]


#: The two-key advisory lock space of the quota locks (`claim_quotas`), ours alone:
#: 0x6A6C716C, "jlql".
QUOTA_LOCKS = 1785491820


def _begin(lead: str | None) -> str:
    """BEGIN; with a `lead` project, also wait for its quota lock in the same round trip
    (the simple protocol takes two statements, not parameters: the name is a literal)."""
    if lead is None:
        return "BEGIN"
    name = f"project:{lead}".replace("'", "''")
    return f"BEGIN; SELECT pg_advisory_xact_lock({QUOTA_LOCKS}, hashtext('{name}'))"


def _quotas(row: asyncpg.Record) -> list[str]:
    """The names of the quotas a candidate is counted against (see `claim_quotas`)."""
    names = [f"project:{row['project']}"]
    if (key := row["concurrency_key"]) is not None:
        names.append(f"key:{key}")
    return names


async def _agreed(
    conn: Conn,
    rows: Sequence[asyncpg.Record],
    tags: Sequence[str],
    n: int,
    has_key: bool,
    ending: Sequence[uuid.UUID],
    read: tuple[list[str], int, int, list[uuid.UUID], bool],
    lead: str | None,
) -> tuple[list[asyncpg.Record], bool, str | None]:
    """The candidates to start, as the quotas allow once the claims before this one under
    the same quota locks have committed; and whether this claim may have left startable jobs
    behind (a quota it wanted was held by another claim, or another claim took slots the
    candidates showed free: claim again). `rows` is a page of candidates read with `read`
    (the arguments of `claim_candidates`, the page size third). Their counts only choose the
    quotas to lock: those of the jobs first picked from them, the best job's first (the one
    waited for). A candidate of a quota not held here, or no longer queued at the version
    read, is passed over; if earlier claims took some and more may lie beyond, the
    candidates are read again under the locks. With a `lead` project, the claim holds its
    lock already (taken before the read): it waits for no other, and only tries the rest;
    if the jobs it picks count against that lock alone, they stand without another round
    trip. The third value is the project to lead with next time."""
    first = pick(rows, tags, n, has_key)
    if not first:
        return [], False, lead
    if lead is not None and all(r["project"] == lead and r["concurrency_key"] is None
                                for r in first):  # fmt: skip
        # Read under the one lock these jobs are counted against: no other claim started
        # any of its jobs since (the counts hold) nor can take these (they are still queued,
        # or the append's version check refuses them).
        return first, False, lead
    wanted = dict.fromkeys(name for r in first for name in _quotas(r))
    # Only candidates of these quotas can be taken here; enough of them are checked to
    # replace the first picks twice over.
    within = [r for r in rows if all(q in wanted for q in _quotas(r))]
    checked = within[: 2 * len(first) + 8]
    names = list(wanted)
    if lead is not None:  # held: taken again at once, the others only tried
        names = list(dict.fromkeys([f"project:{lead}", *names]))
    answer = await conn.fetch(
        QUERIES["claim_quotas"], names[0], names[1:], ending,
        [r["id"] for r in checked], [r["version"] for r in checked],
    )  # fmt: skip
    held: set[str] = set()
    queued: set[uuid.UUID] = set()
    counts: Counts = ({}, {})
    for r in answer:
        if r["job"] is not None:
            queued.add(r["job"])
            continue
        held.add(r["name"])
        kind, _, value = r["name"].partition(":")
        counts[0 if kind == "project" else 1][value] = r["running"]
    as_read = all(counts[0].get(r["project"]) == r["project_running"] for r in first) and all(
        counts[1].get(r["concurrency_key"]) == r["key_running"]
        for r in first
        if r["concurrency_key"] is not None
    )
    unheld = not held.issuperset(wanted)
    best = first[0]["project"]
    if not unheld and as_read and all(r["id"] in queued for r in first):
        return first, False, best  # the same pick
    agreed = [r for r in checked if r["id"] in queued and all(q in held for q in _quotas(r))]
    chosen = pick(agreed, tags, n, has_key, counts)
    if len(chosen) < len(first) and (len(rows) >= read[2] or len(within) > len(checked)):
        # Claims before this one took jobs it read, and more may lie beyond them: read
        # again, now that no other claim can start jobs of the quotas held here.
        again = await conn.fetch(QUERIES["claim_candidates"], *read)
        held_rows = [r for r in again if all(q in held for q in _quotas(r))]
        return pick(held_rows, tags, n, has_key, counts), unheld, best
    return chosen, (len(chosen) < len(first) and not as_read) or unheld, best


async def _starts(
    conn: Conn, worker_id: str, jobs: Mapping[uuid.UUID, Job]
) -> dict[uuid.UUID, Command]:
    """The Start of each job, with the secret version each of its references means now (in
    the claim's transaction). A reference to nothing stored (deleted since the submit) is
    left out: the worker fails the start, naming it."""
    using = {i: j for i, j in jobs.items() if secretvalues.uses_secrets(j.spec)}
    keys = [
        (j.spec.project, r.secret)
        for j in using.values()
        for r in secretvalues.refs_of(j.spec).values()
    ]
    stored = await secretvalues.stored_versions(conn, keys) if keys else {}
    return {
        i: Start(
            worker_id=worker_id,
            secrets=secretvalues.resolve(j.spec, stored)[0] if i in using else {},
        )
        for i, j in jobs.items()
    }


def _ends(job: Job, outcome: Command) -> bool:
    """Whether an outcome takes a running job out of the running states (an accepted one
    always does: it ends the job or queues a retry)."""
    try:
        return job.state in ACTIVE_STATES and bool(decide(job, outcome))
    except DomainError:
        return False


async def claim(
    service: JobService,
    worker_id: str,
    tags: Sequence[str],
    n: int,
    outcomes: Mapping[uuid.UUID, Command] | None = None,
    *,
    has_key: bool = False,
    priors: Mapping[uuid.UUID, Job] | None = None,
    lead: str | None = None,
    wait: bool = True,
) -> Cycle:
    """Record the outcomes of this worker's jobs that ended and start up to `n` queued jobs,
    in one transaction. The jobs it starts are checked against their project's and
    concurrency key's quotas, and to be still queued, under a lock per quota, after the
    claims before it under the same locks have committed (`claim_quotas`): so two claims
    never start one job nor both fill a project's last slot, and claims of other projects
    and keys do not wait for each other. Decides from `jobs` rows (the candidates', the
    ending jobs'): at most eight round trips whatever the numbers. A concurrent append to
    any of these jobs (e.g. a cancel request) raises `ConcurrencyError` and nothing is
    written. A worker that holds the secrets key (`has_key`) also takes jobs whose
    environment uses secrets: their JobStarted records the version each reference resolves
    to now. `priors`: the state of some ending jobs as the caller knows it (their rows are
    not read; if one moved on meanwhile, the append's version check raises
    `ConcurrencyError`). `lead`: a project whose quota lock a claim waits for before it
    reads its candidates (the previous claim's `Cycle.lead`): claims of the same project
    then read after each other's commits, instead of all reading at once and waiting with
    candidates the first one takes. It is the only lock such a claim waits for. Without
    `wait`, a claim only tries the lead's lock: if another claim holds it, this one records
    its outcomes without waiting and starts nothing (`contended`)."""
    outcomes = outcomes or {}
    meta = EventMeta(actor=f"worker:{worker_id}")
    appended: list[Recorded] = []
    began = time.perf_counter()
    contended = False
    waited = lead if n > 0 and wait else None
    async with service.pool.acquire() as conn:
        await conn.execute(_begin(waited))
        try:
            if n > 0 and lead is not None and not wait:
                if await conn.fetchval(QUERIES["try_quota"], QUOTA_LOCKS, f"project:{lead}"):
                    waited = lead
                else:  # another claim of the project is under way: record only
                    n, contended = 0, True
            known = {i: j for i, j in (priors or {}).items() if i in outcomes}
            if unknown := [i for i in outcomes if i not in known]:
                known |= {v.id: job_of(v) for v in await get_many(conn, unknown)}
            # The slots of the jobs that end here are free for the candidates' quotas.
            ending = [i for i, j in known.items() if _ends(j, outcomes[i])]
            chosen: dict[uuid.UUID, asyncpg.Record] = {}
            if n > 0:
                # More than n: some of a page may share a project or key with few slots.
                read = (list(tags), DEFAULT_MAX_RUNNING_JOBS, 4 * n + 8, ending, has_key)
                rows = await conn.fetch(QUERIES["claim_candidates"], *read)
                picked, contended, lead = await _agreed(
                    conn, rows, tags, n, has_key, ending, read, waited
                )
                chosen = {r["id"]: r for r in picked}
            starting = {i: job_of(view_from_row(r)) for i, r in chosen.items()}
            known |= starting
            commands: dict[uuid.UUID, Command] = {
                **outcomes,
                **(await _starts(conn, worker_id, starting)),
            }
            jobs = (
                await service.execute_batch(commands, meta, conn, known, appended=appended)
                if commands
                else []
            )
            await conn.execute("COMMIT")
        except BaseException:
            # If this fails too, the pool's reset closes the connection.
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
    by_id = {j.id: j for j in jobs}
    service.metrics.claim_cycle.observe(time.perf_counter() - began)
    service.metrics.recorded(appended, by_id)
    return Cycle(
        claimed=[
            Claimed(by_id[i], r["project_log_limit"]) for i, r in chosen.items() if i in by_id
        ],
        recorded={i: by_id.get(i) for i in outcomes},
        contended=contended,
        lead=lead,
    )
