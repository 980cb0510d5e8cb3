-- Named queries of schedules: the rows the API shows, what is due for the schedulers, and
-- the occurrences read from a schedule's stream.

-- name: get_schedule
-- One live schedule.
SELECT * FROM schedules WHERE project = $1 AND name = $2;

-- name: list_schedules
-- A project's live schedules, by name.
SELECT * FROM schedules WHERE project = $1 ORDER BY name;

-- name: due_schedules
-- Schedules whose next occurrence is due now by the database's clock, oldest due first.
SELECT stream_id FROM schedules
WHERE next_due_at <= clock_timestamp()
ORDER BY next_due_at
LIMIT $1;

-- name: next_due_in
-- Seconds until the next schedule falls due (NULL: none will).
SELECT extract(epoch FROM min(next_due_at) - clock_timestamp())::float8
FROM schedules WHERE next_due_at IS NOT NULL;

-- name: unsubmitted
-- Schedules with a fired occurrence whose job (or workflow run) is not in the log: a
-- scheduler died between the ScheduleFired and its creation. The log, not `jobs`, says
-- whether it exists (`recent_job_ids` holds the runs' ids too).
SELECT s.stream_id FROM schedules s
WHERE EXISTS (
    SELECT 1 FROM unnest(s.recent_job_ids) AS j(id)
    WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = j.id)
);

-- name: existing_streams
-- Which of some stream ids have events.
SELECT DISTINCT stream_id FROM events WHERE stream_id = ANY($1::uuid[]);

-- name: job_counts
-- How many of a schedule's jobs run and wait (the overlap policy's facts).
SELECT count(*) FILTER (WHERE state IN ('running', 'cancelling'))::int AS running,
       count(*) FILTER (WHERE state = 'queued')::int AS waiting
FROM jobs
WHERE project = $1 AND labels ->> 'jobledger.schedule' = $2
  AND labels ? 'jobledger.schedule' AND state IN ('queued', 'running', 'cancelling');

-- name: run_counts
-- How many of a schedule's workflow runs run and wait (the overlap policy's facts for a
-- schedule that runs a workflow): a run not ended waits while none of its steps has
-- started (every step waiting or ready; `waiting` is omitted from the json as the
-- default), and runs once one has.
SELECT count(*) FILTER (WHERE started)::int AS running,
       count(*) FILTER (WHERE NOT started)::int AS waiting
FROM (
    SELECT EXISTS (
        SELECT 1 FROM json_array_elements(r.steps) AS s(step)
        WHERE coalesce(s.step ->> 'state', 'waiting') NOT IN ('waiting', 'ready')
    ) AS started
    FROM workflow_runs r
    WHERE r.project = $1 AND r.schedule = $2 AND r.state IN ('running', 'cancelling')
) AS runs;

-- name: now
-- The database's clock: occurrences are decided by it, never by a process's.
SELECT clock_timestamp();

-- name: occurrences
-- A schedule's fired and skipped occurrences, newest first, before a stream version, with
-- the job or workflow run each fired one made (if it exists yet) and optionally an
-- occurrence window.
SELECT e.version, e.type, e.schema_version, e.data::text AS data, e.recorded_at,
       j.state AS job_state, coalesce(j.created_at, w.created_at) AS job_created_at,
       w.state AS workflow_run_state
FROM events e
LEFT JOIN jobs j ON e.type = 'ScheduleFired' AND j.id = (e.data ->> 'job_id')::uuid
LEFT JOIN workflow_runs w
    ON e.type = 'ScheduleFired' AND w.stream_id = (e.data ->> 'workflow_run')::uuid
WHERE e.stream_id = $1 AND e.type IN ('ScheduleFired', 'ScheduleSkipped')
  AND ($2::int IS NULL OR e.version < $2)
  AND ($3::timestamptz IS NULL OR
       coalesce((e.data ->> 'until')::timestamptz, (e.data ->> 'occurrence')::timestamptz) >= $3)
  AND ($4::timestamptz IS NULL OR (e.data ->> 'occurrence')::timestamptz < $4)
ORDER BY e.version DESC
LIMIT $5;
