-- Mail: the durable outbox, one-time links sent by mail, and what the customer has seen.
-- Every row that points at a customer or conversation goes with it (ON DELETE CASCADE), so an
-- erasure drops its unsent mail and unused links in the same transaction.

-- One row per mail. What a mail says is rendered when it is sent, from the database as it is
-- then; only the farewell after a termination keeps its address here (customer_id is NULL, the
-- account being gone), and that address is overwritten once the mail is sent or given up.
CREATE TABLE mail_outbox (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('signin', 'terminate', 'reply', 'transcript',
                                                  'farewell')),
    customer_id     TEXT REFERENCES customers (id) ON DELETE CASCADE,
    conversation_id TEXT REFERENCES conversations (id) ON DELETE CASCADE,
    address         TEXT,
    params          TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dropped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_until     TEXT,
    sent_at         TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_at);
CREATE INDEX mail_outbox_customer ON mail_outbox (customer_id);
CREATE INDEX mail_outbox_conversation ON mail_outbox (conversation_id);

-- One-time links: the row marks use; the link itself is signed (itsdangerous, one salt per
-- purpose) around a random id of which only the SHA-256 is kept here.
CREATE TABLE mail_tokens (
    token_hash      TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    purpose         TEXT NOT NULL CHECK (purpose IN ('signin', 'terminate', 'reply')),
    conversation_id TEXT REFERENCES conversations (id) ON DELETE CASCADE,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT
);
CREATE INDEX mail_tokens_customer ON mail_tokens (customer_id, purpose);

-- Per conversation: the highest seq the customer read (read frames), saw (read, or delivered
-- to an open socket), and the highest agent reply already emailed.
CREATE TABLE conversation_reads (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    read_seq        INTEGER NOT NULL DEFAULT 0,
    seen_seq        INTEGER NOT NULL DEFAULT 0,
    mailed_seq      INTEGER NOT NULL DEFAULT 0
);
