-- Staff-only notes inside a conversation, and the customer's rating of a closed conversation.
-- Both are data about the customer: they go with the conversation (ON DELETE CASCADE), so an
-- erasure or a retention purge removes them in its own transaction.

-- A note is not a message: it takes no seq, so the customer's seqs stay gapless and a note can
-- never be replayed to the customer's socket. `after_seq` (the conversation's last seq when the
-- note was written) places it in the staff's timeline.
CREATE TABLE notes (
    id              INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    after_seq       INTEGER NOT NULL,
    staff_id        INTEGER NOT NULL REFERENCES staff (id),
    body            TEXT NOT NULL,
    client_msg_id   TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (conversation_id, staff_id, client_msg_id)
);
CREATE INDEX notes_conversation ON notes (conversation_id, after_seq);

-- One rating per conversation: the primary key refuses a second.
CREATE TABLE conversation_ratings (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    score           INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment         TEXT NOT NULL DEFAULT '',
    rated_at        TEXT NOT NULL
);
