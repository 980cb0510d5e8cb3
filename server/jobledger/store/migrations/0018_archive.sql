-- Issue 19 (archiving): the append-only guard lets `jobledger replay archive` remove whole
-- streams, and nothing else. UPDATE and TRUNCATE stay refused always; a DELETE is checked
-- once per statement, after it, against the archive checkpoint event it names.
DROP TRIGGER events_no_update_delete ON events;
CREATE TRIGGER events_no_update
    BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION events_append_only();
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
