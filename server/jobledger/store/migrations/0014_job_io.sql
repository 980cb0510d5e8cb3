-- A job's inputs and output (issue 16): the small JSON document the worker copies into its
-- container before it starts (from JobSubmitted; {} for jobs from before: none), and the
-- JSON the attempt that ended the job wrote, secrets masked, with the SHA-256 of its stored
-- bytes (from JobSucceeded/JobFailed).
ALTER TABLE jobs
    ADD COLUMN inputs jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN output jsonb,
    ADD COLUMN output_sha256 text;
