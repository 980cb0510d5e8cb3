-- jobledger database schema: the one place tables are defined.
-- Applied idempotently (`jobledger migrate`, and at every `serve` start) under an advisory
-- lock, so every statement here must be safe to run again on an up-to-date database.

-- The event log: the source of truth (design map I2). One stream per job.
CREATE TABLE IF NOT EXISTS events (
    -- Global order of insertion. Not commit order: readers of the whole log go by (txid, position).
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      uuid        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    type           text        NOT NULL,
    schema_version smallint    NOT NULL DEFAULT 1,
    data           jsonb       NOT NULL,
    meta           jsonb       NOT NULL,
    -- The database's clock, never the client's (I6).
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The writing transaction: catch-up readers only read below the oldest running one (I5).
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- Optimistic concurrency (I4): a second writer of the same version fails here.
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX IF NOT EXISTS events_txid_position ON events (txid, position);

-- Append-only in the database itself (I3), not by convention.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE OR REPLACE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE OR REPLACE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- Inline projection of each job's current state, kept in the append transaction.
-- Rebuildable from the log at any time (`jobledger replay rebuild`).
CREATE TABLE IF NOT EXISTS jobs (
    id                  uuid        PRIMARY KEY,
    project             text        NOT NULL,
    state               text        NOT NULL,
    spec                jsonb       NOT NULL,
    priority            integer     NOT NULL,
    labels              jsonb       NOT NULL,
    tags                text[]      NOT NULL,
    concurrency_key     text,
    idempotency_key     text,
    submitted_by        text        NOT NULL,
    attempt             integer     NOT NULL,
    queue_reason        text,
    scheduled_for       timestamptz,
    worker_id           text,
    exit_code           integer,
    failure_reason      text,
    message             text,
    usage               jsonb,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    started_at          timestamptz,
    finished_at         timestamptz,
    cancel_requested_at timestamptz,
    cancel_requested_by text,
    version             integer     NOT NULL,
    last_position       bigint      NOT NULL
);
-- One job per idempotency key and project; a second submit finds the first job.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (project, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- List views: newest first, optionally by project or state; keyset pagination on (created_at, id).
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_project_created ON jobs (project, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_labels ON jobs USING gin (labels jsonb_path_ops);
