-- Issue 16 (wfsched): a schedule may fire a workflow. A run records the schedule that
-- started it and the occurrence (NULL: not a schedule's run), for the runs list's
-- `?schedule=` filter and the overlap policy's count of a schedule's unfinished runs.
ALTER TABLE workflow_runs
    ADD COLUMN schedule   text,
    ADD COLUMN occurrence timestamptz;
CREATE INDEX workflow_runs_schedule
    ON workflow_runs (project, schedule, created_at DESC, stream_id DESC) WHERE schedule IS NOT NULL;
