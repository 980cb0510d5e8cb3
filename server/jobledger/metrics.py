"""Prometheus metrics of one process (issue 19): their definitions in one place, and a
`Metrics` object that holds them in a registry of its own.

One `Metrics` per process: the `JobService` makes it (or is given it), and everything that
counts reaches it through the service (the scheduler, the log sink, the API). A registry of
its own, not the library's global one, so that a test process may run many apps and
workers, each with its own counts.

Job counts come from the events a process *committed* (`recorded`), so a claim or a submit
that rolled back counts nothing, and each transition is counted once, by the process that
made it: the API server counts submits and cancels of queued jobs, a worker the starts and
outcomes of its jobs (and the jobs its schedules and workflows submit). Prometheus sums
them over processes. Labels are few-valued only: project, state, failure reason, executor;
never a job id."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .domain.events import (
    JobCancelled,
    JobCancelRequested,
    JobFailed,
    JobRetryScheduled,
    JobStarted,
    JobSubmitted,
    JobSucceeded,
    Recorded,
)
from .domain.jobs import Job, JobState

if TYPE_CHECKING:
    import asyncpg

# The `_created` series (one timestamp per counter and label set) double what a scrape
# carries and nothing of ours reads them.
prometheus_client.disable_created_metrics()

#: The content type of what `render` writes: the classic text format, which every
#: Prometheus reads (the library's "latest", 1.0.0, is for UTF-8 names we do not use).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: From when a job could start to its JobStarted: milliseconds when idle, minutes when full.
PICKUP_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800,
)  # fmt: skip
#: A run: a no-op in milliseconds, a batch job in hours.
RUN_BUCKETS = (
    0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400,
)  # fmt: skip
#: One claim transaction: a few round trips.
CLAIM_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip

#: The events that end a job, and the state each ends it in.
_ENDED = {
    JobSucceeded: JobState.SUCCEEDED,
    JobFailed: JobState.FAILED,
    JobCancelled: JobState.CANCELLED,
}


class _PoolCollector(Collector):
    """The database pool's connections, read at scrape time (asyncpg keeps the counts)."""

    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        pool = self.pool
        if pool is None:
            return
        size = GaugeMetricFamily(
            "jobledger_db_pool_connections", "Open connections of the process's database pool"
        )
        size.add_metric([], pool.get_size())
        idle = GaugeMetricFamily(
            "jobledger_db_pool_idle_connections", "Open connections of the pool not in use"
        )
        idle.add_metric([], pool.get_idle_size())
        top = GaugeMetricFamily(
            "jobledger_db_pool_max_connections", "Connections the pool may open at most"
        )
        top.add_metric([], pool.get_max_size())
        yield from (size, idle, top)


