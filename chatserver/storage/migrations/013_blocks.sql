-- Blocks (issue 12): an agent stops an abusive visitor for a limited time: the customer (every
-- session of theirs) and, optionally, the IP address they last chatted from. A block is data
-- about the customer: it goes with an erasure (ON DELETE CASCADE), is in their export, and the
-- retention purge deletes it once expired.
CREATE TABLE blocks (
    id              INTEGER PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    conversation_id TEXT REFERENCES conversations (id) ON DELETE SET NULL,
    ip              TEXT,
    reason          TEXT NOT NULL,
    staff_id        INTEGER NOT NULL REFERENCES staff (id),
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL
);
CREATE INDEX blocks_customer ON blocks (customer_id, expires_at);
CREATE INDEX blocks_ip ON blocks (ip, expires_at) WHERE ip IS NOT NULL;
CREATE INDEX blocks_expiry ON blocks (expires_at);
