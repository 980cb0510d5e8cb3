-- Issue 18 (round trips): what explains why jobs wait, as one function, so that a submit's
-- write of its rows (projections/jobs.sql `write_jobs`) reads it in the same statement
-- with the same words as the queue views (projections/queue.sql `queue_facts`): running
-- jobs per project and concurrency key, the limits of the named projects, the tags of live
-- workers (apart: those whose executor does not answer; and those that hold the secrets
-- key). PL/pgSQL keeps its plans for the session (a LANGUAGE sql function's five
-- subqueries were planned again at every call).
CREATE FUNCTION queue_facts(named text[]) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
RETURN jsonb_build_object(
    'running', (SELECT coalesce(jsonb_agg(jsonb_build_array(project, concurrency_key, n)), '[]')
                FROM (SELECT project, concurrency_key, count(*)::int AS n FROM jobs
                      WHERE state IN ('running', 'cancelling')
                      GROUP BY project, concurrency_key) c),
    'limits', (SELECT coalesce(jsonb_agg(jsonb_build_array(name, max_running_jobs)), '[]')
               FROM projects WHERE name = ANY(named)),
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
);
END
$$;
