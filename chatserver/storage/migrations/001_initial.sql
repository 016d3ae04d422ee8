-- The first schema. Times are ISO 8601 UTC text; ids handed to browsers are random, never counters.

CREATE TABLE policy_versions (
    version         TEXT PRIMARY KEY,
    effective_date  TEXT NOT NULL,
    summary         TEXT NOT NULL,
    text            TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    published_at    TEXT NOT NULL,
    ordinal         INTEGER NOT NULL UNIQUE
);

CREATE TABLE customers (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT NOT NULL,
    company         TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_active_at  TEXT NOT NULL,
    legal_hold      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX customers_email ON customers (email);

-- A visitor session is the server side of one chat_session cookie; the id is a hash of the
-- cookie's random value, so the table alone cannot be replayed as cookies.
CREATE TABLE visitor_sessions (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT REFERENCES customers (id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    revoked_at      TEXT
);
CREATE INDEX visitor_sessions_customer ON visitor_sessions (customer_id);

CREATE TABLE consents (
    id              INTEGER PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES visitor_sessions (id) ON DELETE CASCADE,
    customer_id     TEXT REFERENCES customers (id) ON DELETE CASCADE,
    policy_version  TEXT NOT NULL REFERENCES policy_versions (version),
    policy_sha256   TEXT NOT NULL,
    given_at        TEXT NOT NULL,
    ip              TEXT,
    user_agent      TEXT,
    method          TEXT NOT NULL,
    on_behalf       INTEGER NOT NULL DEFAULT 0,
    withdrawn_at    TEXT
);
CREATE INDEX consents_session ON consents (session_id);
CREATE INDEX consents_customer ON consents (customer_id);

CREATE TABLE staff (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role            TEXT NOT NULL CHECK (role IN ('agent', 'admin')),
    password_hash   TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    created_at      TEXT NOT NULL
);

CREATE TABLE staff_sessions (
    id              TEXT PRIMARY KEY,
    staff_id        INTEGER NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT
);
CREATE INDEX staff_sessions_staff ON staff_sessions (staff_id);

CREATE TABLE login_events (
    id              INTEGER PRIMARY KEY,
    at              TEXT NOT NULL,
    staff_id        INTEGER REFERENCES staff (id) ON DELETE SET NULL,
    ip              TEXT,
    user_agent      TEXT,
    outcome         TEXT NOT NULL
);

CREATE TABLE conversations (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'active', 'closed')),
    agent_id        INTEGER REFERENCES staff (id),
    created_at      TEXT NOT NULL,
    claimed_at      TEXT,
    closed_at       TEXT,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    last_message_at TEXT
);
CREATE INDEX conversations_customer ON conversations (customer_id, status);
CREATE INDEX conversations_status ON conversations (status, created_at);
CREATE INDEX conversations_created ON conversations (created_at);

CREATE TABLE messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    sender          TEXT NOT NULL CHECK (sender IN ('visitor', 'agent', 'system')),
    sender_id       TEXT NOT NULL,
    body            TEXT NOT NULL,
    client_msg_id   TEXT,
    sent_at         TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_client_id
    ON messages (conversation_id, sender, sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

-- Server access details kept for a customer: one row per session start or socket connection.
CREATE TABLE access_events (
    id              INTEGER PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES visitor_sessions (id) ON DELETE CASCADE,
    at              TEXT NOT NULL,
    kind            TEXT NOT NULL,
    ip              TEXT,
    user_agent      TEXT
);
CREATE INDEX access_events_session ON access_events (session_id);

CREATE TABLE setup_tokens (
    token_hash      TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT
);

-- Append-only and hash-chained: each row's hash covers its fields and the previous row's hash.
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    ip              TEXT,
    target          TEXT,
    detail          TEXT NOT NULL DEFAULT '{}',
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
