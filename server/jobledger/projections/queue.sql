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
