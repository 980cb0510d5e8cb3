-- Named queries of the scheduler: claims, quotas, worker leases.

-- name: claim_candidates
-- Queued jobs this worker may start now, best first, as whole `jobs` rows (the claim decides
-- from them: they are the fold of each stream at `version`, and the append's version check
-- refuses a stale one), with the facts the admission policy (domain/admission.py) decides
-- on: the running counts their quotas are checked against, the limits, the time; and the
-- project's log limit. This is only the prefilter: it may pass a job the policy refuses,
-- never hide one it admits. It is read without waiting for other claims: the claim checks
-- the quotas of the jobs it picks, and that they are still queued, again under their
-- locks (`claim_quotas`). Jobs of a project or concurrency key at its limit are filtered
-- out here, so they cannot crowd the page.
-- Two index-ordered branches: jobs without a time (jobs_ready), and jobs whose time has come
-- (a range of jobs_scheduled, bounded by statement_timestamp(): the volatile
-- clock_timestamp() cannot bound an index scan), so jobs waiting for a later time are never
-- read. The quota checks look up small materialized sets (the projects at their limit,
-- the running count per concurrency key), not joins: whatever the (often stale) statistics
-- of a busy queue say, each branch walks its index in order and stops at the limit; a join
-- let the planner hash every queued job first.
-- $1 worker tags, $2 default project limit, $3 how many, $4 jobs whose outcomes this
-- transaction records (running still, but their slots are free).
-- $5 whether the worker holds the secrets key: without it, jobs whose environment refers
-- to a secret (an object among `spec.env`'s values) are not its candidates.
WITH active AS MATERIALIZED (
    SELECT project, concurrency_key FROM jobs
    WHERE state IN ('running', 'cancelling') AND id <> ALL($4::uuid[])
), by_project AS MATERIALIZED (
    SELECT project, count(*)::int AS n FROM active GROUP BY project
), by_key AS MATERIALIZED (
    SELECT concurrency_key, count(*)::int AS n FROM active
    WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key
), full_projects AS MATERIALIZED (
    -- Projects at their limit (a project without a row has the default one).
    SELECT coalesce(array_agg(name), '{}') AS projects FROM (
        SELECT p.name FROM projects p LEFT JOIN by_project b ON b.project = p.name
        WHERE coalesce(b.n, 0) >= p.max_running_jobs
        UNION
        SELECT b.project FROM by_project b
        WHERE b.n >= $2::int AND NOT EXISTS (SELECT 1 FROM projects p WHERE p.name = b.project)
    ) f
), due AS MATERIALIZED (
    -- The due jobs this worker may take, in jobs_scheduled's order, so that index is the
    -- plan whatever the statistics say (each row is read once: a join of due ids with
    -- jobs made a plan that compared every job with every id, 54 ms a claim at 1,000 due
    -- jobs, 490 ms at 3,000); at most 10,000: a bigger backlog of due jobs is taken
    -- earliest-due first.
    SELECT j.* FROM jobs j
    WHERE j.state = 'queued' AND j.scheduled_for IS NOT NULL
      AND j.scheduled_for <= statement_timestamp()
      AND j.tags <@ $1::text[]
      AND j.project <> ALL((SELECT projects FROM full_projects)::text[])
      AND coalesce((SELECT n FROM by_key k WHERE k.concurrency_key = j.concurrency_key), 0)
          < j.concurrency_limit
      AND ($5::boolean OR NOT jsonb_path_exists(j.spec, '$.env.* ? (@.type() == "object")'))
    ORDER BY j.scheduled_for
    LIMIT 10000
), candidates AS (
    (SELECT j.* FROM jobs j
     WHERE j.state = 'queued' AND j.scheduled_for IS NULL
       AND j.tags <@ $1::text[]
       AND j.project <> ALL((SELECT projects FROM full_projects)::text[])
       AND coalesce((SELECT n FROM by_key k WHERE k.concurrency_key = j.concurrency_key), 0)
           < j.concurrency_limit
       AND ($5::boolean OR NOT jsonb_path_exists(j.spec, '$.env.* ? (@.type() == "object")'))
     ORDER BY j.priority DESC, j.created_at, j.id
     LIMIT $3)
    UNION ALL
    (SELECT d.* FROM due d
     ORDER BY d.priority DESC, d.scheduled_for, d.created_at, d.id
     LIMIT $3)
)
SELECT c.*,
       coalesce(bp.n, 0) AS project_running,
       coalesce(p.max_running_jobs, $2::int) AS project_limit,
       coalesce(bk.n, 0) AS key_running,
       p.log_limit_bytes AS project_log_limit,
       jsonb_path_exists(c.spec, '$.env.* ? (@.type() == "object")') AS uses_secrets,
       statement_timestamp() AS now
FROM candidates c
LEFT JOIN by_project bp ON bp.project = c.project
LEFT JOIN projects p ON p.name = c.project
LEFT JOIN by_key bk ON bk.concurrency_key = c.concurrency_key
ORDER BY c.priority DESC, coalesce(c.scheduled_for, c.created_at), c.created_at, c.id
LIMIT $3;

-- name: claim_quotas
-- Wait for the claim that holds the quota $1 (e.g. 'project:etl'), take those of $2 that no
-- claim holds, then count the running jobs of each quota held, but for those whose outcomes
-- this claim records ($3): rows of (name, running, NULL); and say which of the candidates
-- ($4, read at versions $5) are still queued at those versions: rows of (NULL, NULL, id).
SELECT * FROM claim_quotas($1::text, $2::text[], $3::uuid[], $4::uuid[], $5::int[]);

-- name: try_quota
-- Take a quota's lock ($2, in the lock space $1 of `claim_quotas`: claims.QUOTA_LOCKS) if no
-- other claim holds it.
SELECT pg_try_advisory_xact_lock($1, hashtext($2));

-- name: next_scheduled
-- When the earliest job that waits for its time becomes due (NULL if none does).
SELECT min(scheduled_for) - statement_timestamp() AS wait
FROM jobs WHERE state = 'queued' AND scheduled_for > statement_timestamp();

-- name: register_worker
-- A worker (re)starts: fresh lease, no stop time, its executor taken to answer until it says
-- otherwise (executor_status); $8 the id of the secrets key it holds (NULL: none).
INSERT INTO workers (id, tags, capacity, lease_seconds, executor, hostname, pid, secrets_key_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO UPDATE SET
    tags = EXCLUDED.tags, capacity = EXCLUDED.capacity, lease_seconds = EXCLUDED.lease_seconds,
    secrets_key_id = EXCLUDED.secrets_key_id,
    executor = EXCLUDED.executor, executor_error = NULL,
    hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, started_at = clock_timestamp(),
    heartbeat_at = clock_timestamp(), stopped_at = NULL;

-- name: executor_status
-- Whether a worker's executor answers (NULL) or what is wrong with it.
UPDATE workers SET executor_error = $2 WHERE id = $1;

-- name: ended_jobs
-- Which of these jobs have ended (jobs unknown here are not: they may be another install's).
SELECT id FROM jobs WHERE id = ANY($1::uuid[]) AND state IN ('succeeded', 'failed', 'cancelled');

-- name: known_jobs
-- Which of these jobs this database holds (the others are another install's, on the same
-- engine).
SELECT id FROM jobs WHERE id = ANY($1::uuid[]);

-- name: heartbeat
-- Renew a worker's lease.
UPDATE workers SET heartbeat_at = clock_timestamp() WHERE id = $1;

-- name: worker_stopped
-- A worker shut down cleanly; its containers may still run, to be adopted when it returns.
UPDATE workers SET stopped_at = clock_timestamp() WHERE id = $1;

-- name: lost_jobs
-- Running jobs whose worker's lease has expired (or that no registered worker holds). A
-- lease expires once its last heartbeat is older than the lease and the reaper ($1) has
-- reached the database without a break for longer than the lease ($2 seconds): a database
-- outage stops every heartbeat, and is not held against the workers that could not write.
SELECT j.id, j.attempt, j.worker_id, w.heartbeat_at
FROM jobs j
LEFT JOIN workers w ON w.id = j.worker_id
WHERE j.state IN ('running', 'cancelling')
  AND j.worker_id <> $1
  AND (w.id IS NULL
       OR (w.heartbeat_at < clock_timestamp() - make_interval(secs => w.lease_seconds)
           AND $2::float8 > w.lease_seconds));

-- name: my_active_jobs
-- The jobs this worker holds, and whether a cancel is pending for each.
SELECT id, attempt, state FROM jobs WHERE worker_id = $1 AND state IN ('running', 'cancelling');

-- name: project_log_limit
-- The output limit a project set for its jobs, if any.
SELECT log_limit_bytes FROM projects WHERE name = $1;
