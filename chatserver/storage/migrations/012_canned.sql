-- Canned responses: replies admins prepare and agents insert by typing "/" and the shortcut.
-- They hold no customer data; `{customer_first_name}` and `{agent_name}` placeholders are filled
-- in the agent's browser when one is inserted.
CREATE TABLE canned_responses (
    id          INTEGER PRIMARY KEY,
    shortcut    TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
