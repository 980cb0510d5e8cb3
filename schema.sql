-- jobledger database schema: the whole current schema, in one place.
-- A fresh (empty) database is created from this file in one transaction, which records the
-- version it stands for in schema_migrations. An existing database is brought up to date by
-- the numbered files in server/jobledger/store/migrations/ instead, each applied once
-- (`jobledger migrate`, and at every `serve`/`worker` start). A schema change is therefore
-- made twice: as a new migration, and here, with every column at the position the
-- migration gives it (tests/store/test_migrations.py compares the two with pg_dump).

-- Which migrations the database has had; its version is the highest.
CREATE TABLE schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The version this file stands for: the last migration's.
INSERT INTO schema_migrations (version, name) VALUES (21, '0021_claim_quotas');

-- The event log: the source of truth (design map I2). One stream per aggregate.
CREATE TABLE events (
    -- Global order of insertion. Not commit order: readers of the whole log go by (txid, position).
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      uuid        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    type           text        NOT NULL,
    schema_version smallint    NOT NULL DEFAULT 1,
    data           jsonb       NOT NULL,
    meta           jsonb       NOT NULL,
    -- The database's clock, never the client's (I6).
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The writing transaction: catch-up readers only read below the oldest running one (I5).
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- Tamper evidence: SHA-256 over the previous event's hash in the stream and this event's
    -- canonical bytes; set by the events_hash_chain trigger below.
    hash           bytea,
    -- The kind of aggregate the stream belongs to (job, and later schedule, workflow run...).
    stream_type    text        NOT NULL DEFAULT 'job',
    -- Optimistic concurrency (I4): a second writer of the same version fails here.
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX events_txid_position ON events (txid, position);
-- Audit queries: by actor, and by time, newest first (in commit order: txid, position).
CREATE INDEX events_actor ON events ((meta ->> 'actor'), txid DESC, position DESC);
CREATE INDEX events_recorded_at ON events (recorded_at);
-- Audit: failures by reason, and starts by how long the job waited (JobStarted.ready_at),
-- newest first. Partial: only the events these questions are about.
CREATE INDEX events_failure_reason ON events ((data ->> 'reason'), txid DESC, position DESC)
    WHERE type IN ('JobFailed', 'JobRetryScheduled');
CREATE INDEX events_waited
    ON events ((extract(epoch FROM recorded_at - to_timestamp((data ->> 'ready_at')::float8))))
    WHERE type = 'JobStarted';
-- The planner takes no statistics from a partial index's expression: without these it
-- guesses a third of the log waited long and walks the whole log newest first instead.
CREATE STATISTICS events_waited_stats
    ON (extract(epoch FROM recorded_at - to_timestamp((data ->> 'ready_at')::float8)))
    FROM events;

-- Append-only in the database itself (I3), not by convention.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER events_no_update
    BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
-- Only `jobledger replay archive` removes events (issue 19): whole streams, listed by an
-- archive checkpoint event its own transaction wrote and named in
-- jobledger.archive_checkpoint; checked once per statement, after it.
CREATE FUNCTION events_delete_archived() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named text := nullif(current_setting('jobledger.archive_checkpoint', true), '');
    listed jsonb;
BEGIN
    IF named IS NULL THEN
        RAISE EXCEPTION 'the event log is append-only: DELETE on events is not allowed '
            'outside `jobledger replay archive`' USING ERRCODE = 'restrict_violation';
    END IF;
    -- The checkpoint: an archive event written by this very transaction.
    SELECT c.data -> 'streams' INTO listed FROM events c
    WHERE c.event_id = named::uuid AND c.stream_type = 'archive'
        AND c.type = 'StreamsArchived' AND c.txid = pg_current_xact_id();
    IF listed IS NULL THEN
        RAISE EXCEPTION 'the event log is append-only: DELETE on events needs an archive '
            'checkpoint written in the same transaction (% is none)', named
            USING ERRCODE = 'restrict_violation';
    END IF;
    -- Every removed event belongs to a stream the checkpoint lists (an anti-join, not a
    -- per-row search of the list), and no archive stream is removed.
    IF EXISTS (
        SELECT 1 FROM old_rows o
        LEFT JOIN (SELECT s::uuid AS id FROM jsonb_array_elements_text(listed) s) l
            ON l.id = o.stream_id
        WHERE l.id IS NULL OR o.stream_type = 'archive'
    ) THEN
        RAISE EXCEPTION 'the event log is append-only: DELETE on events removed events of '
            'streams checkpoint % does not list', named USING ERRCODE = 'restrict_violation';
    END IF;
    -- Whole streams only: nothing of a listed stream is left behind.
    IF EXISTS (
        SELECT 1 FROM jsonb_array_elements_text(listed) s
        JOIN events e ON e.stream_id = s::uuid
    ) THEN
        RAISE EXCEPTION 'the event log is append-only: an archive removes whole streams '
            '(checkpoint % lists a stream left in part)', named
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_delete_archived
    AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_delete_archived();

-- Tamper evidence: each event stores a SHA-256 over the previous event's hash in its stream
-- and its own canonical bytes (server/jobledger/store/chain.py computes the same bytes to
-- verify). An edit or removal made behind the append-only guard breaks the chain or the
-- versions; someone able to rewrite every later hash too is caught only by a digest kept
-- elsewhere (`jobledger replay verify` prints one).
CREATE FUNCTION events_canonical(e events) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_to(concat_ws(E'\n',
        e.event_id::text, e.stream_id::text, e.version::text, e.type, e.schema_version::text,
        (extract(epoch FROM e.recorded_at) * 1000000)::bigint::text,
        e.data::text, e.meta::text, nullif(e.stream_type, 'job')), 'UTF8')
$$;
-- Also where an append's expected version is checked (I4): an event after version 1 needs
-- its predecessor, so a writer that read a stream too far ahead cannot open a hole; and
-- where a stream keeps one kind. events_canonical's expression is written out here: calling
-- the SQL function per row cost as much as the rest of the insert.
CREATE FUNCTION events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev bytea := '\x';
    prev_type text;
BEGIN
    -- Earlier rows of the same INSERT are visible here: append_events inserts in version order.
    IF NEW.version > 1 THEN
        SELECT h.hash, h.stream_type INTO prev, prev_type FROM events h
        WHERE h.stream_id = NEW.stream_id AND h.version = NEW.version - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'stream % has no version %', NEW.stream_id, NEW.version - 1
                USING ERRCODE = 'JL409', DETAIL = NEW.stream_id::text;
        END IF;
        IF prev_type <> NEW.stream_type THEN
            RAISE EXCEPTION 'stream % is a % stream, not %', NEW.stream_id, prev_type,
                NEW.stream_type USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    -- A job event's bytes are what they were before the log had kinds (concat_ws skips NULL).
    NEW.hash := sha256(coalesce(prev, '\x') || convert_to(concat_ws(E'\n',
        NEW.event_id::text, NEW.stream_id::text, NEW.version::text, NEW.type,
        NEW.schema_version::text, (extract(epoch FROM NEW.recorded_at) * 1000000)::bigint::text,
        NEW.data::text, NEW.meta::text, nullif(NEW.stream_type, 'job')), 'UTF8'));
    RETURN NEW;
END
$$;
CREATE TRIGGER events_hash_chain
    BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_chain();

-- Inline projection of each job's current state, kept in the append transaction.
-- Rebuildable from the log at any time (`jobledger replay rebuild`).
CREATE TABLE jobs (
    id                  uuid        PRIMARY KEY,
    project             text        NOT NULL,
    state               text        NOT NULL,
    spec                jsonb       NOT NULL,
    priority            integer     NOT NULL,
    labels              jsonb       NOT NULL,
    tags                text[]      NOT NULL,
    concurrency_key     text,
    concurrency_limit   integer     NOT NULL DEFAULT 1,
    idempotency_key     text,
    submitted_by        text        NOT NULL,
    attempt             integer     NOT NULL,
    requeue_reason      text,
    scheduled_for       timestamptz,
    worker_id           text,
    exit_code           integer,
    failure_reason      text,
    message             text,
    usage               jsonb,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    started_at          timestamptz,
    finished_at         timestamptz,
    cancel_requested_at timestamptz,
    cancel_requested_by text,
    version             integer     NOT NULL,
    last_position       bigint      NOT NULL,
    -- Metadata the job's later events carry (I6), from its events: the JobSubmitted's
    -- correlation id, and the event that queued or started the current attempt.
    correlation_id      text,
    cause_event_id      uuid,
    -- The secret versions the current attempt resolved at its start, by environment
    -- variable ({"DB_PASSWORD": {"secret": "db-password", "version": 3}}); from JobStarted.
    secrets             jsonb       NOT NULL DEFAULT '{}',
    -- A job made from a definition: its name and version (to list by), and what its spec was
    -- resolved from (definition and environment versions, parameters, the request).
    definition          text,
    definition_version  integer,
    source              jsonb,
    -- A workflow step's child job: its run and step name.
    workflow_run        uuid,
    step                text,
    -- What the worker copies into the container before it starts ({}: nothing), and the
    -- output of the attempt that ended the job (secrets masked) with the SHA-256 of its
    -- stored bytes; from JobSubmitted and JobSucceeded/JobFailed.
    inputs              jsonb       NOT NULL DEFAULT '{}',
    output              jsonb,
    output_sha256       text,
    -- The running job whose token submitted this one, and the job it reruns.
    parent_job          uuid,
    rerun_of            uuid
);
-- One job per idempotency key and project; a second submit finds the first job.
CREATE UNIQUE INDEX jobs_idempotency
    ON jobs (project, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- List views: newest first, optionally by project or state; keyset pagination on (created_at, id).
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_project_created ON jobs (project, created_at DESC, id DESC);
CREATE INDEX jobs_state_created ON jobs (state, created_at DESC, id DESC);
-- Only jobs with labels: no other can match a label filter (which says `labels <> '{}'` too).
CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops) WHERE labels <> '{}'::jsonb;
-- The scheduler's claim: queued jobs without a time in priority, then submission order (the
-- due ones of those with a time come from jobs_scheduled).
CREATE INDEX jobs_ready
    ON jobs (priority DESC, created_at, id) WHERE state = 'queued' AND scheduled_for IS NULL;
