-- Placeholder on branch wftoken only, so that 0015 follows without a gap: the other
-- issue-16 branches own migration 0013 (drop this file when merging theirs).
SELECT 1;
