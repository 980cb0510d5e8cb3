-- The hash chain covers an event's stream kind (for kinds other than `job`, whose events
-- keep the bytes they were chained with), and a stream keeps the kind it started with.
CREATE OR REPLACE FUNCTION events_canonical(e events) RETURNS bytea
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
CREATE OR REPLACE FUNCTION events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
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
