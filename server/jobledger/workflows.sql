-- name: run_project
-- A run's project (None: no such run).
SELECT project FROM workflow_runs WHERE stream_id = $1;

-- name: run_row
-- One run's row (issue 19: what is left of an archived run).
SELECT * FROM workflow_runs WHERE stream_id = $1;

-- name: list_runs
-- Runs newest first: $1 projects (NULL: all), $2 states (NULL: any), after ($3, $4), $6
-- started by this schedule (NULL: any).
SELECT * FROM workflow_runs
WHERE ($1::text[] IS NULL OR project = ANY($1::text[]))
  AND ($2::text[] IS NULL OR state = ANY($2::text[]))
  AND ($6::text IS NULL OR schedule = $6)
  AND ($3::timestamptz IS NULL OR (created_at, stream_id) < ($3::timestamptz, $4::uuid))
ORDER BY created_at DESC, stream_id DESC
LIMIT $5;

-- name: unfinished_runs
-- The runs not ended, with their steps: what the workflow runtime sweeps.
SELECT stream_id, state, steps FROM workflow_runs WHERE state IN ('running', 'cancelling');

-- name: job_states
-- Some jobs' states.
SELECT id, state FROM jobs WHERE id = ANY($1::uuid[]);
