"""Command handling: load a job's state, `decide`, append with the inline projection, and
re-run `decide` on fresh state when another writer got there first (I4)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
import msgspec
import structlog

from .batching import Batcher
from .domain.errors import (
    ConcurrencyError,
    DomainError,
    IdempotencyConflict,
    InvalidInput,
    InvalidTransition,
    NotFound,
)
from .domain.events import EventMeta, Recorded
from .domain.jobs import JOB, Command, Job, Submit, decide, fold, validate
from .domain.kinds import Registry
from .domain.registry import KINDS
from .domain.specs import JobSpec
from .domain.templates import RESERVED_ENV_PREFIX, FromDefinition
from .ids import uuid7
from .metrics import Metrics
from .projections import jobs as jobs_projection
from .projections import queue
from .projections.jobs import JobView
from .projections.named import Projections
from .projections.registry import PROJECTIONS
from .store import secretvalues
from .store.db import DB_ERRORS, Conn
from .store.eventstore import Announce, AppendItem, EventStore, InlineHook

log = structlog.get_logger(__name__)


class StreamService:
    """Commands on a stream of any registered kind: fold its events, `decide`, append after
    the version read, and decide again on fresh state when another writer got there first
    (I4). Each kind's own service builds on it (jobs: `JobService`)."""

    def __init__(
        self,
        store: EventStore,
        *,
        kinds: Registry = KINDS,
        projections: Projections = PROJECTIONS,
        max_attempts: int = 50,
    ) -> None:
        self.store = store
        self.kinds = kinds
        self.projections = projections
        self.max_attempts = max_attempts

    async def load(self, kind: str, stream_id: uuid.UUID) -> tuple[Any, int]:
        """A stream's state and version (None and 0 before its first event)."""
        records = await self.store.read_stream(stream_id)
        for rec in records[:1]:
            if rec.stream_type != kind:
                raise InvalidInput(
                    f"stream {stream_id} is a {rec.stream_type} stream, not {kind}",
                    stream_id=str(stream_id),
                )
        version = records[-1].version if records else 0
        stream_kind = self.kinds.get(kind)
        return stream_kind.fold(records, stream_kind.initial(stream_id)), version

    async def execute(
        self,
        kind: str,
        stream_id: uuid.UUID,
        command: Any,
        meta: EventMeta,
        *,
        inline: Callable[[Any], InlineHook] | None = None,
        follow: Callable[[EventMeta, Any], EventMeta] | None = None,
        also: InlineHook | None = None,
    ) -> Any:
        """Apply a command to a stream and return its new state; raises the domain error
        `decide` raises. `inline(prior state)` gives the append's inline projection
        (default: the kind's registered state projection, if it has one); `also` runs
        after it in the same transaction (e.g. a write beside the log); `follow(meta,
        prior state)` gives the events' metadata, if it depends on the state."""
        stream_kind = self.kinds.get(kind)
        if inline is None and (projection := self.projections.get(kind)) is not None:
            inline = lambda state: projection.inline({stream_id: state})  # noqa: E731
        for _ in range(self.max_attempts):
            state, version = await self.load(kind, stream_id)
            events = stream_kind.decide(state, command)
            if not events:
                return state
            try:
                recorded = await self.store.append_many(
                    [AppendItem(stream_id, version, events, stream_type=kind)],
                    follow(meta, state) if follow is not None else meta,
                    inline=_both(inline(state) if inline is not None else None, also),
                )
            except ConcurrencyError:
                log.debug("append conflict, deciding again", stream_id=str(stream_id))
                continue
            return stream_kind.fold(recorded, state)
        raise ConcurrencyError(
            f"gave up after {self.max_attempts} conflicting attempts", stream_id=str(stream_id)
        )


class Submitted(msgspec.Struct, frozen=True):
    """A submitted spec's job, whether this request created it, and why it waits (None: it
    is not queued), as the admission policy saw it when the job was created."""

    view: JobView
    created: bool
    waiting_reason: str | None


