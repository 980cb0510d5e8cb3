-- Secrets (issue 14): a project's named values, versioned, kept encrypted beside the log.
-- `secrets` is the state projection of the `secret` streams (one row per live secret; a
-- deleted one has none); `secret_values` holds each stored version's ciphertext (AES-GCM,
-- with the id of the key that made it), written in the append's transaction and removed
-- with the secret. The events carry a keyed fingerprint only, never a value.
CREATE TABLE secrets (
    stream_id   uuid        PRIMARY KEY,
    project     text        NOT NULL,
    name        text        NOT NULL,
    version     integer     NOT NULL,
    fingerprint text        NOT NULL,
    updated_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL,
    UNIQUE (project, name)
);

CREATE TABLE secret_values (
    project    text    NOT NULL,
    name       text    NOT NULL,
    version    integer NOT NULL,
    key_id     text    NOT NULL,
    -- The 12-byte nonce, then the ciphertext and its tag.
    ciphertext bytea   NOT NULL,
    PRIMARY KEY (project, name, version)
);

-- The secret versions a job's current attempt resolved at its start, by environment
-- variable ({"DB_PASSWORD": {"secret": "db-password", "version": 3}}); from JobStarted.
ALTER TABLE jobs ADD COLUMN secrets jsonb NOT NULL DEFAULT '{}';

-- The id of the secrets key a worker holds (NULL: none): only a worker with a key claims
-- jobs whose environment uses secrets.
ALTER TABLE workers ADD COLUMN secrets_key_id text;