-- The scheduler's next wake-up: the earliest scheduled_for of a queued job, from an index
-- (a scan of every queued job made each scheduling round slower as the queue grew).
CREATE INDEX jobs_scheduled ON jobs (scheduled_for)
    WHERE state = 'queued' AND scheduled_for IS NOT NULL;
-- Quotas count what runs, per project and per concurrency key; recovery finds a worker's jobs.
CREATE INDEX jobs_active
    ON jobs (project, concurrency_key) WHERE state IN ('running', 'cancelling');
CREATE INDEX jobs_worker
    ON jobs (worker_id) WHERE state IN ('running', 'cancelling');
-- The list of one definition's jobs.
CREATE INDEX jobs_definition_created
    ON jobs (definition, created_at DESC, id DESC) WHERE definition IS NOT NULL;
CREATE INDEX jobs_parent_job_created
    ON jobs (parent_job, created_at DESC, id DESC) WHERE parent_job IS NOT NULL;

-- A projection rebuild in progress (`jobledger replay rebuild`): it fills a shadow table
-- batch by batch, each batch committing with this checkpoint, so an interrupted rebuild
-- resumes; the swap into the live table happens in one transaction at the end.
CREATE TABLE projection_rebuilds (
    projection   text        PRIMARY KEY,
    -- Events of transactions from this one on may be missing from the shadow table: the
    -- swap re-reads their streams.
    started_xmin xid8        NOT NULL,
    -- Streams up to this id (in uuid order) are in the shadow table.
    after_stream uuid,
    streams      bigint      NOT NULL DEFAULT 0,
    events       bigint      NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Access control. Projects own jobs; service accounts belong to a project and carry a
-- role; API tokens are issued to a service account and stored only as a SHA-256 hash.
-- A project without a row has the defaults. The three tables are projections of their
-- streams (domain/access.py): a row names its stream (`stream_id`; a token's is its `id`).
CREATE TABLE projects (
    name             text        PRIMARY KEY,
    max_running_jobs integer     NOT NULL CHECK (max_running_jobs >= 0),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    log_limit_bytes  bigint,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by       text,
    -- Submit rate limits (NULL: the server's defaults).
    submit_rate      double precision,
    submit_burst     integer,
    stream_id        uuid        UNIQUE,
    -- Days a finished job's output lines and usage samples are kept (NULL: the server's
    -- --retention-days; 0: forever).
    retention_days   integer
);

-- `default` exists from the first start (an unknown project is "not found" everywhere): a
-- built-in stream, whose row stands without events until its first change. Its stream id is
-- uuid5(NAMED_STREAMS, 'project/default/default') (domain/kinds.py).
INSERT INTO projects (name, max_running_jobs, created_by, stream_id)
VALUES ('default', 10, 'jobledger', 'cd2e256e-2700-5692-b969-483ea80f3584');

CREATE TABLE service_accounts (
    id         uuid        PRIMARY KEY,
    project    text        NOT NULL,
    name       text        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by text        NOT NULL,
    stream_id  uuid        UNIQUE,
    UNIQUE (project, name)
);

CREATE TABLE api_tokens (
    id                 uuid        PRIMARY KEY,
    -- NULL: a server-wide admin token.
    service_account_id uuid        REFERENCES service_accounts (id),
    -- Kept beside the log, never in it (NULL: a row rebuilt from an imported log).
    hash               bytea       UNIQUE,
    description        text,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by         text        NOT NULL,
    expires_at         timestamptz,
    revoked_at         timestamptz,
    last_used_at       timestamptz,
    -- A job's own token (issue 16): it works only while that job runs.
    job_id             uuid
);
CREATE INDEX api_tokens_job ON api_tokens (job_id) WHERE job_id IS NOT NULL;

-- Scheduler/worker processes and their leases: a worker whose heartbeat is older than the
-- lease has its jobs failed (worker_lost) or retried by another scheduler.
CREATE TABLE workers (
    id           text        PRIMARY KEY,
    tags         text[]      NOT NULL,
    capacity     integer     NOT NULL,
    lease_seconds real       NOT NULL,
    executor     text        NOT NULL,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    stopped_at   timestamptz,
    -- NULL while its executor answers; else what the executor said last (the worker claims
    -- nothing meanwhile).
    executor_error text,
    -- The id of the secrets key it holds (NULL: none): only a worker with a key claims jobs
    -- whose environment uses secrets.
    secrets_key_id text
);

-- Job output: high-volume data, not events. Lines are numbered per job (`seq`, from 1,
-- continuing across attempts) and stored in batches; a batch holds lines first_seq..last_seq.
CREATE TABLE job_logs (
    job_id     uuid        NOT NULL,
    first_seq  bigint      NOT NULL,
    last_seq   bigint      NOT NULL,
    attempt    integer     NOT NULL,
    -- JSON array of {seq, stream, ts, text}; `json`, not `jsonb`: nothing queries inside it.
    lines      json        NOT NULL,
    bytes      integer     NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, first_seq),
    CHECK (last_seq >= first_seq)
);

-- CPU and memory of a running job over time, one row per sample.
CREATE TABLE job_usage_samples (
    job_id       uuid             NOT NULL,
    attempt      integer          NOT NULL,
    sampled_at   timestamptz      NOT NULL,
    cpu_percent  double precision NOT NULL,
    memory_bytes bigint           NOT NULL,
    PRIMARY KEY (job_id, sampled_at)
);

-- Secrets: a project's named values, versioned. `secrets` is the state projection of the
-- `secret` streams (one row per live secret; a deleted one has none); `secret_values` holds
-- each stored version's ciphertext (AES-GCM, with the id of the key that made it), written
-- in the append's transaction and removed with the secret. Events carry a keyed fingerprint
-- only, never a value.
CREATE TABLE secrets (
    stream_id   uuid        PRIMARY KEY,
    project     text        NOT NULL,
    name        text        NOT NULL,
    version     integer     NOT NULL,
    fingerprint text        NOT NULL,
    updated_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL,
    UNIQUE (project, name)
);

CREATE TABLE secret_values (
    project    text    NOT NULL,
    name       text    NOT NULL,
    version    integer NOT NULL,
    key_id     text    NOT NULL,
    -- The 12-byte nonce, then the ciphertext and its tag.
    ciphertext bytea   NOT NULL,
    PRIMARY KEY (project, name, version)
);

-- Definitions (versioned job templates with parameters) and environments (shared settings):
-- state projections of their named streams, one row per live one (a deleted one has none).
-- `content` is the current version's, `json` so that it reads back exactly as written.
CREATE TABLE definitions (
    stream_id  uuid        PRIMARY KEY,
    project    text        NOT NULL,
    name       text        NOT NULL,
    version    integer     NOT NULL,
    content    json        NOT NULL,
    disabled   boolean     NOT NULL,
    updated_by text        NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (project, name)
);
CREATE TABLE environments (
    stream_id  uuid        PRIMARY KEY,
    project    text        NOT NULL,
    name       text        NOT NULL,
    version    integer     NOT NULL,
    content    json        NOT NULL,
    updated_by text        NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (project, name)
);
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
    version      integer     NOT NULL,
    -- A schedule's run: the schedule and the occurrence (NULL: not a schedule's).
    schedule     text,
    occurrence   timestamptz
);
CREATE INDEX workflow_runs_project_created ON workflow_runs (project, created_at DESC, stream_id DESC);
CREATE INDEX workflow_runs_schedule
    ON workflow_runs (project, schedule, created_at DESC, stream_id DESC) WHERE schedule IS NOT NULL;
