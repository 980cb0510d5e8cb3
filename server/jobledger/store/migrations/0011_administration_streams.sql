-- Administration becomes event-sourced (issue 14): projects, service accounts and API tokens
-- are streams of their own, and these tables their projections. A projection row names its
-- stream: `stream_id` (a token's stream id is its own `id`). Rows from before get their
-- streams from the Python step of this migration (store/backfill.py), in its transaction.
ALTER TABLE projects ADD COLUMN stream_id uuid UNIQUE;
-- The fold holds a double: a `real` would read back as another number than the event's.
ALTER TABLE projects ALTER COLUMN submit_rate TYPE double precision;
ALTER TABLE service_accounts ADD COLUMN stream_id uuid UNIQUE;
-- A token's hash is kept beside the log, never in it: a token whose row was rebuilt from an
-- imported log has none (its secret stayed with the old database) and authenticates nothing.
ALTER TABLE api_tokens ALTER COLUMN hash DROP NOT NULL;
