-- Issue 16 (wftoken): a running job is given an API token for its attempt, and may submit
-- children with it. A job records the job whose token submitted it (`parent_job`, listed by
-- `GET /api/v1/jobs?parent_job=ID`) and the job it reruns (`rerun_of`); a token records the
-- job it was issued for (`job_id`: it works only while that job runs).
ALTER TABLE jobs
    ADD COLUMN parent_job uuid,
    ADD COLUMN rerun_of uuid;
CREATE INDEX jobs_parent_job_created
    ON jobs (parent_job, created_at DESC, id DESC) WHERE parent_job IS NOT NULL;
ALTER TABLE api_tokens ADD COLUMN job_id uuid;
CREATE INDEX api_tokens_job ON api_tokens (job_id) WHERE job_id IS NOT NULL;
