-- Upkeep that must survive a crash: a deletion whose search-index scrub has not finished yet
-- (the next open finishes it, so erased words never stay in an old index segment).
CREATE TABLE upkeep (
    task            TEXT PRIMARY KEY,
    since           TEXT NOT NULL
);

-- Sessions that never gave details expire by age; audit entries are cut by age.
CREATE INDEX visitor_sessions_unfinished ON visitor_sessions (created_at)
    WHERE customer_id IS NULL;
CREATE INDEX audit_log_at ON audit_log (at);
