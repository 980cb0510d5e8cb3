-- Named queries of job output (logs) and usage samples.

-- name: append_log_batch
-- Store one batch of a job's lines and announce it (ids only) in the same statement: one row,
-- stored = true. A batch whose first line is stored already (a retry after the reply to a
-- committed insert was lost) is left as it is: one row, stored = false, with that batch's
-- attempt and last_seq for the caller to compare (the statement's snapshot does not see the
-- row it inserts itself, so the two halves never both answer).
WITH batch AS (
    INSERT INTO job_logs (job_id, first_seq, last_seq, attempt, lines, bytes)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (job_id, first_seq) DO NOTHING
    RETURNING job_id, attempt, last_seq
), notified AS (
    SELECT pg_notify($7, json_build_object('job_id', job_id, 'last_seq', last_seq)::text)
    FROM batch
)
SELECT true AS stored, attempt, last_seq FROM batch WHERE (SELECT count(*) FROM notified) = 1
UNION ALL
SELECT false, attempt, last_seq FROM job_logs WHERE job_id = $1 AND first_seq = $2;

-- name: read_log_batches
-- A job's batches holding lines after a seq, in order.
SELECT first_seq, last_seq, attempt, lines
FROM job_logs
WHERE job_id = $1 AND last_seq > $2
ORDER BY first_seq
LIMIT $3;

-- name: read_log_batches_bounded
-- Like read_log_batches, but only as many batches as start within $4 bytes of text (at
-- least one): what a reader with a memory budget fetches.
SELECT first_seq, last_seq, attempt, lines
FROM (
    SELECT first_seq, last_seq, attempt, lines, bytes,
           sum(bytes) OVER (ORDER BY first_seq) AS upto
    FROM job_logs
    WHERE job_id = $1 AND last_seq > $2
    ORDER BY first_seq
    LIMIT $3
) b
WHERE upto - bytes < $4
ORDER BY first_seq;

-- name: last_attempt_batches
-- Batches of one attempt of a job before a seq, newest first (to find its last lines).
SELECT first_seq, lines
FROM job_logs
WHERE job_id = $1 AND attempt = $2 AND first_seq < $3
ORDER BY first_seq DESC
LIMIT $4;

-- name: last_log_seq
-- The highest line number stored for a job (0 when none).
SELECT coalesce(max(last_seq), 0) FROM job_logs WHERE job_id = $1;

-- name: append_usage_samples
-- Store CPU/memory samples of a job.
INSERT INTO job_usage_samples (job_id, attempt, sampled_at, cpu_percent, memory_bytes)
SELECT $1, $2, s.sampled_at, s.cpu_percent, s.memory_bytes
FROM unnest($3::timestamptz[], $4::float8[], $5::bigint[]) AS s(sampled_at, cpu_percent, memory_bytes)
ON CONFLICT DO NOTHING;

-- name: read_usage_samples
-- A job's samples in time order.
SELECT attempt, sampled_at, cpu_percent, memory_bytes
FROM job_usage_samples WHERE job_id = $1 ORDER BY sampled_at;