-- Runs not finished: what every workflow runtime sweeps.
CREATE INDEX workflow_runs_unfinished ON workflow_runs (updated_at)
    WHERE state IN ('running', 'cancelling');

-- Retention (issue 19): where the background prune of each project's finished jobs' output
-- and usage samples has got to (the last job pruned, in (finished_at, id) order), and the
-- index it walks them by. A pruned job keeps one `system` line saying so and when.
CREATE TABLE output_retention (
    project     text        PRIMARY KEY,
    finished_at timestamptz NOT NULL DEFAULT '-infinity',
    job_id      uuid        NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    jobs        bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX jobs_finished ON jobs (project, finished_at, id) WHERE finished_at IS NOT NULL;

-- Issue 18 (round trips): what explains why jobs wait, as one function, so that a submit's
-- write of its rows (projections/jobs.sql `write_jobs`) reads it in the same statement
-- with the same words as the queue views (projections/queue.sql `queue_facts`): running
-- jobs per project and concurrency key, the limits of the named projects, the tags of live
-- workers (apart: those whose executor does not answer; and those that hold the secrets
-- key). PL/pgSQL keeps its plans for the session (a LANGUAGE sql function's five
-- subqueries were planned again at every call).
CREATE FUNCTION queue_facts(named text[]) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
RETURN jsonb_build_object(
    'running', (SELECT coalesce(jsonb_agg(jsonb_build_array(project, concurrency_key, n)), '[]')
                FROM (SELECT project, concurrency_key, count(*)::int AS n FROM jobs
                      WHERE state IN ('running', 'cancelling')
                      GROUP BY project, concurrency_key) c),
    'limits', (SELECT coalesce(jsonb_agg(jsonb_build_array(name, max_running_jobs)), '[]')
               FROM projects WHERE name = ANY(named)),
    'live_tags', (SELECT coalesce(jsonb_agg(tags), '[]') FROM workers
                  WHERE stopped_at IS NULL AND executor_error IS NULL
                    AND heartbeat_at >= clock_timestamp() - make_interval(secs => lease_seconds)),
    'unavailable_tags', (SELECT coalesce(jsonb_agg(tags), '[]') FROM workers
                         WHERE stopped_at IS NULL AND executor_error IS NOT NULL
                           AND heartbeat_at >= clock_timestamp()
                                               - make_interval(secs => lease_seconds)),
    'keyed_tags', (SELECT coalesce(jsonb_agg(tags), '[]') FROM workers
                   WHERE stopped_at IS NULL AND executor_error IS NULL
                     AND secrets_key_id IS NOT NULL
                     AND heartbeat_at >= clock_timestamp() - make_interval(secs => lease_seconds))
);
END
$$;

-- Issue 18 (scale-out): claims agree on quotas per project and per concurrency key instead
-- of under one lock for the whole cluster. A claim reads its candidates without waiting,
-- picks, then calls this with the quota names ('project:NAME', 'key:NAME') of the jobs it
-- means to start, the best job's first. It waits for the claim that holds the first (so
-- it never waits holding another), only tries the others (one that another claim holds is
-- not waited for: its jobs are passed over this time), then counts the running jobs of
-- those it holds, and says which of its candidates are still queued at the version it read:
-- each statement of a VOLATILE function reads a fresh snapshot, so both see what the claims
-- before it under the same locks committed. Only a claim holding a job's project lock
-- starts it, so two claims never start one job. A claim waits only while it holds none of
-- these locks, so claims never wait for each other in a circle, nor queue up behind a claim
-- that is itself waiting. The two-key advisory lock space is ours alone (the worker id and
-- migration locks use the one-key space). `ending`: running jobs whose outcomes the claim
-- records (their slots are free). Returns (name, running, NULL) for each quota it holds and
-- (NULL, NULL, id) for each candidate still queued.
CREATE FUNCTION claim_quotas(
    first text, others text[], ending uuid[], candidates uuid[], versions int[]
) RETURNS TABLE (name text, running int, job uuid) LANGUAGE plpgsql AS $$
DECLARE
    held text[] := ARRAY[first];
    other text;
