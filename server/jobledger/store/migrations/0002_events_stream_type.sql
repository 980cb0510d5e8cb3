-- The log is about to hold streams of several kinds (schedules, workflow runs, definitions
-- ...): each event names the kind of its stream. Every event so far is a job's. A constant
-- default makes this a change of the catalog only: no row is rewritten.
ALTER TABLE events ADD COLUMN stream_type text NOT NULL DEFAULT 'job';
