-- "Why it waits" was two things under three names. What a user reads about a queued job
-- (`waiting_reason`) is worked out when asked and never stored; what is stored is why a job
-- went back to the queue ("retry 1 of 3"): its column says so now.
ALTER TABLE jobs RENAME COLUMN queue_reason TO requeue_reason;
