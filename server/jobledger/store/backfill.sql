-- Named queries of the one-time backfill (store/backfill.py): rows of access control written
-- before administration had streams get their events.

-- name: projects_without_stream
-- Projects from before their streams.
SELECT name, max_running_jobs, log_limit_bytes, submit_rate, submit_burst, created_by
FROM projects WHERE stream_id IS NULL ORDER BY created_at, name;

-- name: project_streamed
-- A project's row names its stream; one created by the limits route had no creator.
UPDATE projects SET stream_id = $2, created_by = coalesce(created_by, $3) WHERE name = $1;

-- name: accounts_without_stream
-- Service accounts from before their streams.
SELECT id, project, name, role, created_at, created_by
FROM service_accounts WHERE stream_id IS NULL ORDER BY created_at, id;

-- name: account_streamed
-- A service account's row names its stream.
UPDATE service_accounts SET stream_id = $2 WHERE id = $1;

-- name: tokens_without_stream
-- Tokens from before their streams (a token's stream id is its id), with their account.
SELECT t.id, t.service_account_id, s.project, s.name AS service_account, t.description,
       t.created_at, t.created_by, t.expires_at, t.revoked_at
FROM api_tokens t
LEFT JOIN service_accounts s ON s.id = t.service_account_id
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = t.id)
ORDER BY t.created_at, t.id;
