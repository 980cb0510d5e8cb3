-- One rule for projects: one that does not exist is "not found" everywhere. So `default`
-- exists from the first start, and every project that already holds jobs or service
-- accounts (made before the rule, by a submit or a limits update) gets its row.
INSERT INTO projects (name, max_running_jobs, created_by)
SELECT name, 10, 'jobledger'
FROM (
    SELECT 'default' AS name
    UNION SELECT project FROM jobs
    UNION SELECT project FROM service_accounts
) known
ON CONFLICT (name) DO NOTHING;
