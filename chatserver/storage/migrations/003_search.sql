-- Full-text search over message bodies. Messages get a rowid so the FTS5 index can point at
-- them (external content: bodies are stored once). Erasure deletes through the trigger and then
-- merges the index, so no token of an erased message stays in an old index segment.

CREATE TABLE messages_new (
    id              INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    sender          TEXT NOT NULL CHECK (sender IN ('visitor', 'agent', 'system')),
    sender_id       TEXT NOT NULL,
    body            TEXT NOT NULL,
    client_msg_id   TEXT,
    sent_at         TEXT NOT NULL,
    UNIQUE (conversation_id, seq)
);
INSERT INTO messages_new (conversation_id, seq, sender, sender_id, body, client_msg_id, sent_at)
    SELECT conversation_id, seq, sender, sender_id, body, client_msg_id, sent_at
    FROM messages ORDER BY sent_at, conversation_id, seq;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE UNIQUE INDEX messages_client_id
    ON messages (conversation_id, sender, sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_sent ON messages (sent_at);

CREATE VIRTUAL TABLE messages_fts USING fts5 (
    body, content = 'messages', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;

-- Failed sign-ins in a row, for the growing delay; reset by a success.
ALTER TABLE staff ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE staff ADD COLUMN last_failed_at TEXT;
