-- Named queries, loaded by store/queries.py. A block starts with `-- name: NAME` and a
-- line saying what it does; parameters are always bound, never formatted in.

-- name: append_events
-- Insert the events of one append (one or more streams). The unique (stream_id, version)
-- rejects a second writer of the same version, and the hash-chain trigger an event whose
-- predecessor is missing (SQLSTATE JL409: a writer ahead of the stream), so the expected
-- versions hold (I4). Rows go in in array order, each stream's in version order, so the
-- trigger finds an event's predecessor even within this statement.
INSERT INTO events (event_id, stream_id, version, type, schema_version, data, meta, stream_type)
SELECT e.event_id, e.stream_id, e.version, e.type, e.schema_version, e.data, e.meta,
       e.stream_type
FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::smallint[], $6::jsonb[],
            $7::jsonb[], $8::text[])
    WITH ORDINALITY AS e(stream_id, event_id, version, type, schema_version, data, meta,
                         stream_type, n)
ORDER BY e.n
RETURNING stream_id, version, position, recorded_at;

-- name: read_stream
-- The events of one stream after a version, in stream order.
SELECT event_id, stream_id, version, position, type, schema_version, data, meta, recorded_at,
       stream_type
FROM events
WHERE stream_id = $1 AND version > $2
ORDER BY version;

-- name: read_streams
-- The events of several streams, grouped by stream in version order.
SELECT event_id, stream_id, version, position, type, schema_version, data, meta, recorded_at,
       stream_type
FROM events
WHERE stream_id = ANY($1::uuid[])
ORDER BY stream_id, version;

-- name: read_all
-- Gap-safe page of the global log after a (txid, position) checkpoint (I5): rows of
-- transactions that may still commit are never returned, so nothing is skipped later.
SELECT event_id, stream_id, version, position, type, schema_version, data, meta, recorded_at,
       stream_type, txid::text::bigint AS txid
FROM events
WHERE (txid, position) > ($1::bigint::text::xid8, $2::bigint)
  AND txid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY txid, position
LIMIT $3;

-- name: notify
-- Wake listeners; the payload carries ids only, never job data.
SELECT pg_notify($1, $2);
