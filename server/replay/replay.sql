-- Named queries of the replay tools (loaded by store/queries.py's loader).

-- name: stream_batch
-- The events of the next streams after a stream id (keyset), every column the verifier
-- needs, each stream in version order. A stream is never cut: $2 bounds streams, not rows.
WITH streams AS (
    SELECT DISTINCT stream_id FROM events
    WHERE $1::uuid IS NULL OR stream_id > $1::uuid
    ORDER BY stream_id
    LIMIT $2
)
SELECT e.event_id, e.stream_id, e.version, e.position, e.type, e.schema_version, e.data,
       e.meta, e.recorded_at, e.hash
FROM events e JOIN streams s USING (stream_id)
ORDER BY e.stream_id, e.version;

-- name: jobs_by_id
-- Projection rows of some jobs.
SELECT * FROM jobs WHERE id = ANY($1::uuid[]);

-- name: orphan_jobs
-- Projection rows with no stream in the log at all.
SELECT j.id FROM jobs j
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = j.id)
ORDER BY j.id;

-- name: log_size
-- Events in the log.
SELECT count(*) FROM events;

-- name: rebuild_state
-- The checkpoint of an unfinished rebuild, if any.
SELECT started_xmin::text::bigint AS started_xmin, after_stream, streams, events,
       (SELECT count(*) FROM events) AS total_events
FROM projection_rebuilds WHERE projection = $1;

-- name: rebuild_begin
-- Record a new rebuild; its start is the oldest transaction still running now.
INSERT INTO projection_rebuilds (projection, started_xmin)
VALUES ($1, pg_snapshot_xmin(pg_current_snapshot()))
ON CONFLICT (projection) DO UPDATE SET
    started_xmin = EXCLUDED.started_xmin, after_stream = NULL, streams = 0, events = 0,
    started_at = clock_timestamp(), updated_at = clock_timestamp();

-- name: rebuild_checkpoint
-- Move the checkpoint past a batch (in the batch's transaction).
UPDATE projection_rebuilds
SET after_stream = $2, streams = streams + $3, events = events + $4,
    updated_at = clock_timestamp()
WHERE projection = $1;

-- name: rebuild_end
-- Forget a finished rebuild.
DELETE FROM projection_rebuilds WHERE projection = $1;

-- name: rebuild_late_streams
-- Streams written by transactions the batches may not have seen (at or after the start).
SELECT DISTINCT stream_id FROM events WHERE txid >= $1::bigint::text::xid8;
