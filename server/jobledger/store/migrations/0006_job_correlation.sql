-- Events that follow from a job's earlier ones carry its correlation id and name their cause
-- (I6). The jobs row keeps both so that a claim or an outcome needs no extra read: the
-- JobSubmitted's correlation id, and the event that queued or started the current attempt.
-- Existing rows get them from the log, as a rebuild would.
ALTER TABLE jobs ADD COLUMN correlation_id text, ADD COLUMN cause_event_id uuid;

UPDATE jobs j SET
    correlation_id = (
        SELECT e.meta ->> 'correlation_id' FROM events e
        WHERE e.stream_id = j.id AND e.version = 1
    ),
    cause_event_id = (
        SELECT e.event_id FROM events e
        WHERE e.stream_id = j.id
          AND e.type IN ('JobSubmitted', 'JobQueued', 'JobStarted', 'JobRetryScheduled')
        ORDER BY e.version DESC
        LIMIT 1
    );
