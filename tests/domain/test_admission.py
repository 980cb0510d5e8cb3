"""The admission policy: what it says of one job, and what `pick` takes from a queue."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from jobledger.domain.admission import Candidate, Facts, Reason, Verdict, admit, pick
from tests.factories import T0

PROJECTS = ["etl", "web", "ml"]
KEYS = [None, "nightly", "report"]
TAGS = ["gpu", "big", "arm"]

tag_sets = st.frozensets(st.sampled_from(TAGS), max_size=3)

candidates = st.builds(
    Candidate,
    id=st.uuids(),
    project=st.sampled_from(PROJECTS),
    tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
    concurrency_key=st.sampled_from(KEYS),
    concurrency_limit=st.integers(1, 3),
    scheduled_for=st.none() | st.integers(-3, 3).map(lambda s: T0 + timedelta(seconds=s)),
    requeue_reason=st.none() | st.just("retry 1 of 3"),
)

facts = st.builds(
    Facts,
    now=st.just(T0),
    project_running=st.dictionaries(st.sampled_from(PROJECTS), st.integers(0, 4)),
    key_running=st.dictionaries(st.sampled_from(KEYS[1:]), st.integers(0, 3)),
    project_limits=st.dictionaries(st.sampled_from(PROJECTS), st.integers(0, 3)),
    default_project_limit=st.integers(0, 3),
    worker_tags=st.lists(tag_sets, max_size=3),
    unavailable_worker_tags=st.lists(tag_sets, max_size=2),
)

queues = st.lists(candidates, max_size=25, unique_by=lambda c: c.id)


def job(**kw: object) -> Candidate:
    return Candidate(id=uuid.uuid4(), **kw)  # type: ignore[arg-type]


def world(**kw: object) -> Facts:
    fields: dict[str, object] = {
        "now": T0,
        "project_running": {},
        "key_running": {},
        "project_limits": {},
        "default_project_limit": 10,
        "worker_tags": [frozenset()],
        **kw,
    }
    return Facts(**fields)  # type: ignore[arg-type]


def started(f: Facts, jobs: list[Candidate]) -> Facts:
    """The facts once `jobs` run too."""
    projects = Counter(f.project_running) + Counter(j.project for j in jobs)
    keys = Counter(f.key_running) + Counter(j.concurrency_key for j in jobs if j.concurrency_key)
    return Facts(
        now=f.now,
        project_running=dict(projects),
        key_running=dict(keys),
        project_limits=f.project_limits,
        default_project_limit=f.default_project_limit,
        worker_tags=f.worker_tags,
        unavailable_worker_tags=f.unavailable_worker_tags,
    )


def truthful(verdict: Verdict, c: Candidate, f: Facts) -> bool:
    """The reason given holds in the facts (checked here without the policy)."""
    match verdict.reason:
        case None:
            return True
        case Reason.SCHEDULED:
            return c.scheduled_for is not None and c.scheduled_for > f.now
        case Reason.NO_WORKER:
            return not any(set(c.tags) <= tags for tags in f.worker_tags) and not any(
                set(c.tags) <= tags for tags in f.unavailable_worker_tags
            )
        case Reason.EXECUTOR_UNAVAILABLE:
            return not any(set(c.tags) <= tags for tags in f.worker_tags) and any(
                set(c.tags) <= tags for tags in f.unavailable_worker_tags
            )
        case Reason.PROJECT_LIMIT:
            return f.project_running.get(c.project, 0) >= f.project_limit(c.project)
        case Reason.CONCURRENCY_LIMIT:
            key = c.concurrency_key
            return key is not None and f.key_running.get(key, 0) >= c.concurrency_limit


# What a user reads: the texts the README and the API tests show.


def test_each_reason_reads_as_the_readme_shows_it() -> None:
    later = T0 + timedelta(hours=1)
    f = world(
        project_running={"etl": 2},
        project_limits={"etl": 2},
        key_running={"nightly": 1},
        worker_tags=[frozenset({"big"})],
    )
    assert admit(job(project="web", scheduled_for=later), f) == Verdict(
        Reason.SCHEDULED, f"scheduled for {later.isoformat()}"
    )
    assert admit(job(project="web", tags=["gpu"]), f) == Verdict(
        Reason.NO_WORKER, "no live worker with tags gpu"
    )
    assert admit(job(project="etl"), f) == Verdict(
        Reason.PROJECT_LIMIT, "project etl has 2 running jobs, its limit is 2"
    )
    assert admit(job(project="web", concurrency_key="nightly"), f) == Verdict(
        Reason.CONCURRENCY_LIMIT, "concurrency key 'nightly' has 1 running jobs, its limit is 1"
    )
    ok = admit(job(project="web", tags=["big"], requeue_reason="retry 1 of 3"), f)
    assert ok.admitted and ok.message == "retry 1 of 3; waiting for a free worker slot"
    assert admit(job(project="web"), world(worker_tags=[])).message == "no live worker"
    down = world(worker_tags=[], unavailable_worker_tags=[frozenset({"gpu"})])
    assert admit(job(project="web", tags=["gpu"]), down) == Verdict(
        Reason.EXECUTOR_UNAVAILABLE,
        "executor unavailable: no live worker with tags gpu has an executor that answers "
        "(e.g. its Docker engine is down)",
    )
    assert admit(job(project="web", tags=["big"]), down).reason is Reason.NO_WORKER


def test_a_worker_whose_executor_answers_takes_precedence_over_one_that_does_not() -> None:
    f = world(worker_tags=[frozenset()], unavailable_worker_tags=[frozenset()])
    assert admit(job(project="web"), f).admitted


def test_a_project_without_a_limit_of_its_own_has_the_default() -> None:
    f = world(project_running={"a": 3, "b": 3}, project_limits={"b": 5}, default_project_limit=3)
    assert admit(job(project="a"), f).reason is Reason.PROJECT_LIMIT
    assert admit(job(project="b"), f).admitted


def test_the_reasons_are_checked_in_their_order() -> None:
    blocked = {"project_running": {"p": 1}, "project_limits": {"p": 1}, "key_running": {"k": 1}}
    late = job(project="p", concurrency_key="k", scheduled_for=T0 + timedelta(seconds=1))
    assert admit(late, world(**blocked, worker_tags=[])).reason is Reason.SCHEDULED
    due = msgspec.structs.replace(late, scheduled_for=T0)  # due at `now` exactly
    assert admit(due, world(**blocked, worker_tags=[])).reason is Reason.NO_WORKER
    assert admit(due, world(**blocked)).reason is Reason.PROJECT_LIMIT
    freed = {**blocked, "project_limits": {"p": 2}}
    assert admit(due, world(**freed)).reason is Reason.CONCURRENCY_LIMIT
    assert admit(due, world(**{**freed, "key_running": {}})).admitted


# Properties of pick over random queues, limits and running sets.


@given(queue=queues, f=facts, n=st.integers(0, 30))
def test_no_pick_ever_exceeds_a_project_or_key_limit(
    queue: list[Candidate], f: Facts, n: int
) -> None:
    taken = pick(queue, f, n)
    assert len(taken) <= n
    for project, count in Counter(c.project for c in taken).items():
        assert f.project_running.get(project, 0) + count <= f.project_limit(project)
    same_key: Counter[str] = Counter()
    for c in taken:
        if c.concurrency_key is not None:
            # Jobs sharing a key may state different limits: each is held to its own.
            same_key[c.concurrency_key] += 1
            assert f.key_running.get(c.concurrency_key, 0) + same_key[c.concurrency_key] <= (
                c.concurrency_limit
            )
        assert c.scheduled_for is None or c.scheduled_for <= f.now
        assert any(set(c.tags) <= tags for tags in f.worker_tags)


@given(queue=queues, f=facts, n=st.integers(0, 30))
def test_picks_keep_the_queue_order_and_skip_a_job_only_for_a_reason(
    queue: list[Candidate], f: Facts, n: int
) -> None:
    taken = pick(queue, f, n)
    taken_ids = {c.id for c in taken}
    assert [c for c in queue if c.id in taken_ids] == taken  # a subsequence, in order
    before: list[Candidate] = []
    for c in queue:
        if len(before) == n:
            break  # all taken: the rest may wait for a slot only
        now_facts = started(f, before)
        verdict = admit(c, now_facts)
        assert truthful(verdict, c, now_facts)
        if c.id in taken_ids:
            assert verdict.admitted
            before.append(c)
        else:
            assert not verdict.admitted  # skipped: the policy says why
    assert before == taken


@given(queue=queues, f=facts, n=st.integers(0, 30))
def test_every_job_left_waiting_gets_the_reason_the_policy_gives(
    queue: list[Candidate], f: Facts, n: int
) -> None:
    taken = pick(queue, f, n)
    after = started(f, taken)
    left = [c for c in queue if c not in taken]
    for c in left:
        verdict = admit(c, after)
        assert truthful(verdict, c, after)
        if len(taken) < n:
            # Slots were left for the taking: a job left behind may not start, and says why.
            assert not verdict.admitted
    # Nothing the policy admits once the picks run is left over while slots remain.
    if len(taken) < n:
        assert pick(left, after, n) == []


@given(queue=queues, f=facts, n=st.integers(0, 30))
def test_pick_leaves_the_callers_facts_as_they_were(
    queue: list[Candidate], f: Facts, n: int
) -> None:
    before = (dict(f.project_running), dict(f.key_running))
    pick(queue, f, n)
    assert (f.project_running, f.key_running) == before