class Metrics:
    """Every metric of one process, in `registry`."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # ---- jobs (from committed events) ----
        self.jobs_submitted = Counter(
            "jobledger_jobs_submitted", "Jobs created", ["project"], registry=r
        )
        self.jobs_started = Counter(
            "jobledger_jobs_started", "Attempts started (JobStarted)", ["project"], registry=r
        )
        self.jobs_finished = Counter(
            "jobledger_jobs_finished",
            "Jobs ended, by final state and failure reason ('' unless failed)",
            ["project", "state", "reason"],
            registry=r,
        )
        self.job_retries = Counter(
            "jobledger_job_retries",
            "Failed attempts followed by a retry (JobRetryScheduled)",
            ["project", "reason"],
            registry=r,
        )
        self.pickup = Histogram(
            "jobledger_job_pickup_seconds",
            "From when a job could start (queued, or its scheduled time) to its start "
            "(database clock)",
            ["project"],
            buckets=PICKUP_BUCKETS,
            registry=r,
        )
        self.run = Histogram(
            "jobledger_job_run_seconds",
            "From an ended job's last start to its end (database clock)",
            ["project", "state"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        # ---- schedulers ----
        self.claim_cycle = Histogram(
            "jobledger_claim_cycle_seconds",
            "One claim transaction: outcomes recorded and queued jobs started",
            buckets=CLAIM_BUCKETS,
            registry=r,
        )
        self.running = Gauge(
            "jobledger_worker_running_jobs", "Jobs this process's scheduler runs now", registry=r
        )
        self.capacity = Gauge(
            "jobledger_worker_capacity", "Jobs this process's scheduler may run at once", registry=r
        )
        self.lease_reaps = Counter(
            "jobledger_lease_reaps",
            "Jobs failed (worker_lost) by this process because their worker's lease expired",
            registry=r,
        )
        self.adoptions = Counter(
            "jobledger_adoptions",
            "Running jobs a restarted worker found and adopted",
            registry=r,
        )
        self.executor_errors = Counter(
            "jobledger_executor_errors",
            "Executor failures: 'crash' (an attempt failed worker_lost by the executor's "
            "own error), 'unavailable' (its engine did not answer; the attempt waited)",
            ["executor", "kind"],
            registry=r,
        )
        self.executor_up = Gauge(
            "jobledger_executor_up",
            "1 while the executor answers (the scheduler claims only then)",
            ["executor"],
            registry=r,
        )
        # ---- job output ----
        self.log_lines = Counter(
            "jobledger_log_lines_stored", "Lines of job output stored", registry=r
        )
        self.log_bytes = Counter(
            "jobledger_log_bytes_stored", "Bytes (UTF-8) of job output stored", registry=r
        )
        self.log_lines_dropped = Counter(
            "jobledger_log_lines_dropped",
            "Lines of job output not stored: 'limit' (past the job's log limit), "
            "'refused' (the database refused the batch)",
            ["reason"],
            registry=r,
        )
        self.log_bytes_dropped = Counter(
            "jobledger_log_bytes_dropped",
            "Bytes of job output not stored, as for jobledger_log_lines_dropped",
            ["reason"],
            registry=r,
        )
        # ---- API ----
        self.websockets = Gauge(
            "jobledger_websocket_clients",
            "Open WebSockets: 'logs' (a job's output), 'jobs_watch' (the jobs watch)",
            ["socket"],
            registry=r,
        )
        self.rate_limited = Counter(
            "jobledger_submits_rate_limited",
            "Submit requests refused with 429 by the project's rate limit",
            ["project"],
            registry=r,
        )
        # ---- the queue (server only: set at scrape time, see api/metrics.py) ----
        self.queue_depth = Gauge(
            "jobledger_queue_depth", "Queued jobs whose time has come", ["project"], registry=r
        )
        self.queue_scheduled = Gauge(
            "jobledger_queue_scheduled",
            "Queued jobs waiting for a later time (scheduled_for, a retry's backoff)",
            ["project"],
            registry=r,
        )
        self.queue_oldest = Gauge(
            "jobledger_queue_oldest_wait_seconds",
            "How long the longest-waiting due job of the project has waited",
            ["project"],
            registry=r,
        )
        self.queue_query = Gauge(
            "jobledger_metrics_queue_query_seconds",
            "How long the last scrape's queue query took",
            registry=r,
        )
        self.queue_query_errors = Counter(
            "jobledger_metrics_queue_query_errors",
            "Scrapes whose queue query failed or timed out (their queue gauges are left out)",
            registry=r,
        )
        self._pool = _PoolCollector()
        r.register(self._pool)

    def watch_pool(self, pool: asyncpg.Pool | None) -> None:
        """Report this database pool's connections."""
        self._pool.pool = pool

    def render(self) -> bytes:
        """The registry in Prometheus's text format."""
        return prometheus_client.generate_latest(self.registry)

    # ---- jobs ----------------------------------------------------------------------------

    def recorded(self, events: Sequence[Recorded], jobs: Mapping[uuid.UUID, Job]) -> None:
        """Count the job events of a committed transaction; `jobs`: the jobs' states after
        it (their project, and when their attempt started)."""
        before: dict[uuid.UUID, object] = {}  # each stream's previous event in this append
        for rec in events:
            event = rec.event
            previous = before.get(rec.stream_id)
            before[rec.stream_id] = event
            if isinstance(event, JobSubmitted):
                self.jobs_submitted.labels(event.spec.project).inc()
                continue
            job = jobs.get(rec.stream_id)
            if job is None:
                continue
            project = job.spec.project
            if isinstance(event, JobStarted):
                self.jobs_started.labels(project).inc()
                if event.ready_at is not None:
                    waited = rec.recorded_at.timestamp() - event.ready_at
                    self.pickup.labels(project).observe(max(waited, 0.0))
            elif isinstance(event, JobRetryScheduled):
                self.job_retries.labels(project, event.reason.value).inc()
            elif (state := _ENDED.get(type(event))) is not None:
                reason = event.reason.value if isinstance(event, JobFailed) else ""
                self.jobs_finished.labels(project, state.value, reason).inc()
                # A queued job's cancel is its request and its end in one append: it did
                # not run (its `started_at` may be an earlier attempt's).
                queued_cancel = isinstance(previous, JobCancelRequested)
                if job.started_at is not None and not queued_cancel:
                    ran = (rec.recorded_at - job.started_at).total_seconds()
                    self.run.labels(project, state.value).observe(max(ran, 0.0))

    # ---- the queue -----------------------------------------------------------------------

    def set_queue(self, rows: Iterable[tuple[str, int, int, float | None]], seconds: float) -> None:
        """The queue as one read saw it: (project, due, later, oldest wait of a due job)."""
        for gauge in (self.queue_depth, self.queue_scheduled, self.queue_oldest):
            gauge.clear()  # a project with nothing queued any more is left out
        for project, due, later, oldest in rows:
            self.queue_depth.labels(project).set(due)
            self.queue_scheduled.labels(project).set(later)
            if oldest is not None:
                self.queue_oldest.labels(project).set(oldest)
        self.queue_query.set(seconds)

    def queue_failed(self) -> None:
        """The queue could not be read: its gauges are left out of this scrape."""
        for gauge in (self.queue_depth, self.queue_scheduled, self.queue_oldest):
            gauge.clear()
        self.queue_query_errors.inc()
