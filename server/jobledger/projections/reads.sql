-- Named queries of the read side that are not one projection's own: project views.

-- name: project_views
-- Projects by name ($1 NULL: all, else that one) with their limits and how many of their
-- jobs run and wait, in one statement.
SELECT p.name, p.max_running_jobs, p.log_limit_bytes, p.submit_rate, p.submit_burst,
       c.running, c.queued, p.retention_days
FROM projects p
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE state IN ('running', 'cancelling'))::int AS running,
           count(*) FILTER (WHERE state = 'queued')::int AS queued
    FROM jobs WHERE project = p.name
) c
WHERE $1::text IS NULL OR p.name = $1
ORDER BY p.name;

-- name: project_usage
-- A project's limits and how many of its jobs run and wait, with the defaults ($2: the
-- running limit) for a project without a row.
SELECT coalesce((SELECT max_running_jobs FROM projects WHERE name = $1), $2::int) AS max_running_jobs,
       (SELECT log_limit_bytes FROM projects WHERE name = $1) AS log_limit_bytes,
       (SELECT submit_rate FROM projects WHERE name = $1) AS submit_rate,
       (SELECT submit_burst FROM projects WHERE name = $1) AS submit_burst,
       (SELECT retention_days FROM projects WHERE name = $1) AS retention_days,
       count(*) FILTER (WHERE state IN ('running', 'cancelling'))::int AS running,
       count(*) FILTER (WHERE state = 'queued')::int AS queued
FROM jobs WHERE project = $1;
