-- Issue 18 (scale-out): claims agree on quotas per project and per concurrency key instead
-- of under one lock for the whole cluster. A claim locks the queued rows it reads (FOR
-- UPDATE SKIP LOCKED: two claims never read the same job), then calls this with the
-- projects and keys of the jobs it means to start: it waits for the claims of the same
-- projects and keys to commit, and counts their running jobs afterwards (each statement of a
-- VOLATILE function reads a fresh snapshot, so the count sees what those claims started).
-- The locks are taken in one order (by hash) everywhere, so claims never wait in a circle;
-- the two-key advisory lock space is ours alone (the worker id and migration locks use the
-- one-key space). `ending`: running jobs whose outcomes the claim records (their slots are
-- free).
CREATE FUNCTION claim_quotas(projects text[], keys text[], ending uuid[])
RETURNS TABLE (project text, concurrency_key text, running int) LANGUAGE plpgsql AS $$
DECLARE
    h int;
BEGIN
    FOR h IN
        SELECT DISTINCT hashtext(name) FROM (
            SELECT 'project:' || p FROM unnest(projects) p
            UNION ALL
            SELECT 'key:' || k FROM unnest(keys) k
        ) n(name)
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(1785491820, h);  -- 0x6A6C716C, "jlql"
    END LOOP;
    RETURN QUERY
        SELECT j.project, NULL::text, count(*)::int FROM jobs j
        WHERE j.state IN ('running', 'cancelling') AND j.project = ANY(projects)
          AND j.id <> ALL(ending)
        GROUP BY j.project
        UNION ALL
        SELECT NULL::text, j.concurrency_key, count(*)::int FROM jobs j
        WHERE j.state IN ('running', 'cancelling') AND j.concurrency_key = ANY(keys)
          AND j.id <> ALL(ending)
        GROUP BY j.concurrency_key;
END
$$;
