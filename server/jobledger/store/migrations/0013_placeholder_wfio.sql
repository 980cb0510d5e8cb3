-- PLACEHOLDER on branch wfio only: migration numbers must be contiguous, and 0013 is
-- helper wfcore's (workflow_run, step). DELETE this file when merging wfcore's 0013.
SELECT 1;
