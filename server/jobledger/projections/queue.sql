-- Named queries of the queue views: why jobs wait, project limits.

-- name: queue_facts
-- What explains why jobs wait, in one round trip: the time, and the `queue_facts` function's
-- running jobs per project and concurrency key, limits of the named projects, and tags of
-- live workers (schema.sql; a submit's `write_jobs` reads the same in its statement).
SELECT clock_timestamp() AS now, queue_facts($1::text[]) AS facts;

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
