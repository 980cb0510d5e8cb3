-- Named queries of access control: projects, service accounts, API tokens.

-- name: tokens_by_hash
-- The tokens with these hashes and who holds each. A job's own token also counts as expired
-- once its job no longer runs (should the worker's revoke be late or lost).
SELECT t.id AS token_id, t.revoked_at, t.hash, t.expires_at,
       t.last_used_at IS NULL OR t.last_used_at < clock_timestamp() - interval '1 minute'
           AS stale_use,
       (t.expires_at IS NOT NULL AND t.expires_at <= clock_timestamp())
           OR (t.job_id IS NOT NULL AND coalesce(j.state NOT IN ('running', 'cancelling'), true))
           AS expired,
       s.id AS service_account_id, s.project, s.name, s.role, t.job_id
FROM api_tokens t
LEFT JOIN service_accounts s ON s.id = t.service_account_id
LEFT JOIN jobs j ON j.id = t.job_id
WHERE t.hash = ANY($1::bytea[]);

-- name: touch_tokens
-- Remember when tokens were last used (the caller does it at most once a minute).
UPDATE api_tokens SET last_used_at = clock_timestamp() WHERE id = ANY($1::uuid[]);

-- name: admin_token_count
-- How many live server-wide admin tokens exist.
SELECT count(*) FROM api_tokens WHERE service_account_id IS NULL AND revoked_at IS NULL;

-- name: project_exists
-- Whether a project has been created.
SELECT EXISTS (SELECT 1 FROM projects WHERE name = $1);

-- name: existing_projects
-- Which of these projects exist.
SELECT name FROM projects WHERE name = ANY($1::text[]);

-- name: list_service_accounts
-- A project's service accounts, by name.
SELECT id, project, name, role, created_at, created_by
FROM service_accounts WHERE project = $1 ORDER BY name;

-- name: service_account
-- One service account of a project, by name.
SELECT id, project, name, role, created_at, created_by
FROM service_accounts WHERE project = $1 AND name = $2;

-- name: list_tokens
-- A service account's tokens (never their secrets).
SELECT id, description, created_at, created_by, expires_at, revoked_at, last_used_at
FROM api_tokens WHERE service_account_id = $1 ORDER BY created_at;

-- name: project_rate
-- A project's submit rate settings (NULL: the server's default).
SELECT submit_rate, submit_burst FROM projects WHERE name = $1;

-- name: expires_at
-- When a token issued now expires, by the database's clock: now + $1 seconds.
SELECT clock_timestamp() + make_interval(secs => $1::int);

-- name: set_token_hash
-- Keep a new token's hash beside the log (its row is the projection of TokenIssued).
UPDATE api_tokens SET hash = $2 WHERE id = $1;

-- name: token_last_used
-- When a token was last used (operational, not an event).
SELECT last_used_at FROM api_tokens WHERE id = $1;

-- name: live_job_tokens
-- A job's own tokens that are not revoked yet, with their project (issue 16).
SELECT t.id, s.project FROM api_tokens t
JOIN service_accounts s ON s.id = t.service_account_id
WHERE t.job_id = $1 AND t.revoked_at IS NULL;

