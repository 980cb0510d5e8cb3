-- name: get_job
-- One job's row.
SELECT * FROM jobs WHERE id = $1;

-- name: get_jobs
-- Several jobs' rows.
SELECT * FROM jobs WHERE id = ANY($1::uuid[]);

-- name: find_by_idempotency_keys
-- The jobs submitted under some (project, idempotency key) pairs.
SELECT j.* FROM jobs j
JOIN unnest($1::text[], $2::text[]) AS k(project, key)
  ON j.project = k.project AND j.idempotency_key = k.key;

-- name: append_jobs
-- An append of job events fused into one statement (see `projections/jobs.py:AppendJobs`):
-- the events as store/queries.sql `append_events` inserts them ($1-$8, put in where
-- APPEND_EVENTS stands), the jobs rows folded in Python ($9: a JSON array of whole job views
-- for new jobs, and for jobs with a row of only what a transition changes, `JobChange`: the
-- spec, most of a row, is sent and parsed once, at the submit; a drain spent 0.23 ms per job
-- in a statement that sent whole views through INSERT ... ON CONFLICT DO UPDATE),
-- where a row's time or position comes from this append ($10: by job id, each such column
-- with the index (from 1) of the job's event in this append, and for a time an offset in
-- microseconds), the one notification ($11 channel, $12 payload), and the queue facts of
-- some projects ($13; NULL: none wanted) read at the same moment. Answers the events'
-- positions and times. As one statement it is atomic without a transaction around it.
WITH appended AS (
    APPEND_EVENTS
),
by_job AS (
    SELECT stream_id, array_agg(position ORDER BY version) AS positions,
           array_agg(recorded_at ORDER BY version) AS times
    FROM appended
    GROUP BY stream_id
),
folded AS (
    SELECT f.*, $10::jsonb -> f.id::text AS p, a.positions, a.times
    FROM jsonb_populate_recordset(NULL::jobs, $9::jsonb) AS f
    JOIN by_job a ON a.stream_id = f.id
),
resolved AS (
    SELECT id, project, state, spec, priority, labels, tags, concurrency_key, concurrency_limit,
           idempotency_key, submitted_by, attempt, requeue_reason,
           CASE WHEN p ? 'scheduled_for'
                THEN times[(p #>> '{scheduled_for,0}')::int]
                     + (p #>> '{scheduled_for,1}')::bigint * interval '1 microsecond'
                ELSE scheduled_for END AS scheduled_for,
           worker_id, exit_code, failure_reason, message, usage,
           CASE WHEN p ? 'created_at'
                THEN times[(p #>> '{created_at,0}')::int]
                     + (p #>> '{created_at,1}')::bigint * interval '1 microsecond'
                ELSE created_at END AS created_at,
           CASE WHEN p ? 'updated_at'
                THEN times[(p #>> '{updated_at,0}')::int]
                     + (p #>> '{updated_at,1}')::bigint * interval '1 microsecond'
                ELSE updated_at END AS updated_at,
           CASE WHEN p ? 'started_at'
                THEN times[(p #>> '{started_at,0}')::int]
                     + (p #>> '{started_at,1}')::bigint * interval '1 microsecond'
                ELSE started_at END AS started_at,
           CASE WHEN p ? 'finished_at'
                THEN times[(p #>> '{finished_at,0}')::int]
                     + (p #>> '{finished_at,1}')::bigint * interval '1 microsecond'
                ELSE finished_at END AS finished_at,
           CASE WHEN p ? 'cancel_requested_at'
                THEN times[(p #>> '{cancel_requested_at,0}')::int]
                     + (p #>> '{cancel_requested_at,1}')::bigint * interval '1 microsecond'
                ELSE cancel_requested_at END AS cancel_requested_at,
           cancel_requested_by, version,
           CASE WHEN p ? 'last_position' THEN positions[(p ->> 'last_position')::int]
                ELSE last_position END AS last_position,
           correlation_id, cause_event_id, secrets, definition, definition_version, source,
           workflow_run, step, inputs, output, output_sha256, parent_job, rerun_of
    FROM folded
),
written AS (
    INSERT INTO jobs (
        id, project, state, spec, priority, labels, tags, concurrency_key, concurrency_limit,
        idempotency_key, submitted_by, attempt, requeue_reason, scheduled_for, worker_id,
        exit_code, failure_reason, message, usage, created_at, updated_at, started_at,
        finished_at, cancel_requested_at, cancel_requested_by, version, last_position,
        correlation_id, cause_event_id, secrets, definition, definition_version, source,
        workflow_run, step, inputs, output, output_sha256, parent_job, rerun_of
    )
    SELECT
        id, project, state, spec, priority, labels, tags, concurrency_key, concurrency_limit,
        idempotency_key, submitted_by, attempt, requeue_reason, scheduled_for, worker_id,
        exit_code, failure_reason, message, usage, created_at, updated_at, started_at,
        finished_at, cancel_requested_at, cancel_requested_by, version, last_position,
        correlation_id, cause_event_id, secrets, definition, definition_version, source,
        workflow_run, step, inputs, output, output_sha256, parent_job, rerun_of
    FROM resolved WHERE spec IS NOT NULL  -- a new job's whole view
    ON CONFLICT (id) DO UPDATE SET
        state = EXCLUDED.state,
        attempt = EXCLUDED.attempt,
        requeue_reason = EXCLUDED.requeue_reason,
        scheduled_for = EXCLUDED.scheduled_for,
        worker_id = EXCLUDED.worker_id,
        exit_code = EXCLUDED.exit_code,
        failure_reason = EXCLUDED.failure_reason,
        message = EXCLUDED.message,
        usage = EXCLUDED.usage,
        updated_at = EXCLUDED.updated_at,
        started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at,
        cancel_requested_at = EXCLUDED.cancel_requested_at,
        cancel_requested_by = EXCLUDED.cancel_requested_by,
        version = EXCLUDED.version,
        last_position = EXCLUDED.last_position,
        cause_event_id = EXCLUDED.cause_event_id,
        secrets = EXCLUDED.secrets,
        output = EXCLUDED.output,
        output_sha256 = EXCLUDED.output_sha256
),
changed AS (
    UPDATE jobs j SET
        state = r.state,
        attempt = r.attempt,
        requeue_reason = r.requeue_reason,
        scheduled_for = r.scheduled_for,
        worker_id = r.worker_id,
        exit_code = r.exit_code,
        failure_reason = r.failure_reason,
        message = r.message,
        usage = r.usage,
        updated_at = r.updated_at,
        started_at = r.started_at,
        finished_at = r.finished_at,
        cancel_requested_at = r.cancel_requested_at,
        cancel_requested_by = r.cancel_requested_by,
        version = r.version,
        last_position = r.last_position,
        cause_event_id = r.cause_event_id,
        secrets = r.secrets,
        output = r.output,
        output_sha256 = r.output_sha256
    FROM resolved r
    WHERE r.spec IS NULL AND j.id = r.id  -- a transition's JobChange
)
SELECT array_agg(stream_id) AS stream_ids, array_agg(version) AS versions,
       array_agg(position) AS positions, array_agg(recorded_at) AS recorded_at,
       (SELECT pg_notify($11, $12)::text) AS notified,
       CASE WHEN $13::text[] IS NOT NULL THEN queue_facts($13::text[]) END AS facts,
       clock_timestamp() AS now
FROM appended;
