-- Named queries of the replay tools (loaded by store/queries.py's loader).

-- name: stream_batch
-- The events of the next streams after a stream id (keyset), every column the verifier
-- needs, each stream in version order; $3: only streams of that kind (NULL: all). A stream
-- is never cut: $2 bounds streams, not rows.
WITH streams AS (
    SELECT DISTINCT stream_id FROM events
    WHERE ($1::uuid IS NULL OR stream_id > $1::uuid)
      AND ($3::text IS NULL OR stream_type = $3::text)
    ORDER BY stream_id
    LIMIT $2
)
SELECT e.event_id, e.stream_id, e.version, e.position, e.type, e.schema_version, e.data,
       e.meta, e.recorded_at, e.hash, e.stream_type
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
SELECT started_xmin::text::bigint AS started_xmin, after_stream, streams, events
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
SELECT DISTINCT stream_id FROM events
WHERE txid >= $1::bigint::text::xid8 AND stream_type = 'job';

-- name: export
-- The log in position order, optionally only one project's jobs (by their JobSubmitted
-- event: the log answers for itself) and a time range.
SELECT position, event_id, stream_id, version, type, schema_version, data, meta,
       recorded_at, hash, stream_type
FROM events
WHERE ($1::text IS NULL OR stream_id IN (
          SELECT s.stream_id FROM events s
          WHERE s.type = 'JobSubmitted' AND s.data -> 'spec' ->> 'project' = $1::text))
  AND ($2::timestamptz IS NULL OR recorded_at >= $2::timestamptz)
  AND ($3::timestamptz IS NULL OR recorded_at < $3::timestamptz)
ORDER BY position;

-- name: import_events
-- Insert exported events with their positions, ids and times. As in append_events, the
-- hash-chain trigger refuses an event whose predecessor is missing (SQLSTATE JL409).
INSERT INTO events (position, event_id, stream_id, version, type, schema_version, data, meta,
                    recorded_at, stream_type)
OVERRIDING SYSTEM VALUE
SELECT e.position, e.event_id, e.stream_id, e.version, e.type, e.schema_version, e.data,
       e.meta, e.recorded_at, e.stream_type
FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::smallint[],
            $7::jsonb[], $8::jsonb[], $9::timestamptz[], $10::text[])
    WITH ORDINALITY AS e(position, event_id, stream_id, version, type, schema_version, data,
                         meta, recorded_at, stream_type, n)
ORDER BY e.n
RETURNING position, hash;

-- name: import_done
-- Continue the position counter after the imported events.
SELECT setval(pg_get_serial_sequence('events', 'position'), max(position)) FROM events;

-- name: stream_until
-- One stream's events up to a position or a time (time travel).
SELECT event_id, stream_id, version, position, type, schema_version, data, meta, recorded_at,
       stream_type
FROM events
WHERE stream_id = $1
  AND ($2::bigint IS NULL OR position <= $2::bigint)
  AND ($3::timestamptz IS NULL OR recorded_at <= $3::timestamptz)
ORDER BY version;

-- name: now_checkpoint
-- The checkpoint of "everything committed so far": a tail from here sees only what follows.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1 AS txid;

-- name: one_stream
-- One stream's events, every column the verifier needs, in version order (the one-stream
-- verify of the dashboard's "history verified" mark).
SELECT event_id, stream_id, version, position, type, schema_version, data, meta, recorded_at,
       hash, stream_type
FROM events WHERE stream_id = $1
ORDER BY version;

-- name: streams_until
-- Some streams' events up to a time (time travel of a page of the job list), each stream
-- in version order.
SELECT event_id, stream_id, version, position, type, schema_version, data, meta, recorded_at,
       stream_type
FROM events
WHERE stream_id = ANY($1::uuid[]) AND recorded_at <= $2::timestamptz
ORDER BY stream_id, version;

-- Issue 19: `replay archive`.

