-- Named queries of retention (issue 19): pruning finished jobs' output lines and usage
-- samples after their project's retention period.

-- name: retention_projects
-- Every project that has jobs (a skip scan of the jobs_finished index: one probe per
-- project, however many jobs) with the days its finished jobs' output is kept ($1: the
-- server's default for a project without its own; 0: forever).
WITH RECURSIVE p AS (
    (SELECT project FROM jobs WHERE finished_at IS NOT NULL ORDER BY project LIMIT 1)
    UNION ALL
    SELECT (SELECT j.project FROM jobs j
            WHERE j.finished_at IS NOT NULL AND j.project > p.project
            ORDER BY j.project LIMIT 1)
    FROM p WHERE p.project IS NOT NULL
)
SELECT p.project AS name, coalesce(pr.retention_days, $1::int) AS days
FROM p LEFT JOIN projects pr ON pr.name = p.project
WHERE p.project IS NOT NULL
ORDER BY p.project;

-- name: retention_cursor_ensure
-- A project's prune cursor exists (before it is locked: a row to lock).
INSERT INTO output_retention (project) VALUES ($1) ON CONFLICT (project) DO NOTHING;

-- name: retention_cursor_lock
-- Take a project's prune cursor for this transaction, unless another process holds it
-- (no row: skip the project; one process prunes a project at a time), with the database's
-- time now.
SELECT finished_at, job_id, clock_timestamp() AS now
FROM output_retention WHERE project = $1
FOR UPDATE SKIP LOCKED;

-- name: retention_prune_batch
-- The next finished jobs of a project (after the cursor $2/$3, finished before $4, at most
-- $5 of them) with their output lines and usage samples deleted: per job, what went.
WITH due AS (
    SELECT id, attempt, finished_at FROM jobs
    WHERE project = $1 AND finished_at IS NOT NULL
      AND (finished_at, id) > ($2::timestamptz, $3::uuid)
      AND finished_at < $4::timestamptz
      AND state IN ('succeeded', 'failed', 'cancelled')
    ORDER BY finished_at, id
    LIMIT $5
), logs AS (
    DELETE FROM job_logs l USING due WHERE l.job_id = due.id
    RETURNING l.job_id, l.last_seq - l.first_seq + 1 AS lines, l.bytes, l.last_seq
), samples AS (
    DELETE FROM job_usage_samples s USING due WHERE s.job_id = due.id
    RETURNING s.job_id
)
SELECT d.id, d.attempt, d.finished_at,
       coalesce(lg.lines, 0)::bigint AS lines, coalesce(lg.bytes, 0)::bigint AS bytes,
       coalesce(lg.last_seq, 0)::bigint AS last_seq, coalesce(sm.samples, 0)::bigint AS samples
FROM due d
LEFT JOIN (SELECT job_id, sum(lines) AS lines, sum(bytes) AS bytes, max(last_seq) AS last_seq
           FROM logs GROUP BY job_id) lg ON lg.job_id = d.id
LEFT JOIN (SELECT job_id, count(*) AS samples FROM samples GROUP BY job_id) sm
    ON sm.job_id = d.id
ORDER BY d.finished_at, d.id;

-- name: retention_markers
-- The line each pruned job keeps: one batch after its last line.
INSERT INTO job_logs (job_id, first_seq, last_seq, attempt, lines, bytes)
SELECT m.job_id, m.seq, m.seq, m.attempt, m.lines, m.bytes
FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::json[], $5::int[])
    AS m(job_id, seq, attempt, lines, bytes);

-- name: retention_cursor_move
-- Move a project's cursor past the last job of a batch.
UPDATE output_retention
SET finished_at = $2, job_id = $3, jobs = jobs + $4, updated_at = clock_timestamp()
WHERE project = $1;
