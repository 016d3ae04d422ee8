-- What remains of an erased account: counts and policy versions, no personal data.
CREATE TABLE erasures (
    id              TEXT PRIMARY KEY,
    at              TEXT NOT NULL,
    reason          TEXT NOT NULL,
    conversations   INTEGER NOT NULL,
    messages        INTEGER NOT NULL,
    sessions        INTEGER NOT NULL,
    consents        INTEGER NOT NULL,
    access_events   INTEGER NOT NULL,
    policy_versions TEXT NOT NULL
);

CREATE INDEX access_events_at ON access_events (at);
CREATE INDEX customers_last_active ON customers (last_active_at);
CREATE INDEX conversations_closed ON conversations (status, closed_at);
