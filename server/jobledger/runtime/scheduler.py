"""The scheduler of one worker process: claims queued jobs when woken (NOTIFY) or every
poll interval, runs each on the executor, records how it ended, renews its lease, fails the
jobs of workers whose lease expired, and on start adopts what its previous life left. It
claims only while its executor answers, and removes what the executor holds of jobs that
have ended (reconcile).

The database may go away at any time (connections cut, a restart, a failover): every step
that needs it retries until it answers again, so the scheduler, the lease loop and each job's
own task carry on by themselves once it does, and the process never stops for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import msgspec
import structlog

from ..administration import AccessService
from ..batching import Batcher
from ..domain.errors import ConcurrencyError, DomainError
from ..domain.events import EventMeta, FailureReason
from ..domain.jobs import Command, Fail, Job, JobState
from ..service import JobService, following
from ..store.db import DB_ERRORS
from ..store.eventstore import Notification
from ..store.notifications import EVENTS, Listener, WorkerIdInUse
from ..store.secretbox import SecretBox
from . import secretenv
from .claims import QUERIES, claim
from .executor import (
    EngineUnavailable,
    Executor,
    Found,
    JobIO,
    Outcome,
    RunRequest,
    start_error,
)
from .masking import Masker
from .output import SHUTDOWN_SECONDS, LogLimits, LogSink
from .usage import UsageRecorder

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: How often an attempt that met an unavailable executor asks whether it answers again.
_ENGINE_RETRY_SECONDS = 1.0

#: Changes that may let this worker start something: new work, or a slot freed.
_WAKING_STATES = frozenset(
    {JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
)


class WorkerConfig(msgspec.Struct, kw_only=True, frozen=True):
    """How one worker process runs jobs."""

    worker_id: str = msgspec.field(default_factory=socket.gethostname)
    #: Jobs this worker runs at once.
    capacity: int = 4
    #: A job asking for tags runs only on a worker that has them all.
    tags: list[str] = []
    #: Safety net: look for work this often even without a notification (I7).
    poll_interval: float = 2.0
    heartbeat_interval: float = 3.0
    #: After this long without a heartbeat, other schedulers fail this worker's jobs.
    lease_seconds: float = 15.0
    #: Seconds between CPU/memory samples of a running job.
    sample_interval: float = 1.0
    #: Output a job may store; past it lines are dropped and a marker says how many.
    log_limit_bytes: int = 100 * 1024 * 1024
    #: How often to ask whether the executor (e.g. the Docker engine) answers.
    executor_check_interval: float = 1.0
    #: How often to remove what the executor holds of jobs that have ended.
    reconcile_interval: float = 30.0
    #: The API address a job's container reaches the server at (issue 16). Set, each
    #: attempt gets its own token (`JOBLEDGER_TOKEN`) and this address
    #: (`JOBLEDGER_API_URL`) in its environment; None: neither.
    api_url: str | None = None


@dataclass
class _Active:
    attempt: int
    cancel: asyncio.Event
    task: asyncio.Task[None]


class Scheduler:
    """Runs until `stop` is set; see the module docstring."""

    def __init__(
        self,
        service: JobService,
        executor: Executor,
        config: WorkerConfig,
        dsn: str,
        secrets_box: SecretBox | None = None,
    ) -> None:
        self.service = service
        #: The secrets key this worker holds (None: it claims no job that uses secrets).
        self.secrets_box = secrets_box
        self.pool = service.pool
        self.executor = executor
        self.config = config
        self.dsn = dsn
        self.active: dict[uuid.UUID, _Active] = {}
        self.wake = asyncio.Event()
        #: Set once registered, listening and recovered: from then on jobs get claimed.
        self.ready = asyncio.Event()
        self._stopping = False
        self._sweep_due = True
        self._next_sweep = 0.0
        #: Claim transactions in flight, and begun so far: a job a claim started is not the
        #: sweep's to take up.
        self._claiming = 0
        self._claims_begun = 0
        #: Slots that claims in flight may fill (`n` of each), and the jobs whose outcomes
        #: they record (still in `active` until their tasks end, their slots free): a
        #: claim for new jobs and one for ended jobs' slots can be in flight at once.
        self._reserved = 0
        self._ending = 0
        #: The project whose quota lock the next claim waits for before it reads
        #: (`claims.claim`'s `lead`): that of the best job the last claim found.
        self._lead: str | None = None
        #: Attempts this process started (the newest few thousand): never run one twice.
        self._ran: dict[tuple[uuid.UUID, int], None] = {}
        #: Since when (monotonic) every heartbeat has reached the database; None after a
        #: failed one. The reaper counts a lease as expired only after that long (see _reap).
        self._reachable_since: float | None = None
        #: Set while the executor answers: only then does this worker claim.
        self.executor_up = asyncio.Event()
        #: Whether the workers table says what `executor_up` says.
        self._executor_status_stored = False
        #: Outcomes that end together are recorded in one transaction.
        self._outcomes = Batcher(self._record_batch)
        self.meta = EventMeta(actor=f"worker:{config.worker_id}")
        #: Issues and revokes the jobs' own tokens (issue 16).
        self.access = AccessService(self.pool, service.streams)
        self.log = log.bind(worker_id=config.worker_id)
        self.metrics = service.metrics
        self.metrics.capacity.set(config.capacity)
        self.metrics.running.set(0)

    # ---- notifications ----------------------------------------------------------------

    def _on_notification(self, note: Notification) -> None:
        if note.more:
            self._sweep_due = True
            self.wake.set()
        for change in note.changes:
            if change.state in _WAKING_STATES:
                self.wake.set()
            elif change.state == JobState.CANCELLING and (a := self.active.get(change.stream_id)):
                a.cancel.set()

    def _on_connect(self) -> None:
        # Anything may have happened while we were deaf: look again.
        self._sweep_due = True
        self.wake.set()

    # ---- main loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Register, listen, recover, then claim and run jobs until `stop` is set."""
        cfg = self.config
        listener = Listener(self.dsn, self._on_connect, identity=cfg.worker_id)
        listener.on(EVENTS.renamed(self.service.store.channel), self._on_notification)
        listen_task = asyncio.create_task(listener.run(), name="listener")
        heartbeat_task: asyncio.Task[None] | None = None
        executor_tasks: list[asyncio.Task[None]] = []
        try:
            if await self.executor.available():
                self.executor_up.set()
            self.metrics.executor_up.labels(self.executor.name).set(self.executor_up.is_set())
            if not await self._start(listener, stop):
                return
            heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
            executor_tasks = [
                asyncio.create_task(self._watch_executor(), name="watch-executor"),
                asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            ]
            self.ready.set()
            self.log.info("scheduler running", capacity=cfg.capacity, tags=cfg.tags)
            while not stop.is_set():
                timeout = await self._round()
                await _first_of(self.wake, stop, seconds=timeout)
        finally:
            self._stopping = True
            self._outcomes.close()
            for t in (listen_task, heartbeat_task, *executor_tasks):
                if t is not None:
                    t.cancel()
            # Leave containers running: the next life of this worker adopts them (I8).
            tasks = [a.task for a in self.active.values()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, listen_task, return_exceptions=True)
            with contextlib.suppress(*DB_ERRORS):
                await self.pool.execute(QUERIES["worker_stopped"], cfg.worker_id)
            self.log.info("scheduler stopped", left_running=len(tasks))

    async def _start(self, listener: Listener, stop: asyncio.Event) -> bool:
        """Register, wait for the listener, recover; retried until the database answers
        (False: `stop` came first). Raises `WorkerIdInUse`."""
        cfg = self.config
        backoff = 0.1
        while not stop.is_set():
            try:
                await self.pool.execute(
                    QUERIES["register_worker"], cfg.worker_id, list(cfg.tags), cfg.capacity,
                    cfg.lease_seconds, self.executor.name, socket.gethostname(), os.getpid(),
                    self.secrets_box.key_id if self.secrets_box is not None else None,
                )  # fmt: skip
                self._reachable_since = time.monotonic()
                # Registered as answering: if it does not, the watch says so before a claim.
                self._executor_status_stored = self.executor_up.is_set()
                if not await _unless_stopped(listener.started(), stop):
                    return False
                await self._recover()
                return True
            except WorkerIdInUse:
                raise
            except DB_ERRORS as exc:
                self.log.warning("scheduler start failed, retrying", error=str(exc))
                await _first_of(stop, seconds=backoff)
                backoff = min(backoff * 2, 5.0)
        return False

    async def _round(self) -> float:
        """Claim what fits, deliver missed cancels; return how long to sleep."""
        self.wake.clear()
        try:
            if self._sweep_due or time.monotonic() >= self._next_sweep:
                self._sweep_due = False
                self._next_sweep = time.monotonic() + self.config.poll_interval
                await self._sweep()
            # While the executor does not answer, its jobs stay queued (and say why).
            while self.executor_up.is_set() and (free := self._free()) > 0:
                try:
                    with self._claim_in_flight(free):
                        cycle = await claim(
                            self.service, self.config.worker_id, self.config.tags, free,
                            has_key=self.secrets_box is not None, lead=self._lead,
                        )  # fmt: skip
                        self._lead = cycle.lead
                        for c in cycle.claimed:
                            self._spawn(c.job, log_limit=c.log_limit_bytes)
                except ConcurrencyError:
                    continue  # raced with a cancel: claim again on fresh state
                if len(cycle.claimed) < free and not cycle.contended:
                    break
            if len(self.active) >= self.config.capacity:
                return self.config.poll_interval  # full: a job ending wakes us
            wait: timedelta | None = await self.pool.fetchval(QUERIES["next_scheduled"])
        except DB_ERRORS as exc:
            self.log.warning("scheduler round failed", error=str(exc))
            return self.config.poll_interval
        if wait is not None:
            return max(0.0, min(self.config.poll_interval, wait.total_seconds()))
        return self.config.poll_interval

    @contextlib.contextmanager
    def _claim_in_flight(self, free: int) -> Iterator[None]:
        """Count a claim as in flight (the sweep leaves its jobs alone) holding `free` slots
        until it has spawned what it started."""
        self._claiming += 1
        self._claims_begun += 1
        self._reserved += free
        try:
            yield
        finally:
            self._claiming -= 1
            self._reserved -= free

    def _free(self) -> int:
        """Slots no job and no claim in flight holds (the jobs whose outcomes are being
        recorded hold none)."""
        return self.config.capacity - len(self.active) + self._ending - self._reserved

    async def _sweep(self) -> None:
        """Look at the jobs the database says this worker holds, every poll interval and
        after every reconnection: deliver cancels whose notification was lost (I7), and take
        up jobs held here that no task runs. A claim whose connection was cut while it
        committed may have committed unseen: its jobs never ran, so run them now; a job
        whose attempt did run here but whose task ended without recording it is failed."""
        # Take up nothing if a claim ran meanwhile: it may have committed jobs it has not
        # spawned yet.
        begun = self._claims_begun
        quiet = self._claiming == 0
        rows = await self.pool.fetch(QUERIES["my_active_jobs"], self.config.worker_id)
        quiet = quiet and self._claims_begun == begun
        for r in rows:
            job_id, attempt = r["id"], r["attempt"]
            if (a := self.active.get(job_id)) is not None:
                if r["state"] == JobState.CANCELLING:
                    a.cancel.set()
                continue
            if not quiet or self._stopping:
                continue
            if (job_id, attempt) in self._ran:
                with contextlib.suppress(DomainError):  # e.g. it ended since the read
                    await self.service.execute(
                        job_id,
                        Fail(
                            attempt=attempt,
                            reason=FailureReason.WORKER_LOST,
                            message="the worker lost track of the attempt",
                        ),
                        self.meta,
                    )
                await self._revoke_tokens(job_id, self.log)
                continue
            job = await self.service.load(job_id)
            if job is None or job.attempt != attempt or job.worker_id != self.config.worker_id:
                continue
            if job.state not in (JobState.RUNNING, JobState.CANCELLING) or job_id in self.active:
                continue
            log_limit = await self.pool.fetchval(QUERIES["project_log_limit"], job.spec.project)
            self.log.warning("taking up a claimed job no task ran", job_id=str(job_id))
            self._spawn(job, log_limit=log_limit)

    # ---- one job ----------------------------------------------------------------------

    def _spawn(self, job: Job, found: Found | None = None, *, log_limit: int | None) -> None:
        if job.id in self.active:  # never two tasks for one job
            self.log.warning("job already running here", job_id=str(job.id))
            return
        self._ran[(job.id, job.attempt)] = None
        while len(self._ran) > 10_000:
            del self._ran[next(iter(self._ran))]
        cancel = asyncio.Event()
        if job.state is JobState.CANCELLING:
            cancel.set()
        task = asyncio.create_task(
            self._execute(job, cancel, found, log_limit), name=f"job-{job.id}"
        )
        self.active[job.id] = _Active(job.attempt, cancel, task)
        self.metrics.running.set(len(self.active))

    async def _execute(
        self, job: Job, cancel: asyncio.Event, found: Found | None, log_limit: int | None
    ) -> None:
        jlog = self.log.bind(job_id=str(job.id), attempt=job.attempt)
        # The secrets of the attempt, read at its start (or again when adopting it, to mask
        # the output read from here on): one that cannot be had fails the start.
        unavailable: str | None = None
        try:
            env = await _retrying(
                lambda: secretenv.environment(self.pool, self.secrets_box, job),
                "reading the job's secrets",
                jlog,
            )
        except secretenv.SecretUnavailable as exc:
            unavailable = str(exc)
            env = secretenv.Environment(
                {k: v for k, v in job.spec.env.items() if isinstance(v, str)}, []
            )
            if found is not None:
                jlog.warning("adopting a job whose secrets cannot be masked", error=unavailable)
                unavailable = None
        # Issue 16: a fresh attempt gets a token of its own, to submit children with; masked
        # in its output like a secret. An adopted attempt's container holds its token
        # already (which this worker cannot know, so cannot mask).
        token: str | None = None
        if found is None and unavailable is None and self.config.api_url:
            token = await self._issue_token(job, jlog)
            if token is not None:
                url = self.config.api_url
                own = {"JOBLEDGER_TOKEN": token, "JOBLEDGER_API_URL": url, "JOBLEDGER_URL": url}
                env = secretenv.Environment({**env.env, **own}, [*env.secret_values, token])
        req = RunRequest(
            job_id=job.id,
            attempt=job.attempt,
            worker_id=self.config.worker_id,
            spec=job.spec,
            env=env.env,
            inputs=job.inputs,
            writes_output=job.workflow_run is not None,
        )
        usage = UsageRecorder(self.pool, job.id, job.attempt, self.config.sample_interval)
        limits = LogLimits(max_total_bytes=log_limit or self.config.log_limit_bytes)
        masker = Masker(env.secret_values) if env.secret_values else None
        sink = LogSink(self.pool, job.id, job.attempt, limits, masker, metrics=self.metrics)
        recorded = sink_closed = False

        async def record(outcome: Outcome) -> None:
            nonlocal recorded, sink_closed
            # Every line is stored before the outcome is: a log reader that sees the
            # terminal state has seen all the output.
            if not sink_closed:
                sink_closed = True
                await sink.close()
            if usage.peak_memory or usage.cpu_seconds:
                outcome = msgspec.structs.replace(
                    outcome, usage=usage.summary(outcome.usage.wall_seconds)
                )
            await self._record(job, outcome.command(job.attempt), jlog)
            recorded = True

        try:
            try:
                # Only a worker running an attempt writes its lines: a first attempt just
                # claimed has none, and numbers from 0 without asking.
                fresh = found is None and job.attempt == 1
                await _retrying(lambda: sink.start(fresh=fresh), "starting the log", jlog)
                # The executor records the outcome (`record`) before it removes what is
                # left of the attempt, so a worker dying in between loses nothing.
                io = JobIO(sink, usage, record)
                if unavailable is not None:
                    jlog.warning("secret unavailable; the start fails", error=unavailable)
                    outcome = start_error(unavailable)
                else:
                    outcome = await self._run_or_adopt(req, cancel, io, found, jlog)
            except asyncio.CancelledError:
                # The worker is going away: the lines read so far are stored before the pool
                # closes; the next life of this worker reads the rest when it adopts the job.
                await sink.shutdown(SHUTDOWN_SECONDS)
                raise
            except Exception as exc:  # the executor's own fault, not the job's
                jlog.exception("executor failed")
                self.metrics.executor_errors.labels(self.executor.name, "crash").inc()
                if not sink_closed:
                    sink_closed = True
                    await sink.shutdown(SHUTDOWN_SECONDS)
                outcome = Outcome(
                    failure=FailureReason.WORKER_LOST, message=f"executor error: {exc}"
                )
            if not recorded:  # it ended without reaching `record` (e.g. it never started)
                await record(outcome)
            if token is not None or found is not None:
                await self._revoke_tokens(job.id, jlog)
            await self.executor.settled(req)
        finally:
            self.active.pop(job.id, None)
            self.metrics.running.set(len(self.active))
            self.wake.set()

    async def _issue_token(self, job: Job, jlog: structlog.BoundLogger) -> str | None:
        """The attempt's own token (see `AccessService.issue_job_token`); None, with a
        warning, if it cannot be issued: the job runs without one."""
        meta = following(self.meta, job)
        try:
            token, _ = await _retrying(
                lambda: self.access.issue_job_token(
                    job.id, job.spec.project, job.submitted_by, meta=meta
                ),
                "issuing the job's token",
                jlog,
            )
        except DomainError as exc:
            jlog.warning("the job runs without a token of its own", reason=exc.message)
            return None
        return token

    async def _revoke_tokens(self, job_id: uuid.UUID, jlog: structlog.BoundLogger) -> None:
        """Revoke a job's own tokens once its attempt ended. Best effort: a token whose
        job no longer runs fails the token check anyway (store/access.sql)."""
        try:
            await self.access.revoke_job_tokens(job_id, meta=self.meta)
        except (*DB_ERRORS, DomainError) as exc:
            jlog.warning("revoking the job's token failed", error=str(exc))

    async def _run_or_adopt(
        self,
        req: RunRequest,
        cancel: asyncio.Event,
        io: JobIO,
        found: Found | None,
        jlog: structlog.BoundLogger,
    ) -> Outcome:
        """Run (or adopt) the attempt; while the executor's engine does not answer, wait for
        it and try again: that is not the job's fault, so it is not charged to the job."""
        while True:
            try:
                if found is not None:
                    return await self.executor.adopt(found, req, cancel, io)
                return await self.executor.run(req, cancel, io)
            except EngineUnavailable as exc:
                jlog.warning("executor unavailable; the attempt waits for it", error=str(exc))
                self.metrics.executor_errors.labels(self.executor.name, "unavailable").inc()
                self._executor_changed(False)
            # Asking on its own too: the attempt need not wait for the next watch round.
            while not self.executor_up.is_set():
                await _first_of(self.executor_up, cancel, seconds=_ENGINE_RETRY_SECONDS)
                if cancel.is_set() and not self.executor_up.is_set():
                    return Outcome(cancelled=True)
                if await self.executor.available():
                    self._executor_changed(True)

    async def _record(self, job: Job, command: Command, jlog: structlog.BoundLogger) -> None:
        """Record an outcome of `job` (its state as this worker started it); keep trying
        through database outages, it must not be lost."""
        result = await _retrying(lambda: self._outcomes((job, command)), "recording", jlog)
        if isinstance(result, DomainError):
            # E.g. our lease expired and another scheduler already failed the attempt, or a
            # retry after a commit whose answer was lost finds it recorded already.
            jlog.warning("outcome not recorded", reason=result.message)
        else:
            jlog.info("job ended", state=result.state.value, exit_code=result.exit_code)

    async def _record_batch(self, batch: list[tuple[Job, Command]]) -> list[Job | DomainError]:
        """Record outcomes that ended together and, in the same transaction, start as many
        jobs as they leave slots for (they still count against the capacity until then).
        Each job's state as this worker started it is the outcome's prior: nothing but a
        cancel request writes to a running job, and then the append's version check sends
        the outcomes through `execute_many`, which reads the rows."""
        outcomes = {job.id: command for job, command in batch}
        priors = {job.id: job for job, _ in batch}
        self._ending += len(batch)
        free = max(0, self._free())
        if not self.ready.is_set() or self._stopping or not self.executor_up.is_set():
            free = 0  # recovering, going, or the executor does not answer: record only
        results: dict[uuid.UUID, Job | DomainError | None]
        try:
            with self._claim_in_flight(free):
                cycle = await claim(
                    self.service, self.config.worker_id, self.config.tags, free, outcomes,
                    has_key=self.secrets_box is not None, priors=priors, lead=self._lead,
                    wait=False,
                )  # fmt: skip
                self._lead = cycle.lead
                for c in cycle.claimed:
                    self._spawn(c.job, log_limit=c.log_limit_bytes)
            if cycle.contended:
                self.wake.set()  # fewer started than may be startable: claim again
        except ConcurrencyError:  # e.g. a cancel request came in: one at a time
            results = dict(await self.service.execute_many(outcomes, self.meta))
        else:
            results = dict(cycle.recorded)
        finally:
            self._ending -= len(batch)
        done: list[Job | DomainError] = []
        for job, command in batch:
            result = results[job.id]
            if result is None:  # refused: decide again on its own to say why
                result = await self.service.execute_or_error(job.id, command, self.meta)
            done.append(result)
        return done

    # ---- the executor ---------------------------------------------------------------

    def _executor_error(self) -> str | None:
        if self.executor_up.is_set():
            return None
        return f"the {self.executor.name} executor does not answer"

    def _executor_changed(self, up: bool) -> None:
        if up == self.executor_up.is_set():
            return
        self._executor_status_stored = False
        self.metrics.executor_up.labels(self.executor.name).set(up)
        if up:
            self.log.info("executor answers again; claiming", executor=self.executor.name)
            self.executor_up.set()
            self.wake.set()
        else:
            self.log.warning(
                "executor does not answer; claiming nothing", executor=self.executor.name
            )
            self.executor_up.clear()

    async def _watch_executor(self) -> None:
        """Ask the executor whether it answers; keep the workers table saying so (the waiting
        reason of the jobs only this worker could run reads it)."""
        # `run` asked once before starting this: store that answer first, then ask again.
        while True:
            if not self._executor_status_stored:
                try:
                    await self.pool.execute(
                        QUERIES["executor_status"], self.config.worker_id, self._executor_error()
                    )
                    self._executor_status_stored = True
                except DB_ERRORS as exc:
                    self.log.warning("storing the executor's status failed", error=str(exc))
            await asyncio.sleep(self.config.executor_check_interval)
            self._executor_changed(await self.executor.available())

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reconcile_interval)
            if not self.executor_up.is_set():
                continue
            try:
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive any one failed round
                self.log.warning("reconcile failed", error=repr(exc))

    async def _reconcile(self) -> None:
        """Remove what the executor holds (of any worker) for jobs that have ended: left
        behind when a removal failed, or a worker died between recording and removing."""
        found = [
            f
            for f in await self.executor.find_any()
            if (a := self.active.get(f.job_id)) is None or a.attempt != f.attempt
        ]
        if not found:
            return
        ended = {
            r["id"] for r in await self.pool.fetch(QUERIES["ended_jobs"], [f.job_id for f in found])
        }
        for f in found:
            if f.job_id in ended:
                await self.executor.discard(f)
                self.log.info(
                    "removed the leftover of an ended job", job_id=str(f.job_id), ref=f.ref
                )

    # ---- leases -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Renew the lease every heartbeat interval, and reap; after a failed heartbeat,
        try again soon, so the lease is renewed within a second of the database's return."""
        delay = self.config.heartbeat_interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.pool.execute(QUERIES["heartbeat"], self.config.worker_id)
            except DB_ERRORS as exc:
                self.log.warning("heartbeat failed", error=str(exc))
                self._reachable_since = None
                delay = min(max(delay * 2, 0.1), 1.0, self.config.heartbeat_interval)
                continue
            delay = self.config.heartbeat_interval
            if self._reachable_since is None:
                self._reachable_since = time.monotonic()
            try:
                await self._reap()
            except DB_ERRORS as exc:
                self.log.warning("reaping failed", error=str(exc))

    async def _reap(self) -> None:
        """Fail (or retry) the jobs of workers whose lease expired. A lease counts as expired
        only if its last heartbeat is older than the lease AND this reaper has reached the
        database for longer than the lease: after an outage every worker's heartbeat is
        stale, through no fault of theirs; the survivors renew theirs within a second of the
        database's return (see `_heartbeat_loop`), well inside that second lease."""
        if self._reachable_since is None:
            return
        reachable_for = time.monotonic() - self._reachable_since
        for r in await self.pool.fetch(QUERIES["lost_jobs"], self.config.worker_id, reachable_for):
            message = f"worker {r['worker_id']} stopped renewing its lease"
            with contextlib.suppress(DomainError):  # another scheduler got there first
                await self.service.execute(
                    r["id"],
                    Fail(attempt=r["attempt"], reason=FailureReason.WORKER_LOST, message=message),
                    self.meta,
                )
                self.log.warning(
                    "job lost with its worker", job_id=str(r["id"]), lost=r["worker_id"]
                )
                self.metrics.lease_reaps.inc()
            await self._revoke_tokens(r["id"], self.log)

    # ---- recovery (I8) ----------------------------------------------------------------

    async def _recover(self) -> None:
        """Adopt what a previous life of this worker left running; record what ended while
        nobody watched; fail the jobs whose container is gone."""
        found = await self.executor.find(self.config.worker_id)
        mine = {
            r["id"]: r
            for r in await self.pool.fetch(QUERIES["my_active_jobs"], self.config.worker_id)
        }
        adopted: set[uuid.UUID] = set(self.active)  # by an earlier try of this start
        # Two installs (databases) sharing an engine can have workers of the same id (the
        # default is the host's name): a container of a job this database does not hold is
        # the other's, running, and not ours to remove (as in `_reconcile`).
        known = {
            r["id"] for r in await self.pool.fetch(QUERIES["known_jobs"], [f.job_id for f in found])
        }
        for f in found:
            row = mine.get(f.job_id)
            if f.job_id in self.active:
                continue
            if f.job_id not in known:
                self.log.info("left another install's container alone", job_id=str(f.job_id))
                continue
            if row is not None and row["attempt"] == f.attempt and f.job_id not in adopted:
                job = await self.service.load(f.job_id)
                assert job is not None
                log_limit = await self.pool.fetchval(QUERIES["project_log_limit"], job.spec.project)
                self._spawn(job, found=f, log_limit=log_limit)
                adopted.add(f.job_id)
                self.metrics.adoptions.inc()
                self.log.info("adopted job", job_id=str(f.job_id), running=f.running)
            else:
                await self.executor.discard(f)
                self.log.info("removed leftover", job_id=str(f.job_id), ref=f.ref)
        for job_id, row in mine.items():
            if job_id in adopted:
                continue
            with contextlib.suppress(DomainError):
                await self.service.execute(
                    job_id,
                    Fail(
                        attempt=row["attempt"],
                        reason=FailureReason.WORKER_LOST,
                        message="the worker restarted and the job's container was gone",
                    ),
                    self.meta,
                )
            await self._revoke_tokens(job_id, self.log)


async def _retrying(op: Callable[[], Awaitable[T]], what: str, jlog: structlog.BoundLogger) -> T:
    """`op()`'s result, trying again (with backoff) while the database is away."""
    backoff = 0.1
    while True:
        try:
            return await op()
        except DB_ERRORS as exc:
            jlog.warning(f"{what} failed, retrying", error=str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


async def _unless_stopped(wait: Awaitable[None], stop: asyncio.Event) -> bool:
    """Await `wait` unless `stop` is set first (False then)."""
    waiting = asyncio.ensure_future(wait)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not waiting.done():
            waiting.cancel()
    if waiting.done() and not waiting.cancelled():
        waiting.result()  # raise what it raised
        return True
    return False


async def _first_of(*events: asyncio.Event, seconds: float) -> None:
    """Wait until any event is set, or the timeout passes."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
