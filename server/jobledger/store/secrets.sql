-- Named queries of secrets: the encrypted values kept beside the log, and the list.

-- name: insert_value
-- Store one version's ciphertext (in the append's transaction).
INSERT INTO secret_values (project, name, version, key_id, ciphertext)
VALUES ($1, $2, $3, $4, $5);

-- name: delete_values
-- Remove every stored version of a secret (in the append of its SecretDeleted).
DELETE FROM secret_values WHERE project = $1 AND name = $2;

-- name: stored_versions
-- The versions stored of some secrets, given as parallel arrays of projects and names.
SELECT v.project, v.name, array_agg(v.version ORDER BY v.version) AS versions
FROM secret_values v
JOIN unnest($1::text[], $2::text[]) AS k(project, name)
  ON v.project = k.project AND v.name = k.name
GROUP BY v.project, v.name;

-- name: get_values
-- Some versions' ciphertexts: parallel arrays of projects, names and versions.
SELECT v.project, v.name, v.version, v.key_id, v.ciphertext
FROM secret_values v
JOIN unnest($1::text[], $2::text[], $3::int[]) AS k(project, name, version)
  ON v.project = k.project AND v.name = k.name AND v.version = k.version;

-- name: all_values_for_update
-- Every stored ciphertext, locked: a key rotation rewrites them all in one transaction.
SELECT project, name, version, key_id, ciphertext FROM secret_values
ORDER BY project, name, version
FOR UPDATE;

-- name: update_value
-- A version re-encrypted under another key.
UPDATE secret_values SET key_id = $4, ciphertext = $5
WHERE project = $1 AND name = $2 AND version = $3;

-- name: list_secrets
-- A project's live secrets, by name (never a value).
SELECT name, version, fingerprint, updated_by, updated_at FROM secrets
WHERE project = $1 ORDER BY name;