-- name: archive_candidates
-- The next jobs (by id, after $2) that ended before $1 and still have events in the log.
-- Not the jobs of a schedule's recent occurrences: the scheduler creates those again when
-- their streams are missing from the log (scheduleservice.ensure_jobs). Not a workflow
-- run's step jobs either: they go with their run (archive_run_candidates).
SELECT j.id FROM jobs j
WHERE j.finished_at < $1 AND ($2::uuid IS NULL OR j.id > $2::uuid)
  AND j.workflow_run IS NULL
  AND EXISTS (SELECT 1 FROM events e WHERE e.stream_id = j.id AND e.version = 1)
  AND NOT EXISTS (SELECT 1 FROM schedules s WHERE j.id = ANY(s.recent_job_ids))
ORDER BY j.id
LIMIT $3;

-- name: archive_run_candidates
-- The next workflow runs (by id, after $2) that ended before $1, still in the log, whose
-- step jobs all ended before $1 too, with those of their step jobs still in the log. Not a
-- schedule's recent run (`recent_job_ids` holds runs' ids too).
SELECT r.stream_id AS id,
       ARRAY(SELECT j.id FROM jobs j
             WHERE j.workflow_run = r.stream_id
               AND EXISTS (SELECT 1 FROM events e WHERE e.stream_id = j.id AND e.version = 1)
             ORDER BY j.id) AS jobs
FROM workflow_runs r
WHERE r.finished_at < $1 AND ($2::uuid IS NULL OR r.stream_id > $2::uuid)
  AND EXISTS (SELECT 1 FROM events e WHERE e.stream_id = r.stream_id AND e.version = 1)
  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_run = r.stream_id
                  AND (j.finished_at IS NULL OR j.finished_at >= $1))
  AND NOT EXISTS (SELECT 1 FROM schedules s WHERE r.stream_id = ANY(s.recent_job_ids))
ORDER BY r.stream_id
LIMIT $3;

-- name: archive_events
-- Every event of some streams, as `export` writes them, in position order.
SELECT position, event_id, stream_id, version, type, schema_version, data, meta,
       recorded_at, hash, stream_type
FROM events WHERE stream_id = ANY($1::uuid[])
ORDER BY position;

-- name: archive_delete
-- Remove archived streams; the guard checks the checkpoint named in
-- jobledger.archive_checkpoint (set by the same transaction) lists exactly them.
DELETE FROM events WHERE stream_id = ANY($1::uuid[]);

-- name: archive_name_checkpoint
SELECT set_config('jobledger.archive_checkpoint', $1, true);

-- name: archived_states
-- The final states archive checkpoints keep of some streams of kind $2 (the latest
-- checkpoint wins; a stream its checkpoint gives no kind is a job).
SELECT DISTINCT ON (s.key) s.key::uuid AS stream_id, s.value AS state
FROM events c, jsonb_each(c.data -> 'states') s
WHERE c.stream_type = 'archive' AND c.type = 'StreamsArchived'
  AND ($1::uuid[] IS NULL OR s.key::uuid = ANY($1::uuid[]))
  AND coalesce(c.data -> 'kinds' ->> s.key, 'job') = $2::text
ORDER BY s.key, c.position DESC;

-- name: archived_at
-- The latest archive checkpoint of one stream ($1: its id as text): where its events went.
SELECT c.event_id, c.position, c.recorded_at, c.data ->> 'file' AS file,
       c.data ->> 'sha256' AS sha256, (c.data ->> 'before')::timestamptz AS before,
       coalesce(c.data -> 'kinds' ->> $1::text, 'job') AS kind,
       c.data -> 'states' -> $1::text AS state
FROM events c
WHERE c.stream_type = 'archive' AND c.type = 'StreamsArchived'
  AND c.data -> 'states' ? $1::text
ORDER BY c.position DESC
LIMIT 1;

-- name: archive_checkpoints
-- Every archive checkpoint, oldest first.
SELECT position, stream_id, data FROM events
WHERE stream_type = 'archive' AND type = 'StreamsArchived'
ORDER BY position;

-- name: archived_left
-- Streams a checkpoint lists that still have events in the log (the guard forbids it).
SELECT DISTINCT e.stream_id FROM events e WHERE e.stream_id = ANY($1::uuid[]);
