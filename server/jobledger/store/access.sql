-- Named queries of access control: projects, service accounts, API tokens.

-- name: tokens_by_hash
-- The tokens with these hashes and who holds each.
SELECT t.id AS token_id, t.revoked_at, t.hash,
       t.last_used_at IS NULL OR t.last_used_at < clock_timestamp() - interval '1 minute'
           AS stale_use,
       t.expires_at IS NOT NULL AND t.expires_at <= clock_timestamp() AS expired,
       s.id AS service_account_id, s.project, s.name, s.role
FROM api_tokens t
LEFT JOIN service_accounts s ON s.id = t.service_account_id
WHERE t.hash = ANY($1::bytea[]);

-- name: touch_tokens
-- Remember when tokens were last used (the caller does it at most once a minute).
UPDATE api_tokens SET last_used_at = clock_timestamp() WHERE id = ANY($1::uuid[]);

-- name: admin_token_count
-- How many live server-wide admin tokens exist.
SELECT count(*) FROM api_tokens WHERE service_account_id IS NULL AND revoked_at IS NULL;

-- name: insert_token
-- Store a new token's hash; $6 its lifetime in seconds by the database's clock (NULL: none).
INSERT INTO api_tokens (id, service_account_id, hash, description, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5, clock_timestamp() + make_interval(secs => $6::int))
RETURNING id, description, created_at, created_by, expires_at, revoked_at, last_used_at;

-- name: create_project
-- Create a project (fails if the name is taken).
INSERT INTO projects (name, max_running_jobs, log_limit_bytes, created_by)
VALUES ($1, $2, $3, $4)
RETURNING name;

-- name: project_exists
-- Whether a project has been created.
SELECT EXISTS (SELECT 1 FROM projects WHERE name = $1);

-- name: existing_projects
-- Which of these projects exist.
SELECT name FROM projects WHERE name = ANY($1::text[]);

-- name: create_service_account
-- Create a service account in a project (fails if the name is taken there).
INSERT INTO service_accounts (id, project, name, role, created_by)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, project, name, role, created_at, created_by;

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

-- name: revoke_token
-- Revoke a token of a project; returns it if it existed there.
UPDATE api_tokens t SET revoked_at = coalesce(t.revoked_at, clock_timestamp())
FROM service_accounts s
WHERE t.id = $1 AND s.id = t.service_account_id AND s.project = $2
RETURNING t.id, t.description, t.created_at, t.created_by, t.expires_at, t.revoked_at,
          t.last_used_at;

-- name: project_rate
-- A project's submit rate settings (NULL: the server's default).
SELECT submit_rate, submit_burst FROM projects WHERE name = $1;

-- name: set_project_limits
-- Set a project's limits; a NULL leaves that limit as it is ($4: the default running limit).
INSERT INTO projects (name, max_running_jobs, log_limit_bytes, submit_rate, submit_burst)
VALUES ($1, coalesce($2, $4::int), $3, $5, $6)
ON CONFLICT (name) DO UPDATE SET
    max_running_jobs = coalesce($2, projects.max_running_jobs),
    log_limit_bytes = coalesce($3, projects.log_limit_bytes),
    submit_rate = coalesce($5, projects.submit_rate),
    submit_burst = coalesce($6, projects.submit_burst),
    updated_at = clock_timestamp();