BEGIN
    PERFORM pg_advisory_xact_lock(1785491820, hashtext(first));  -- 0x6A6C716C, "jlql"
    FOREACH other IN ARRAY others LOOP
        IF pg_try_advisory_xact_lock(1785491820, hashtext(other)) THEN
            held := held || other;
        END IF;
    END LOOP;
    -- Each name's count is an index lookup (jobs_active) of its own.
    RETURN QUERY
        SELECT h, (SELECT count(*)::int FROM jobs j
                   WHERE j.state IN ('running', 'cancelling') AND j.project = substr(h, 9)
                     AND j.id <> ALL(ending)), NULL::uuid
        FROM unnest(held) h WHERE h LIKE 'project:%'
        UNION ALL
        SELECT h, (SELECT count(*)::int FROM jobs j
                   WHERE j.state IN ('running', 'cancelling') AND j.concurrency_key = substr(h, 5)
                     AND j.id <> ALL(ending)), NULL::uuid
        FROM unnest(held) h WHERE h LIKE 'key:%'
        UNION ALL
        -- One primary-key lookup each (OFFSET 0 keeps the lookups apart: joined or with
        -- id = ANY, the plan follows the often stale count of queued jobs and scans them).
        SELECT NULL, NULL, x.id
        FROM unnest(candidates, versions) c(id, version)
        CROSS JOIN LATERAL (
            SELECT j.id FROM jobs j
            WHERE j.id = c.id AND j.version = c.version AND j.state = 'queued' OFFSET 0
        ) x;
END
$$;
