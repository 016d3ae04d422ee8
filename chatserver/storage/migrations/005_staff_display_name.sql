-- What customers see of a staff member: a display name, never the sign-in name (which is half
-- of the credentials). Existing accounts get a neutral one; admins change it in the console.
ALTER TABLE staff ADD COLUMN display_name TEXT NOT NULL DEFAULT 'Support agent';

-- System messages stored before this named agents by their sign-in names ("alice joined the
-- conversation.", "The conversation was closed by alice."): reword them with the display name.
-- Sign-in names hold no spaces, so no rewritten body can be mistaken for an original one. The
-- full-text index has no update trigger: take the old words out and put the new ones in.
CREATE TEMP TABLE renamed AS
    SELECT m.id, st.display_name || ' joined the conversation.' AS body
    FROM messages m JOIN staff st ON m.body = st.name || ' joined the conversation.'
    WHERE m.sender = 'system'
    UNION ALL
    SELECT m.id, 'The conversation was closed by ' || st.display_name || '.'
    FROM messages m JOIN staff st ON m.body = 'The conversation was closed by ' || st.name || '.'
    WHERE m.sender = 'system';
INSERT INTO messages_fts (messages_fts, rowid, body)
    SELECT 'delete', m.id, m.body FROM messages m JOIN renamed r ON r.id = m.id;
UPDATE messages SET body = (SELECT body FROM renamed WHERE renamed.id = messages.id)
    WHERE id IN (SELECT id FROM renamed);
INSERT INTO messages_fts (rowid, body) SELECT id, body FROM renamed;
DROP TABLE renamed;
