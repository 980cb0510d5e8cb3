-- Named queries of the queue views: why jobs wait, project limits.

-- name: set_project_limit
-- Set a project's limits; a NULL leaves that limit as it is.
INSERT INTO projects (name, max_running_jobs, log_limit_bytes, submit_rate, submit_burst)
VALUES ($1, coalesce($2, $4::int), $3, $5, $6)
ON CONFLICT (name) DO UPDATE SET
    max_running_jobs = coalesce($2, projects.max_running_jobs),
    log_limit_bytes = coalesce($3, projects.log_limit_bytes),
    submit_rate = coalesce($5, projects.submit_rate),
    submit_burst = coalesce($6, projects.submit_burst),
    updated_at = clock_timestamp()
RETURNING name;

-- name: project_usage
-- A project's limit and how many of its jobs run and wait.
SELECT coalesce((SELECT max_running_jobs FROM projects WHERE name = $1), $2::int) AS max_running_jobs,
       (SELECT log_limit_bytes FROM projects WHERE name = $1) AS log_limit_bytes,
       (SELECT submit_rate FROM projects WHERE name = $1) AS submit_rate,
       (SELECT submit_burst FROM projects WHERE name = $1) AS submit_burst,
       count(*) FILTER (WHERE state IN ('running', 'cancelling'))::int AS running,
       count(*) FILTER (WHERE state = 'queued')::int AS queued
FROM jobs WHERE project = $1;

-- name: queue_facts
-- What explains why jobs wait, in one round trip: the time, running jobs per project and
-- concurrency key, the limits of the named projects, the tags of live workers.
SELECT clock_timestamp() AS now, jsonb_build_object(
    'running', (SELECT coalesce(jsonb_agg(jsonb_build_array(project, concurrency_key, n)), '[]')
                FROM (SELECT project, concurrency_key, count(*)::int AS n FROM jobs
                      WHERE state IN ('running', 'cancelling')
                      GROUP BY project, concurrency_key) c),
    'limits', (SELECT coalesce(jsonb_agg(jsonb_build_array(name, max_running_jobs)), '[]')
               FROM projects WHERE name = ANY($1::text[])),
    'live_tags', (SELECT coalesce(jsonb_agg(tags), '[]') FROM workers
                  WHERE stopped_at IS NULL
                    AND heartbeat_at >= clock_timestamp() - make_interval(secs => lease_seconds))
) AS facts;
