-- Statements of the schema migrator (migrate.py). The migrations themselves are the numbered
-- files in migrations/; a fresh database is made from schema.sql at the repository root.

-- name: has_schema_migrations
-- Whether the database records a version at all (none did before versioned migrations).
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: schema_version
-- The database's version: the highest migration it has had.
SELECT coalesce(max(version), 0) FROM schema_migrations;

-- name: has_events
-- Whether an unversioned database holds jobledger's schema (it is then version 1) or nothing.
SELECT to_regclass('events') IS NOT NULL;

-- name: create_schema_migrations
-- The version table, for a database from before versioned migrations: as schema.sql has it.
CREATE TABLE schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- name: record_migration
-- In the migration's own transaction, so a version is recorded exactly when it is applied.
INSERT INTO schema_migrations (version, name) VALUES ($1, $2);