class JobService:
    """The one way commands reach jobs' streams."""

    def __init__(
        self, store: EventStore, *, max_attempts: int = 50, metrics: Metrics | None = None
    ) -> None:
        self.store = store
        self.pool = store.pool
        self.max_attempts = max_attempts
        #: The process's metrics (issue 19): whatever uses this service counts there.
        self.metrics = metrics or Metrics()
        self.metrics.watch_pool(store.pool)
        self.streams = StreamService(store, max_attempts=max_attempts)
        #: Concurrent submits without an idempotency key share one transaction.
        self._submits: Batcher[tuple[Submit, EventMeta], tuple[JobView, str | None]] = Batcher(
            self._create_new, split=_rolled_back
        )

    async def load(self, job_id: uuid.UUID) -> Job | None:
        """A job's state, folded from its stream."""
        return fold(await self.store.read_stream(job_id))

    async def execute(self, job_id: uuid.UUID, command: Command, meta: EventMeta) -> Job:
        """Apply a command to a job, retrying `decide` on fresh state after a conflict.
        Raises the domain error `decide` raises (not found, invalid transition)."""
        appended: list[Recorded] = []

        def inline(state: Job | None) -> InlineHook:
            project = jobs_projection.inline({job_id: state})

            async def hook(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
                appended[:] = recorded  # the last try's events: those that commit
                await project(conn, recorded, announce)

            return hook

        job: Job | None = await self.streams.execute(
            JOB.name, job_id, command, meta, inline=inline, follow=following
        )
        assert job is not None
        if appended:
            self.metrics.recorded(appended, {job_id: job})
        return job

    async def execute_batch(
        self,
        commands: Mapping[uuid.UUID, Command],
        meta: EventMeta,
        conn: Conn,
        known: Mapping[uuid.UUID, Job] | None = None,
        metas: Mapping[uuid.UUID, EventMeta] | None = None,
        appended: list[Recorded] | None = None,
        facts: list[queue.QueueFacts] | None = None,
    ) -> list[Job]:
        """Apply one command to each of several jobs in the caller's transaction, all
        appended at once. Jobs whose command is refused (a race: e.g. cancelled meanwhile)
        are left out; a concurrent append to any of them raises `ConcurrencyError` and the
        caller's transaction rolls back. `known` states (e.g. `jobs` rows just read) are
        decided on without reading their streams; a stale one fails the version check.
        `metas` gives some jobs' events their own metadata (requests grouped together);
        without, a job's events follow from its state as `following` says. `appended` gets
        the events, for the caller to count once its transaction commits (`metrics`);
        `facts`, the queue facts the append's statement read, if some job is queued after it
        (for its waiting reason: `queue.reasons`)."""
        known = known or {}
        metas = metas or {}
        # A submit creates its stream: nothing to read for it.
        unknown = [i for i, c in commands.items() if not isinstance(c, Submit) and i not in known]
        streams = await self.store.read_streams(unknown, conn) if unknown else {}
        priors: dict[uuid.UUID, Job | None] = {}
        items: list[AppendItem] = []
        for job_id, command in commands.items():
            state = known.get(job_id) or fold(streams.get(job_id, []))
            try:
                events = decide(state, command)
            except DomainError as exc:
                log.info("command refused in batch", job_id=str(job_id), reason=exc.message)
                continue
            priors[job_id] = state
            own = metas.get(job_id) or following(meta, state)
            items.append(AppendItem(job_id, state.version if state else 0, events, own))
        rows: list[asyncpg.Record] | None = [] if facts is not None else None
        recorded = await self.store.append_many(
            items, meta, inline=jobs_projection.inline(priors, rows), conn=conn
        )
        if appended is not None:
            appended.extend(recorded)
        if facts is not None and rows:
            facts.append(queue.facts_of(rows[0]))
        by_stream: dict[uuid.UUID, list[Recorded]] = {}
        for rec in recorded:
            by_stream.setdefault(rec.stream_id, []).append(rec)
        return [j for sid, recs in by_stream.items() if (j := fold(recs, priors[sid])) is not None]

    async def execute_many(
        self, commands: Mapping[uuid.UUID, Command], meta: EventMeta
    ) -> dict[uuid.UUID, Job | DomainError]:
        """Apply one command to each of several jobs in one transaction, deciding from their
        `jobs` rows; a job's result is its new state or the domain error that refused the
        command. If another writer got to one of them first, each is retried on its own."""
        appended: list[Recorded] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                views = await jobs_projection.get_many(conn, commands)
                known = {v.id: jobs_projection.job_of(v) for v in views}
                done = await self.execute_batch(commands, meta, conn, known, appended=appended)
        except ConcurrencyError:
            return {i: await self.execute_or_error(i, c, meta) for i, c in commands.items()}
        self.metrics.recorded(appended, {j.id: j for j in done})
        results: dict[uuid.UUID, Job | DomainError] = {j.id: j for j in done}
        for job_id, command in commands.items():
            if job_id not in results:  # refused: decide again to say why
                results[job_id] = await self.execute_or_error(job_id, command, meta)
        return results

    async def execute_or_error(
        self, job_id: uuid.UUID, command: Command, meta: EventMeta
    ) -> Job | DomainError:
        """`execute`, with the domain error that refuses the command as its result."""
        try:
            return await self.execute(job_id, command, meta)
        except DomainError as exc:
            return exc

    async def submit(self, spec: JobSpec, meta: EventMeta) -> tuple[JobView, bool]:
        """Create a job; with an idempotency key already used in the project, return that
        job instead (created=False), or refuse if it was submitted with another spec."""
        done = await self.submit_with_reason(spec, meta)
        return done.view, done.created

    async def submit_with_reason(
        self,
        spec: JobSpec,
        meta: EventMeta,
        source: FromDefinition | None = None,
        *,
        parent_job: uuid.UUID | None = None,
        rerun_of: uuid.UUID | None = None,
    ) -> Submitted:
        """`submit`, with why the job waits: what a submit's response shows. `source`: the
        definition the spec was resolved from (an idempotency key then compares the
        request as submitted, not the spec). `parent_job`: the running job whose token
        submits it; `rerun_of`: the job it reruns."""
        command = Submit(spec=spec, source=source, parent_job=parent_job, rerun_of=rerun_of)
        if spec.idempotency_key is None:
            validate(command)
            await self._check_secrets([(0, spec)], lambda exc, _: exc)
            view, reason = await self._submits((command, meta))
            return Submitted(view, True, reason)
        [result] = await self._create([command], meta, lambda exc, _: exc)
        return result

    async def rerun(
        self, job_id: uuid.UUID, meta: EventMeta, parent_job: uuid.UUID | None = None
    ) -> Submitted:
        """A new job with an ended job's spec minus its idempotency key (for a job made from
        a definition: the same resolved spec and source), its JobSubmitted caused by the old
        job's last event and linked to it by `rerun_of` (issue 16). A job that has not
        ended is refused (409): cancel it first, or submit again."""
        records = await self.store.read_stream(job_id)
        old = fold(records)
        if old is None:
            raise NotFound("job not found", job_id=str(job_id))
        if not old.is_terminal:
            raise InvalidTransition(
                f"only an ended job can be rerun; this one is {old.state.value}",
                state=old.state.value,
            )
        spec = msgspec.structs.replace(old.spec, idempotency_key=None)
        command = Submit(
            spec=spec,
            source=old.source,
            # What jobledger set on the old spec (a schedule's, a definition's variables)
            # was accepted then, and is the spec's still.
            injected=frozenset(k for k in spec.env if k.startswith(RESERVED_ENV_PREFIX)),
            parent_job=parent_job,
            rerun_of=old.id,
        )
        meta = msgspec.structs.replace(meta, causation_id=str(records[-1].event_id))
        validate(command)
        await self._check_secrets([(0, spec)], lambda exc, _: exc)
        view, reason = await self._submits((command, meta))
        return Submitted(view, True, reason)

    async def _create_new(
        self,
        new: list[tuple[Submit, EventMeta]],
        job_ids: Sequence[uuid.UUID | None] = (),
    ) -> list[tuple[JobView, str | None]]:
        """Create jobs (validated, keys already looked up) in one transaction, in order, each
        event with its own request's metadata: concurrent submits, or a batch's new specs.
        Each comes with why it waits, from facts read in that transaction: a read after the
        commit could fail a request whose jobs exist, and its client would submit again.
        `job_ids` gives some of them their id (None or absent: a fresh one)."""
        given = list(job_ids) + [None] * (len(new) - len(job_ids))
        ids = [i or uuid7() for i in given]
        committed = False
        appended: list[Recorded] = []
        facts: list[queue.QueueFacts] = []
        conn = await self.pool.acquire()
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                jobs = await self.execute_batch(
                    {i: command for i, (command, _) in zip(ids, new, strict=True)},
                    new[0][1],
                    conn,
                    metas={i: meta for i, (_, meta) in zip(ids, new, strict=True)},
                    appended=appended,
                    facts=facts,  # read by the append's own statement: no round trip
                )
                views = {j.id: jobs_projection.view_of(j) for j in jobs}
            except BaseException:
                with contextlib.suppress(Exception):
                    await tx.rollback()
                raise
            try:
                await tx.commit()
            except DB_ERRORS as exc:
                # The answer to COMMIT was lost, not necessarily the commit: the response
                # must say whether the jobs exist, so ask the database (raises if not).
                await self._confirm_commit(ids, exc)
            committed = True
            self.metrics.recorded(appended, {j.id: j for j in jobs})
        finally:
            try:
                await self.pool.release(conn)
            except DB_ERRORS:
                if not committed:
                    raise
                # Nothing after the commit may fail a request whose jobs exist.
                log.warning("releasing a connection after a commit failed", exc_info=True)
        reasons = queue.reasons(facts[0], list(views.values())) if facts else {}
        return [(views[i], reasons.get(i)) for i in ids]

    async def _check_secrets(
        self,
        specs: Sequence[tuple[int, JobSpec]],
        locate: Callable[[DomainError, int], DomainError],
    ) -> None:
        """Refuse (422, naming `$.env.VAR`) a new job whose environment refers to a secret or
        a version its project does not hold: every way of submitting comes through here. A
        secret deleted after this check fails the job's start instead."""
        found = await secretvalues.check_refs(self.pool, specs)
        if found is not None:
            n, exc = found
            raise locate(exc, n)

    async def _confirm_commit(
        self, ids: Sequence[uuid.UUID], exc: BaseException, seconds: float = 10.0
    ) -> None:
        """Return if the jobs of a transaction whose COMMIT raised `exc` exist; raise `exc`
        if they do not, or if the database cannot say within `seconds`. The connection that
        sent COMMIT was cut (a terminated backend, a restart): its transaction either
        committed or never will, and another connection sees which."""
        backoff = 0.1
        try:
            async with asyncio.timeout(seconds):
                while True:
                    try:
                        found = len(await jobs_projection.get_many(self.pool, ids))
                        break
                    except DB_ERRORS:
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 1.0)
        except TimeoutError:
            log.warning("submit outcome unknown: the database did not answer", jobs=len(ids))
            raise exc from None
        if found != len(ids):
            raise exc
        log.info("submit committed though its COMMIT's answer was lost", jobs=len(ids))

    async def submit_batch(
        self, specs: Sequence[JobSpec], meta: EventMeta
    ) -> list[tuple[JobView, bool]]:
        """Create several jobs in one transaction (all or none), in order, each as `submit`
        does. Errors name the spec: `$.jobs[3].image`."""
        return [(s.view, s.created) for s in await self.submit_batch_with_reasons(specs, meta)]

    async def submit_batch_with_reasons(
        self, specs: Sequence[JobSpec], meta: EventMeta, parent_job: uuid.UUID | None = None
    ) -> list[Submitted]:
        """`submit_batch`, with why each job waits: what a batch submit's response shows;
        `parent_job`: the running job whose token submits them."""
        commands = [Submit(spec=s, parent_job=parent_job) for s in specs]
        return await self._create(commands, meta, _in_batch)

    async def submit_as(self, job_id: uuid.UUID, command: Submit, meta: EventMeta) -> Submitted:
        """`submit` of a job whose id the caller derived (a schedule's occurrence): with the
        spec's idempotency key, a retry from any process finds the same job. A concurrent
        creation of the same id raises `ConcurrencyError` (the job exists). The command's
        `injected`: the `JOBLEDGER_...` variables the caller set on the spec itself; its
        `source`: the definition the spec was resolved from, if any."""
        assert command.spec.idempotency_key is not None, "a job with a given id needs a key"
        [result] = await self._create([command], meta, lambda exc, _: exc, job_ids=[job_id])
        return result

    async def _create(
        self,
        specs: Sequence[Submit],
        meta: EventMeta,
        locate: Callable[[DomainError, int], DomainError],
        job_ids: Sequence[uuid.UUID | None] = (),
    ) -> list[Submitted]:
        """`submit` and `submit_batch`; `locate` turns an error about spec n into the
        caller's terms."""
        for n, spec in enumerate(specs):
            try:
                validate(spec)  # before any query: e.g. a NUL in the key
            except InvalidInput as exc:
                raise locate(exc, n) from None
        for _ in range(self.max_attempts):
            try:
                return await self._create_once(specs, meta, locate, job_ids)
            except asyncpg.UniqueViolationError as exc:
                # A concurrent submit took one of the keys first: look again.
                if exc.constraint_name != "jobs_idempotency":
                    raise
        raise ConcurrencyError(f"gave up after {self.max_attempts} idempotency races")

    async def _create_once(
        self,
        commands: Sequence[Submit],
        meta: EventMeta,
        locate: Callable[[DomainError, int], DomainError],
        job_ids: Sequence[uuid.UUID | None] = (),
    ) -> list[Submitted]:
        keyed = [
            (c.spec.project, c.spec.idempotency_key)
            for c in commands
            if c.spec.idempotency_key is not None
        ]
        existing = await jobs_projection.find_by_idempotency_keys(self.pool, keyed)
        # Each spec's job: one that exists, or the index of a spec to create (a key repeated
        # within the batch names the same new job).
        plan: list[JobView | int] = []
        new: list[Submit] = []
        new_ids: list[uuid.UUID | None] = []
        fresh: list[tuple[int, JobSpec]] = []  # the new specs with their place in the batch
        new_by_key: dict[tuple[str, str], int] = {}
        for n, command in enumerate(commands):
            spec = command.spec
            key = (spec.project, spec.idempotency_key) if spec.idempotency_key else None
            if key is not None:
                earlier = existing.get(key)
                if earlier is not None or key in new_by_key:
                    first = (
                        Submit(spec=earlier.spec, source=earlier.source)
                        if earlier is not None
                        else new[new_by_key[key]]
                    )
                    if not same_request(first, command):
                        raise locate(_key_conflict(earlier), n)
                    plan.append(earlier if earlier is not None else new_by_key[key])
                    continue
                new_by_key[key] = len(new)
            plan.append(len(new))
            new.append(command)
            new_ids.append(job_ids[n] if n < len(job_ids) else None)
            fresh.append((n, spec))
        # Why the earlier jobs wait is read before anything commits, so that a failed read
        # leaves nothing behind to submit twice.
        earlier = await queue.waiting_reasons(
            self.pool, [item for item in plan if isinstance(item, JobView)]
        )
        await self._check_secrets(fresh, locate)
        created = await self._create_new([(s, meta) for s in new], new_ids) if new else []
        out: list[Submitted] = []
        seen: set[int] = set()
        for item in plan:
            if isinstance(item, JobView):
                out.append(Submitted(item, False, earlier.get(item.id)))
            else:
                view, reason = created[item]
                out.append(Submitted(view, item not in seen, reason))
                seen.add(item)
        return out


