"""The scheduler of one worker process: claims queued jobs when woken (NOTIFY) or every
poll interval, runs each on the executor, records how it ended, renews its lease, fails the
jobs of workers whose lease expired, and on start adopts what its previous life left."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta

import msgspec
import structlog

from ..batching import Batcher
from ..domain.errors import ConcurrencyError, DomainError
from ..domain.events import EventMeta, FailureReason
from ..domain.jobs import Command, Fail, Job, JobState
from ..service import JobService
from ..store.db import DB_ERRORS
from ..store.eventstore import Notification
from ..store.notifications import EVENTS, Listener
from .claims import QUERIES, claim
from .executor import Executor, Found, JobIO, Outcome, RunRequest
from .output import SHUTDOWN_SECONDS, LogLimits, LogSink
from .usage import UsageRecorder

log = structlog.get_logger(__name__)

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


@dataclass
class _Active:
    attempt: int
    cancel: asyncio.Event
    task: asyncio.Task[None]


class Scheduler:
    """Runs until `stop` is set; see the module docstring."""

    def __init__(
        self, service: JobService, executor: Executor, config: WorkerConfig, dsn: str
    ) -> None:
        self.service = service
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
        #: Outcomes that end together are recorded in one transaction.
        self._outcomes = Batcher(self._record_batch)
        self.meta = EventMeta(actor=f"worker:{config.worker_id}")
        self.log = log.bind(worker_id=config.worker_id)

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
        await self.pool.execute(
            QUERIES["register_worker"], cfg.worker_id, list(cfg.tags), cfg.capacity,
            cfg.lease_seconds, self.executor.name, socket.gethostname(), os.getpid(),
        )  # fmt: skip
        listener = Listener(self.dsn, self._on_connect, identity=cfg.worker_id)
        listener.on(EVENTS.renamed(self.service.store.channel), self._on_notification)
        listen_task = asyncio.create_task(listener.run(), name="listener")
        heartbeat_task: asyncio.Task[None] | None = None
        try:
            await listener.started()
            await self._recover()
            heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
            self.ready.set()
            self.log.info("scheduler running", capacity=cfg.capacity, tags=cfg.tags)
            while not stop.is_set():
                timeout = await self._round()
                await _first_of(self.wake, stop, seconds=timeout)
        finally:
            self._stopping = True
            self._outcomes.close()
            for t in (listen_task, heartbeat_task):
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

    async def _round(self) -> float:
        """Claim what fits, deliver missed cancels; return how long to sleep."""
        self.wake.clear()
        try:
            if self._sweep_due:
                self._sweep_due = False
                await self._sweep()
            while (free := self.config.capacity - len(self.active)) > 0:
                try:
                    cycle = await claim(self.service, self.config.worker_id, self.config.tags, free)
                except ConcurrencyError:
                    continue  # raced with a cancel: claim again on fresh state
                for c in cycle.claimed:
                    self._spawn(c.job, log_limit=c.log_limit_bytes)
                if len(cycle.claimed) < free:
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

    async def _sweep(self) -> None:
        """Deliver cancels whose notification we may have missed."""
        rows = await self.pool.fetch(QUERIES["my_active_jobs"], self.config.worker_id)
        for r in rows:
            if r["state"] == JobState.CANCELLING and (a := self.active.get(r["id"])):
                a.cancel.set()

    # ---- one job ----------------------------------------------------------------------

    def _spawn(self, job: Job, found: Found | None = None, *, log_limit: int | None) -> None:
        cancel = asyncio.Event()
        if job.state is JobState.CANCELLING:
            cancel.set()
        task = asyncio.create_task(
            self._execute(job, cancel, found, log_limit), name=f"job-{job.id}"
        )
        self.active[job.id] = _Active(job.attempt, cancel, task)

    async def _execute(
        self, job: Job, cancel: asyncio.Event, found: Found | None, log_limit: int | None
    ) -> None:
        req = RunRequest(
            job_id=job.id, attempt=job.attempt, worker_id=self.config.worker_id, spec=job.spec
        )
        jlog = self.log.bind(job_id=str(job.id), attempt=job.attempt)
        usage = UsageRecorder(self.pool, job.id, job.attempt, self.config.sample_interval)
        limits = LogLimits(max_total_bytes=log_limit or self.config.log_limit_bytes)
        sink = LogSink(self.pool, job.id, job.attempt, limits)
        try:
            try:
                # Only a worker running an attempt writes its lines: a first attempt just
                # claimed has none, and numbers from 0 without asking.
                await sink.start(fresh=found is None and job.attempt == 1)
                io = JobIO(sink, usage)
                if found is not None:
                    outcome = await self.executor.adopt(found, req, cancel, io)
                else:
                    outcome = await self.executor.run(req, cancel, io)
                # Every line is stored before the outcome is: a log reader that sees the
                # terminal state has seen all the output.
                await sink.close()
            except asyncio.CancelledError:
                # The worker is going away: the lines read so far are stored before the pool
                # closes; the next life of this worker reads the rest when it adopts the job.
                await sink.shutdown(SHUTDOWN_SECONDS)
                raise
            except Exception as exc:  # the executor's own fault, not the job's
                jlog.exception("executor failed")
                await sink.shutdown(SHUTDOWN_SECONDS)
                outcome = Outcome(
                    failure=FailureReason.WORKER_LOST, message=f"executor error: {exc}"
                )
            if usage.peak_memory or usage.cpu_seconds:
                outcome = msgspec.structs.replace(
                    outcome, usage=usage.summary(outcome.usage.wall_seconds)
                )
            await self._record(job.id, outcome.command(job.attempt), jlog)
        finally:
            self.active.pop(job.id, None)
            self.wake.set()

    async def _record(
        self, job_id: uuid.UUID, command: Command, jlog: structlog.BoundLogger
    ) -> None:
        """Record an outcome; keep trying through database outages, it must not be lost."""
        backoff = 0.1
        while True:
            try:
                result = await self._outcomes((job_id, command))
            except DB_ERRORS as exc:
                jlog.warning("recording outcome failed, retrying", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if isinstance(result, DomainError):
                # E.g. our lease expired and another scheduler already failed the attempt.
                jlog.warning("outcome not recorded", reason=result.message)
            else:
                jlog.info("job ended", state=result.state.value, exit_code=result.exit_code)
            return

    async def _record_batch(
        self, batch: list[tuple[uuid.UUID, Command]]
    ) -> list[Job | DomainError]:
        """Record outcomes that ended together and, in the same transaction, start as many
        jobs as they leave slots for (they still count against the capacity until then)."""
        outcomes = dict(batch)
        free = self.config.capacity - len(self.active) + len(batch)
        if not self.ready.is_set() or self._stopping:
            free = 0  # recovering, or going: record only
        results: dict[uuid.UUID, Job | DomainError | None]
        try:
            cycle = await claim(
                self.service, self.config.worker_id, self.config.tags, free, outcomes
            )
        except ConcurrencyError:  # e.g. a cancel request came in: one at a time
            results = dict(await self.service.execute_many(outcomes, self.meta))
        else:
            for c in cycle.claimed:
                self._spawn(c.job, log_limit=c.log_limit_bytes)
            results = dict(cycle.recorded)
        done: list[Job | DomainError] = []
        for job_id, _ in batch:
            result = results[job_id]
            if result is None:  # refused: decide again on its own to say why
                result = await self.service.execute_or_error(job_id, outcomes[job_id], self.meta)
            done.append(result)
        return done

    # ---- leases -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                await self.pool.execute(QUERIES["heartbeat"], self.config.worker_id)
                await self._reap()
            except DB_ERRORS as exc:
                self.log.warning("heartbeat failed", error=str(exc))

    async def _reap(self) -> None:
        """Fail (or retry) the jobs of workers whose lease expired."""
        for r in await self.pool.fetch(QUERIES["lost_jobs"], self.config.worker_id):
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

    # ---- recovery (I8) ----------------------------------------------------------------

    async def _recover(self) -> None:
        """Adopt what a previous life of this worker left running; record what ended while
        nobody watched; fail the jobs whose container is gone."""
        found = await self.executor.find(self.config.worker_id)
        mine = {
            r["id"]: r
            for r in await self.pool.fetch(QUERIES["my_active_jobs"], self.config.worker_id)
        }
        adopted: set[uuid.UUID] = set()
        for f in found:
            row = mine.get(f.job_id)
            if row is not None and row["attempt"] == f.attempt and f.job_id not in adopted:
                job = await self.service.load(f.job_id)
                assert job is not None
                log_limit = await self.pool.fetchval(QUERIES["project_log_limit"], job.spec.project)
                self._spawn(job, found=f, log_limit=log_limit)
                adopted.add(f.job_id)
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


async def _first_of(*events: asyncio.Event, seconds: float) -> None:
    """Wait until any event is set, or the timeout passes."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
