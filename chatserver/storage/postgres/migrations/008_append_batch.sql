-- A batch of message appends in one call (postgres/appends.py says how it keeps seqs gapless):
-- one round trip and one commit per batch. A function, not a statement sent as it is, for its
-- SET: left to choose, PostgreSQL plans this statement afresh on every call (its estimate for a
-- generic plan, taken with an array of unknown length, always loses), and that planning was half
-- of the database's CPU per message. Generic plans are pinned here, not for the whole session.
--
-- `locked` takes the conversations' row locks in id order (FOR UPDATE returns the newest
-- committed version of each row, READ COMMITTED's recheck) and says which are paused: open, with
-- no consent of their customer in force. `kept` leaves out the appends that must run alone (a
-- closed conversation, unless a system message; a paused one, for an agent's) and numbers the
-- rest on from each conversation's last_seq, in arrival order. The updates find the rows
-- `locked` holds. Arguments: conversation ids, senders, sender ids, bodies, client_msg_ids,
-- times, folded bodies for the search vector, and whether each is refused while paused.
CREATE FUNCTION append_batch(text[], text[], text[], text[], text[], text[], text[], boolean[])
RETURNS TABLE (row_n bigint, row_seq bigint, row_status text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    RETURN QUERY
    WITH input AS MATERIALIZED (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::bool[])
            WITH ORDINALITY AS u(c, se, si, b, m, t, f, up, n)
    ), locked AS MATERIALIZED (
        SELECT c.id, c.last_seq, c.customer_id, c.status,
               c.status <> 'closed' AND NOT EXISTS (
                   SELECT 1 FROM consents
                   WHERE customer_id = c.customer_id AND withdrawn_at IS NULL) AS paused
        FROM conversations c
        WHERE c.id IN (SELECT c FROM input) ORDER BY c.id FOR UPDATE
    ), kept AS MATERIALIZED (
        SELECT i.n, i.c, i.se, i.si, i.b, i.m, i.t, i.f, l.customer_id, l.status,
               l.last_seq + row_number() OVER (PARTITION BY i.c ORDER BY i.n) AS s
        FROM input i JOIN locked l ON l.id = i.c
        WHERE (l.status <> 'closed' OR i.se = 'system') AND NOT (i.up AND l.paused)
    ), ins AS (
        INSERT INTO messages (conversation_id, seq, sender, sender_id, body, client_msg_id,
                              sent_at, search)
        SELECT c, s, se, si, b, m, t, to_tsvector('simple', f) FROM kept
    ), moved AS (
        UPDATE conversations SET last_seq = k.s, last_message_at = k.t
        FROM (SELECT DISTINCT ON (c) c, s, t FROM kept ORDER BY c, n DESC) k
        WHERE conversations.id = k.c
    ), active AS (
        UPDATE customers SET last_active_at = k.t
        FROM (SELECT DISTINCT ON (customer_id) customer_id, t FROM kept
              WHERE se = 'visitor' ORDER BY customer_id, n DESC) k
        WHERE customers.id = k.customer_id
    )
    SELECT n, s, status FROM kept;
END
$fn$;