def same_request(first: Submit, again: Submit) -> bool:
    """Whether a submit repeats an earlier one under the same idempotency key: the same spec,
    or for a submit by reference the same request as submitted (definition, the version
    asked for, parameters, per-run fields), whatever the definition became since."""
    if first.source is not None and again.source is not None:
        return first.source.request == again.source.request
    return first.source is None and again.source is None and first.spec == again.spec


def following(meta: EventMeta, job: Job | None) -> EventMeta:
    """The metadata of a job's events (I6). A request's own (it has a correlation id: see
    `api.auth.event_meta`) stands as it is. Anything else, a worker's start or outcome, the
    lease reaper's failure, follows from the job's earlier events: it carries the job's
    correlation id and names as its cause the event that queued or started the attempt."""
    if meta.correlation_id is not None or job is None:
        return meta
    cause = str(job.cause_event_id) if job.cause_event_id is not None else meta.causation_id
    return msgspec.structs.replace(meta, correlation_id=job.correlation_id, causation_id=cause)


def _both(first: InlineHook | None, then: InlineHook | None) -> InlineHook | None:
    """One inline hook running `first`, then `then`, in the append's transaction."""
    if first is None or then is None:
        return first or then

    async def hook(conn: Conn, recorded: list[Recorded], announce: Announce) -> None:
        await first(conn, recorded, announce)
        await then(conn, recorded, announce)

    return hook


def _rolled_back(exc: BaseException) -> bool:
    """Whether a failed group commit surely left nothing behind, so its submits may be
    tried again apart (one bad submit must not fail the others): the database refused a
    statement. A lost connection may have lost the answer to a commit that happened."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.OperatorInterventionError
    )


def _key_conflict(view: JobView | None) -> IdempotencyConflict:
    extra = {"job_id": str(view.id)} if view is not None else {}
    return IdempotencyConflict(
        "idempotency_key was already used with a different spec",
        field="$.idempotency_key",
        **extra,
    )


def _in_batch(exc: DomainError, n: int) -> DomainError:
    """The same error about the n-th spec of a batch: its field path is under `$.jobs[n]`."""
    field = exc.details.get("field", "$")
    details = {**exc.details, "field": f"$.jobs[{n}]{field[1:]}"}
    return type(exc)(exc.message, **details)
