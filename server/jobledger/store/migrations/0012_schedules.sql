-- Schedules (issue 15): the state projection of the `schedule` streams, one row per live
-- schedule (a deleted one has none). `next_due_at` (the next occurrence plus its jitter;
-- NULL: paused, or no occurrence left) lets every scheduler find what is due with one
-- indexed query; `recent_job_ids` are the jobs of the latest fired occurrences, which a
-- scheduler makes sure exist (a crash between ScheduleFired and the job's creation).
-- Occurrences themselves are read from the schedule's stream.
CREATE TABLE schedules (
    stream_id       uuid        PRIMARY KEY,
    project         text        NOT NULL,
    name            text        NOT NULL,
    cron            text        NOT NULL,
    timezone        text        NOT NULL,
    paused          boolean     NOT NULL,
    -- The settings as the events hold them (json: kept as written, so verify compares text).
    settings        json        NOT NULL,
    next_occurrence timestamptz,
    next_due_at     timestamptz,
    last_occurrence timestamptz,
    fired           integer     NOT NULL,
    skipped         integer     NOT NULL,
    recent_job_ids  uuid[]      NOT NULL,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_by      text        NOT NULL,
    updated_at      timestamptz NOT NULL,
    version         integer     NOT NULL,
    UNIQUE (project, name)
);
CREATE INDEX schedules_due ON schedules (next_due_at) WHERE next_due_at IS NOT NULL;

-- The jobs a schedule made (label jobledger.schedule), for the job list's filter and the
-- overlap policy's count of a schedule's running and waiting jobs.
CREATE INDEX jobs_schedule ON jobs (project, (labels ->> 'jobledger.schedule'), created_at DESC)
    WHERE labels ? 'jobledger.schedule';
