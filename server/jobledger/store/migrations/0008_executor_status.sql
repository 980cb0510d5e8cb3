-- A worker says whether its executor answers (e.g. its Docker engine is down): while it
-- does not, the worker claims nothing and the waiting reason of the jobs only it could run
-- says so. NULL: the executor answers; otherwise what it said last.
ALTER TABLE workers ADD COLUMN executor_error text;
