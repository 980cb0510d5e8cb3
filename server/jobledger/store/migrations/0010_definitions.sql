-- Issue 14: definitions (versioned job templates with parameters) and environments (shared
-- settings) are named streams of their own; these are their state projections, one row
-- per live one (a deleted one has none), rebuilt from the log by `replay rebuild`.
-- `content` is the current version's, `json` so that it reads back exactly as written.
CREATE TABLE definitions (
    stream_id  uuid        PRIMARY KEY,
    project    text        NOT NULL,
    name       text        NOT NULL,
    version    integer     NOT NULL,
    content    json        NOT NULL,
    disabled   boolean     NOT NULL,
    updated_by text        NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (project, name)
);
CREATE TABLE environments (
    stream_id  uuid        PRIMARY KEY,
    project    text        NOT NULL,
    name       text        NOT NULL,
    version    integer     NOT NULL,
    content    json        NOT NULL,
    updated_by text        NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (project, name)
);

-- A job made from a definition records which one and which version (to list by), and what
-- its spec was resolved from (versions, parameters, the request as submitted). Jobs from
-- before have none.
ALTER TABLE jobs
    ADD COLUMN definition text,
    ADD COLUMN definition_version integer,
    ADD COLUMN source jsonb;
CREATE INDEX jobs_definition_created
    ON jobs (definition, created_at DESC, id DESC) WHERE definition IS NOT NULL;
