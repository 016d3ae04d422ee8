-- What the SQLite schema gained in its migration 10: periodic jobs (the retention purge, queueing
-- reply mails) run once across all the server's processes; a process runs a job only when it
-- moves the job's row from due to its next due time (Store.claim_job).
CREATE TABLE job_runs (
    name text PRIMARY KEY,
    due_at text NOT NULL,
    claimed_at text NOT NULL
);
