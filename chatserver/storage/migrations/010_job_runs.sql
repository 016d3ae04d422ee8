-- Periodic jobs (the retention purge, queueing reply mails) run once across all the server's
-- processes: a process runs a job only when it moves the job's row from due to its next due time,
-- which one process wins (see Store.claim_job). No personal data: a job name and two times.
CREATE TABLE job_runs (
    name TEXT PRIMARY KEY,
    due_at TEXT NOT NULL,
    claimed_at TEXT NOT NULL
);
