-- name: write_jobs
-- Write folded states ($1: a JSON array of whole job views, new jobs'; $4: of the columns a
-- transition changes, `JobChange` (its SET list is `jobs.CHANGED`), jobs' with a row) and
-- send the append's one notification ($2 channel, $3 payload) in the same statement: the
-- inline projection runs this in the append transaction, one round trip whatever the
-- number of jobs. A transition sends and parses only what it changes: the spec (most of a
-- row) is written once, at the submit (measured in a drain: this statement's bind and
-- execution 0.23 ms per job with whole views through an upsert). A new job's row is a
-- plain INSERT: its stream was just created (version 1), so no row can be there. With $5
-- (projects; NULL: none wanted), it also answers the queue facts of those projects
-- (`queue_facts`, read at the statement's start: the rows it writes are not running),
-- which saves a submit its own round trip for them. $6: the ids of $4's jobs, so that the
-- update reads their rows by primary key: joined with the record set alone (which the
-- planner guesses at 100 rows), a table of a few thousand jobs was scanned whole and hashed
-- at every transition (0.8 ms of a drain cycle's 20 changes at 2,000 jobs).
WITH written AS (
    INSERT INTO jobs (
        id, project, state, spec, priority, labels, tags, concurrency_key, concurrency_limit,
        idempotency_key, submitted_by, attempt, requeue_reason, scheduled_for, worker_id,
        exit_code, failure_reason, message, usage, created_at, updated_at, started_at,
        finished_at, cancel_requested_at, cancel_requested_by, version, last_position,
        correlation_id, cause_event_id, secrets, definition, definition_version, source,
        workflow_run, step, inputs, output, output_sha256, parent_job, rerun_of
    )
    SELECT id, project, state, spec, priority, labels, tags, concurrency_key, concurrency_limit,
           idempotency_key, submitted_by, attempt, requeue_reason, scheduled_for, worker_id,
           exit_code, failure_reason, message, usage, created_at, updated_at, started_at,
           finished_at, cancel_requested_at, cancel_requested_by, version, last_position,
           correlation_id, cause_event_id, secrets, definition, definition_version, source,
           workflow_run, step, inputs, output, output_sha256, parent_job, rerun_of
    FROM jsonb_populate_recordset(NULL::jobs, $1::jsonb)
), changed AS (
    UPDATE jobs j SET
        state = c.state,
        attempt = c.attempt,
        requeue_reason = c.requeue_reason,
        scheduled_for = c.scheduled_for,
        worker_id = c.worker_id,
        exit_code = c.exit_code,
        failure_reason = c.failure_reason,
        message = c.message,
        usage = c.usage,
        updated_at = c.updated_at,
        started_at = c.started_at,
        finished_at = c.finished_at,
        cancel_requested_at = c.cancel_requested_at,
        cancel_requested_by = c.cancel_requested_by,
        version = c.version,
        last_position = c.last_position,
        cause_event_id = c.cause_event_id,
        secrets = c.secrets,
        output = c.output,
        output_sha256 = c.output_sha256
    FROM jsonb_populate_recordset(NULL::jobs, $4::jsonb) c
    WHERE j.id = ANY($6::uuid[]) AND j.id = c.id
)
SELECT pg_notify($2, $3)::text AS notified,
       CASE WHEN $5::text[] IS NOT NULL THEN queue_facts($5::text[]) END AS facts,
       clock_timestamp() AS now;

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
