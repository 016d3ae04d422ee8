-- The full-text index is kept up in the background, in batches (search_index.py), rather than by
-- a trigger that made every stored message pay for its index entry inside the chat's commit (about
-- half an append's cost). `indexed_up_to` marks how far the index goes: every message with an id
-- at or below it is indexed, none above. Messages take ids above the mark (appends.py), never a
-- reused one.
DROP TRIGGER messages_fts_insert;
CREATE TABLE search_index_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_up_to INTEGER NOT NULL
);
INSERT INTO search_index_state (id, indexed_up_to)
    SELECT 1, coalesce(max(id), 0) FROM messages;

-- A deleted message leaves the index only if it was in it: a 'delete' for a row the index never
-- had would corrupt an external-content index. Erasure's merge scrub (upkeep.py) does the rest.
DROP TRIGGER messages_fts_delete;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.id <= (SELECT indexed_up_to FROM search_index_state) BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
