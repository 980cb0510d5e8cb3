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
