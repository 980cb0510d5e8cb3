-- Issue 19 (retention): how long a project keeps its finished jobs' output lines and usage
-- samples (NULL: the server's --retention-days; 0: forever), where the background prune of
-- each project has got to, and the index it walks finished jobs by.
ALTER TABLE projects ADD COLUMN retention_days integer;
CREATE TABLE output_retention (
    project     text        PRIMARY KEY,
    -- The last job pruned, in (finished_at, id) order: the next batch starts after it.
    finished_at timestamptz NOT NULL DEFAULT '-infinity',
    job_id      uuid        NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    jobs        bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX jobs_finished ON jobs (project, finished_at, id) WHERE finished_at IS NOT NULL;
