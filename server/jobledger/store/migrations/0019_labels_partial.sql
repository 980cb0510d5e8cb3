-- Issue 18 (engine speed): the labels index holds only jobs that have labels. A job without
-- any cannot match a label filter, yet each of its writes (the submit, every transition:
-- a non-HOT update enters every index) added an entry to the GIN index's pending list:
-- 177 bytes of WAL per write, measured with pg_walinspect. Label filters say
-- `labels <> '{}'` too, so that this index serves them.
DROP INDEX jobs_labels;
CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops) WHERE labels <> '{}'::jsonb;
