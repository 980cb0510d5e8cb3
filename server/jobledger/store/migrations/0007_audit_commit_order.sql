-- Audit pages go newest first by (txid, position), the catch-up reader's order, so that an
-- event that commits late is never skipped behind a page already read (I5). The audit's
-- indexes follow, so a page by actor or failure reason is still read in index order.
DROP INDEX IF EXISTS events_actor;
CREATE INDEX events_actor ON events ((meta ->> 'actor'), txid DESC, position DESC);
DROP INDEX IF EXISTS events_failure_reason;
CREATE INDEX events_failure_reason ON events ((data ->> 'reason'), txid DESC, position DESC)
    WHERE type IN ('JobFailed', 'JobRetryScheduled');
