"""Admission: may a queued job start now, and if not, why.

One pure policy, asked by the claim (which jobs a worker starts) and by the waiting reason
users read, so the rule the scheduler obeys and the reason shown cannot drift apart. SQL
only prefilters the candidates with indexes; the decision is made here. Time comes in with
the facts."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from datetime import datetime

import msgspec


class Reason(enum.StrEnum):
    """Why a queued job may not start now, checked in this order."""

    #: Its `scheduled_for` has not come yet.
    SCHEDULED = "scheduled"
    #: No worker that could take it (a live one, or the claiming one) has all its tags.
    NO_WORKER = "no_worker"
    #: Live workers have its tags, but the executor of each of them does not answer (e.g.
    #: its Docker engine is down): it starts once one answers again.
    EXECUTOR_UNAVAILABLE = "executor_unavailable"
    #: Its project runs as many jobs as the project's limit allows.
    PROJECT_LIMIT = "project_limit"
    #: Its concurrency key runs as many jobs as the job's `concurrency_limit` allows.
    CONCURRENCY_LIMIT = "concurrency_limit"
    #: It uses secrets, and no worker that could take it holds the secrets key.
    NO_SECRETS_KEY = "no_secrets_key"


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A queued job as admission sees it."""

    id: uuid.UUID
    project: str
    tags: Sequence[str] = ()
    concurrency_key: str | None = None
    concurrency_limit: int = 1
    scheduled_for: datetime | None = None
    #: The stored note of why it went back to the queue, e.g. "retry 1 of 3".
    requeue_reason: str | None = None
    #: Its environment refers to secrets: only a worker holding the secrets key takes it.
    uses_secrets: bool = False


class Facts(msgspec.Struct, kw_only=True):
    """What admission is decided on, read at one moment."""

    now: datetime
    #: Running (and cancelling) jobs per project and per concurrency key; absent: none.
    project_running: dict[str, int]
    key_running: dict[str, int]
    #: Limits of projects that set one; the others have `default_project_limit`.
    project_limits: dict[str, int]
    default_project_limit: int
    #: The tag sets of the workers that could take the job: the live ones, or for a claim
    #: the claiming worker's alone.
    worker_tags: Sequence[frozenset[str]]
    #: The tag sets of live workers whose executor does not answer: they take nothing.
    unavailable_worker_tags: Sequence[frozenset[str]] = ()
    #: The tag sets, among `worker_tags`, of the workers that hold the secrets key.
    keyed_worker_tags: Sequence[frozenset[str]] = ()

    def project_limit(self, project: str) -> int:
        """How many of the project's jobs may run at once."""
        return self.project_limits.get(project, self.default_project_limit)


class Verdict(msgspec.Struct, frozen=True):
    """Whether a job may start (`reason` None) and what a user reads while it is queued."""

    reason: Reason | None
    message: str

    @property
    def admitted(self) -> bool:
        """It may start now; if it is still queued, it waits only for a free worker slot."""
        return self.reason is None


def admit(job: Candidate, facts: Facts) -> Verdict:
    """Whether `job` may start given `facts`, and if not, the first reason why."""
    retry = f"{job.requeue_reason}; " if job.requeue_reason else ""
    if job.scheduled_for is not None and job.scheduled_for > facts.now:
        return Verdict(Reason.SCHEDULED, f"{retry}scheduled for {job.scheduled_for.isoformat()}")
    wanted = set(job.tags)
    if not any(wanted <= tags for tags in facts.worker_tags):
        with_tags = f" with tags {', '.join(job.tags)}" if job.tags else ""
        if any(wanted <= tags for tags in facts.unavailable_worker_tags):
            return Verdict(
                Reason.EXECUTOR_UNAVAILABLE,
                f"executor unavailable: no live worker{with_tags} has an executor "
                "that answers (e.g. its Docker engine is down)",
            )
        return Verdict(Reason.NO_WORKER, f"no live worker{with_tags}")
    if job.uses_secrets and not any(wanted <= tags for tags in facts.keyed_worker_tags):
        return Verdict(
            Reason.NO_SECRETS_KEY,
            "waiting for a worker that holds the secrets key (its environment uses secrets)",
        )
    running = facts.project_running.get(job.project, 0)
    limit = facts.project_limit(job.project)
    if running >= limit:
        return Verdict(
            Reason.PROJECT_LIMIT,
            f"project {job.project} has {running} running jobs, its limit is {limit}",
        )
    key = job.concurrency_key
    if key is not None and (same := facts.key_running.get(key, 0)) >= job.concurrency_limit:
        return Verdict(
            Reason.CONCURRENCY_LIMIT,
            f"concurrency key {key!r} has {same} running jobs, its limit is "
            f"{job.concurrency_limit}",
        )
    return Verdict(None, f"{retry}waiting for a free worker slot")


def pick(candidates: Sequence[Candidate], facts: Facts, n: int) -> list[Candidate]:
    """Take up to `n` candidates in order, each one `admit`ted given the facts and the jobs
    taken before it (they count against their project's and key's slots)."""
    # Copies: the caller's facts stay as they were read.
    counts = msgspec.structs.replace(
        facts, project_running=dict(facts.project_running), key_running=dict(facts.key_running)
    )
    taken: list[Candidate] = []
    for job in candidates:
        if len(taken) >= n:
            break
        if not admit(job, counts).admitted:
            continue
        taken.append(job)
        counts.project_running[job.project] = counts.project_running.get(job.project, 0) + 1
        if job.concurrency_key is not None:
            key = job.concurrency_key
            counts.key_running[key] = counts.key_running.get(key, 0) + 1
    return taken
