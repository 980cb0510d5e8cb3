-- Named queries of the queue views: why jobs wait, project limits.

-- name: queue_facts
-- What explains why jobs wait, in one round trip: the time, running jobs per project and
-- concurrency key, the limits of the named projects, the tags of live workers (apart: those
-- whose executor does not answer; and those that hold the secrets key).
SELECT clock_timestamp() AS now, jsonb_build_object(
    'running', (SELECT coalesce(jsonb_agg(jsonb_build_array(project, concurrency_key, n)), '[]')
                FROM (SELECT project, concurrency_key, count(*)::int AS n FROM jobs
                      WHERE state IN ('running', 'cancelling')
                      GROUP BY project, concurrency_key) c),
    'limits', (SELECT coalesce(jsonb_agg(jsonb_build_array(name, max_running_jobs)), '[]')
               FROM projects WHERE name = ANY($1::text[])),
    'live_tags', (SELECT coalesce(jsonb_agg(tags), '[]') FROM workers
                  WHERE stopped_at IS NULL AND executor_error IS NULL
                    AND heartbeat_at >= clock_timestamp() - make_interval(secs => lease_seconds)),
    'unavailable_tags', (SELECT coalesce(jsonb_agg(tags), '[]') FROM workers
                         WHERE stopped_at IS NULL AND executor_error IS NOT NULL
                           AND heartbeat_at >= clock_timestamp()
                                               - make_interval(secs => lease_seconds)),
    'keyed_tags', (SELECT coalesce(jsonb_agg(tags), '[]') FROM workers
                   WHERE stopped_at IS NULL AND executor_error IS NULL
                     AND secrets_key_id IS NOT NULL
                     AND heartbeat_at >= clock_timestamp() - make_interval(secs => lease_seconds))
) AS facts;

-- name: queue_depths
-- The queue per project for the metrics (issue 19): queued jobs whose time has come, those
-- waiting for a later time, and the longest wait of a due one in seconds (from when it could
-- start: queued, or its time). Every project is listed (0 when nothing waits). One pass over
-- the queued jobs through the partial indexes the claim uses.
WITH now AS (SELECT clock_timestamp() AS t),
q AS (
    SELECT project,
           count(*) FILTER (WHERE scheduled_for IS NULL OR scheduled_for <= now.t) AS due,
           count(*) FILTER (WHERE scheduled_for > now.t) AS later,
           min(greatest(updated_at, scheduled_for))
               FILTER (WHERE scheduled_for IS NULL OR scheduled_for <= now.t) AS since
    FROM jobs, now
    WHERE state = 'queued'
    GROUP BY project
)
SELECT coalesce(q.project, p.name) AS project,
       coalesce(q.due, 0)::bigint AS due,
       coalesce(q.later, 0)::bigint AS later,
       extract(epoch FROM (SELECT t FROM now) - q.since)::float8 AS oldest_seconds
FROM q FULL JOIN projects p ON p.name = q.project;
