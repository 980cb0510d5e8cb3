-- Workflows (issue 16): a step's child job records its run and step name; the
-- `workflow_runs` table is the state projection of the `workflow` streams, one row per run
-- (its steps' states, job ids and times as json: verify compares its text).
ALTER TABLE jobs
    ADD COLUMN workflow_run uuid,
    ADD COLUMN step text;
CREATE INDEX jobs_workflow_run ON jobs (workflow_run) WHERE workflow_run IS NOT NULL;

CREATE TABLE workflow_runs (
    stream_id    uuid        PRIMARY KEY,
    project      text        NOT NULL,
    state        text        NOT NULL,
    -- The spec as submitted and each step's summary, in spec order.
    spec         json        NOT NULL,
    steps        json        NOT NULL,
    rerun_of     uuid,
    submitted_by text        NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    version      integer     NOT NULL
);
CREATE INDEX workflow_runs_project_created ON workflow_runs (project, created_at DESC, stream_id DESC);
-- Runs not finished: what every workflow runtime sweeps.
CREATE INDEX workflow_runs_unfinished ON workflow_runs (updated_at)
    WHERE state IN ('running', 'cancelling');
