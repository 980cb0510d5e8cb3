-- Named queries of the queue views: why jobs wait, project limits.

-- name: live_worker_tags
-- Tags of the workers whose lease is current.
SELECT tags FROM workers
WHERE stopped_at IS NULL
  AND heartbeat_at >= clock_timestamp() - make_interval(secs => lease_seconds);

-- name: set_project_limit
-- Set a project's limit on running jobs.
INSERT INTO projects (name, max_running_jobs) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET max_running_jobs = EXCLUDED.max_running_jobs,
    updated_at = clock_timestamp()
RETURNING name, max_running_jobs;

-- name: project_usage
-- A project's limit and how many of its jobs run and wait.
SELECT coalesce((SELECT max_running_jobs FROM projects WHERE name = $1), $2::int) AS max_running_jobs,
       count(*) FILTER (WHERE state IN ('running', 'cancelling'))::int AS running,
       count(*) FILTER (WHERE state = 'queued')::int AS queued
FROM jobs WHERE project = $1;

-- name: running_counts
-- Running jobs per project and per concurrency key, for explaining why jobs wait.
SELECT project, concurrency_key, count(*)::int AS n
FROM jobs WHERE state IN ('running', 'cancelling') GROUP BY project, concurrency_key;

-- name: project_limits
-- The limits of the named projects that have one set.
SELECT name, max_running_jobs FROM projects WHERE name = ANY($1::text[]);
