"""Mail on PostgreSQL: the outbox, one-time links and read state (migration 002), as SQLite's
sqlite/mail.py keeps them.

Several processes may send at once (`serve --workers N`, or several hosts on one database): a
mail is claimed with `FOR UPDATE SKIP LOCKED`, and reply mails are queued under a lock on each
conversation's read-state row taken the same way, so each mail is queued and sent once.
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import NotFound
from ..base import READ_MARKS, MailToken, OutboxMail, VisitorSession
from .engine import Connection
from .visitors import rowcount

FINISHED = ("sent", "failed", "dropped")
_OUTBOX_LIST = ("id", "kind", "status", "attempts", "last_error", "conversation_id",
                "created_at", "next_attempt_at", "sent_at")
# A sign-in can only carry a consent the customer still stands by.
_STANDING_CONSENT = """
    SELECT policy_version, policy_sha256, on_behalf FROM consents
    WHERE customer_id = $1 AND withdrawn_at IS NULL ORDER BY id DESC LIMIT 1
"""
# Agent replies nobody has seen or mailed yet, per conversation, in a window of send times
# ($1 the horizon, $2 the cutoff).
_UNSEEN_REPLIES = """
    SELECT m.conversation_id, c.customer_id, MIN(m.seq), MAX(m.seq)
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    LEFT JOIN conversation_reads r ON r.conversation_id = m.conversation_id
    WHERE m.sender = 'agent' AND m.sent_at > $1
      AND m.seq > GREATEST(COALESCE(r.seen_seq, 0), COALESCE(r.mailed_seq, 0))
      {only}
    GROUP BY m.conversation_id, c.customer_id
    HAVING MIN(m.sent_at) <= $2
"""
UNSEEN_REPLIES = _UNSEEN_REPLIES.format(only="")
_UNSEEN_REPLIES_IN = _UNSEEN_REPLIES.format(only="AND m.conversation_id = ANY($3::text[])")
_UNSPENT = "WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3"


async def insert(c: Connection, now: str, kind: str, customer_id: str | None,
                 conversation_id: str | None, address: str | None,
                 params: dict[str, Any] | None) -> int:
    mail_id = await c.fetchval(
        "INSERT INTO mail_outbox (kind, customer_id, conversation_id, address, params, "
        "created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        kind, customer_id, conversation_id, address, json.dumps(params or {}), now)
    return int(mail_id)


async def queue_account_mail(c: Connection, kind: str, email: str, now: str) -> None:
    customer_id = await c.fetchval(
        "SELECT id FROM customers WHERE lower(email) = lower($1) "
        "ORDER BY last_active_at DESC, created_at DESC LIMIT 1", email.strip())
    if customer_id is not None:
        await insert(c, now, kind, customer_id, None, None, None)


async def any_unseen_replies(c: Connection, cutoff: str, horizon: str) -> bool:
    return await c.fetchrow(UNSEEN_REPLIES + " LIMIT 1", horizon, cutoff) is not None


async def queue_reply_mails(c: Connection, cutoff: str, horizon: str, now: str) -> int:
    candidates = [r[0] for r in await c.fetch(UNSEEN_REPLIES, horizon, cutoff)]
    if not candidates:
        return 0
    # A read-state row per candidate (made when missing), locked; one another process holds is
    # skipped: that process queues its mail, or the next round does.
    await c.execute(
        "INSERT INTO conversation_reads (conversation_id) SELECT id FROM conversations "
        "WHERE id = ANY($1::text[]) ON CONFLICT (conversation_id) DO NOTHING", candidates)
    locked = [r[0] for r in await c.fetch(
        "SELECT conversation_id FROM conversation_reads WHERE conversation_id = ANY($1::text[]) "
        "ORDER BY conversation_id FOR UPDATE SKIP LOCKED", candidates)]
    if not locked:
        return 0
    # Again under the locks, with a fresh snapshot: what another process mailed meanwhile is
    # committed and counted now.
    due = await c.fetch(_UNSEEN_REPLIES_IN, horizon, cutoff, locked)
    for conversation_id, customer_id, first, last in due:
        await c.execute(
            "UPDATE conversation_reads SET mailed_seq = GREATEST(mailed_seq, $2) "
            "WHERE conversation_id = $1", conversation_id, last)
        await insert(c, now, "reply", customer_id, conversation_id, None,
                     {"from_seq": first, "to_seq": last})
    return len(due)


async def claim(c: Connection, lease_until: str, now: str) -> OutboxMail | None:
    row = await c.fetchrow(
        """UPDATE mail_outbox SET status = 'sending', lease_until = $2, attempts = attempts + 1
           WHERE id = (
               SELECT id FROM mail_outbox
               WHERE (status = 'pending' AND next_attempt_at <= $1)
                  OR (status = 'sending' AND lease_until <= $1)
               ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING id, kind, customer_id, conversation_id, address, params, attempts""",
        now, lease_until)
    if row is None:
        return None
    return OutboxMail(id=row[0], kind=row[1], customer_id=row[2], conversation_id=row[3],
                      address=row[4], params=json.loads(row[5]), attempts=row[6])


async def finish(c: Connection, mail_id: int, status: str, error: str | None,
                 retry_at: str | None, now: str) -> None:
    if status == "pending":
        await c.execute("UPDATE mail_outbox SET status = 'pending', next_attempt_at = $1, "
                        "lease_until = NULL, last_error = $2 WHERE id = $3",
                        retry_at or now, error, mail_id)
        return
    if status not in FINISHED:
        raise ValueError(f"unknown mail status {status!r}")
    await c.execute(
        "UPDATE mail_outbox SET status = $1, last_error = $2, lease_until = NULL, "
        "address = NULL, params = '{}', sent_at = $3 WHERE id = $4",
        status, error, now if status == "sent" else None, mail_id)


async def list_mail(c: Connection, limit: int, offset: int
                    ) -> tuple[list[dict[str, Any]], int]:
    rows = await c.fetch(f"SELECT {', '.join(_OUTBOX_LIST)} FROM mail_outbox ORDER BY id DESC "
                         "LIMIT $1 OFFSET $2", limit, offset)
    total = await c.fetchval("SELECT COUNT(*) FROM mail_outbox")
    return [dict(zip(_OUTBOX_LIST, r, strict=True)) for r in rows], int(total)


async def prune(c: Connection, before: str) -> int:
    return rowcount(await c.execute(
        "DELETE FROM mail_outbox WHERE status = ANY($1::text[]) AND created_at < $2",
        list(FINISHED), before))


# -- one-time links ---------------------------------------------------------------------------

async def create_token(c: Connection, token_hash: str, customer_id: str, purpose: str,
                       expires_at: str, conversation_id: str | None, now: str, day_ago: str
                       ) -> None:
    # A newer link voids the older ones; long-dead links of anyone are swept too.
    await c.execute("DELETE FROM mail_tokens WHERE customer_id = $1 AND purpose = $2 "
                    "AND conversation_id IS NOT DISTINCT FROM $3 AND used_at IS NULL",
                    customer_id, purpose, conversation_id)
    await c.execute("DELETE FROM mail_tokens WHERE expires_at < $1", day_ago)
    await c.execute(
        "INSERT INTO mail_tokens (token_hash, customer_id, purpose, conversation_id, "
        "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        token_hash, customer_id, purpose, conversation_id, now, expires_at)


async def check_token(c: Connection, token_hash: str, purpose: str, now: str
                      ) -> MailToken | None:
    row = await c.fetchrow("SELECT customer_id, conversation_id FROM mail_tokens " + _UNSPENT,
                           token_hash, purpose, now)
    return MailToken(row[0], row[1]) if row else None


async def use_token(c: Connection, token_hash: str, purpose: str, now: str) -> MailToken | None:
    # One conditional UPDATE: of two uses at once, exactly one finds the link unused.
    row = await c.fetchrow("UPDATE mail_tokens SET used_at = $3 " + _UNSPENT
                           + " RETURNING customer_id, conversation_id", token_hash, purpose, now)
    return MailToken(row[0], row[1]) if row else None


async def create_linked_session(c: Connection, session_id: str, customer_id: str,
                                ip: str | None, user_agent: str | None, now: str
                                ) -> VisitorSession:
    if await c.fetchval("SELECT 1 FROM customers WHERE id = $1", customer_id) is None:
        raise NotFound("No such customer.")
    await c.execute("INSERT INTO visitor_sessions (id, customer_id, created_at, last_seen_at) "
                    "VALUES ($1, $2, $3, $3)", session_id, customer_id, now)
    standing = await c.fetchrow(_STANDING_CONSENT, customer_id)
    if standing is not None:
        await c.execute(
            """INSERT INTO consents (session_id, customer_id, policy_version, policy_sha256,
               given_at, ip, user_agent, method, on_behalf)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'email_link', $8)""",
            session_id, customer_id, standing[0], standing[1], now, ip, user_agent, standing[2])
    await c.execute("INSERT INTO access_events (session_id, at, kind, ip, user_agent) "
                    "VALUES ($1, $2, 'email_link', $3, $4)", session_id, now, ip, user_agent)
    await c.execute("UPDATE customers SET last_active_at = $1 WHERE id = $2", now, customer_id)
    return VisitorSession(session_id, customer_id, standing[0] if standing else None)


# -- read state -------------------------------------------------------------------------------

async def mark_seen(c: Connection, conversation_id: str, seq: int, read: bool) -> int:
    last_seq = await c.fetchval("SELECT last_seq FROM conversations WHERE id = $1",
                                conversation_id)
    if last_seq is None:
        raise NotFound("No such conversation.")
    upto = max(0, min(seq, int(last_seq)))
    await c.execute(
        "INSERT INTO conversation_reads (conversation_id, read_seq, seen_seq) "
        "VALUES ($1, $2, $3) ON CONFLICT (conversation_id) DO UPDATE SET "
        "read_seq = GREATEST(conversation_reads.read_seq, excluded.read_seq), "
        "seen_seq = GREATEST(conversation_reads.seen_seq, excluded.seen_seq)",
        conversation_id, upto if read else 0, upto)
    return upto


async def read_state(c: Connection, conversation_id: str) -> dict[str, int]:
    row = await c.fetchrow(f"SELECT {', '.join(READ_MARKS)} FROM conversation_reads "
                           "WHERE conversation_id = $1", conversation_id)
    return dict(zip(READ_MARKS, tuple(row) if row else (0,) * len(READ_MARKS), strict=True))


async def mark_emailed(c: Connection, conversation_id: str, seq: int) -> None:
    await c.execute(
        "INSERT INTO conversation_reads (conversation_id, emailed_seq) "
        "SELECT id, $2 FROM conversations WHERE id = $1 "
        "ON CONFLICT (conversation_id) DO UPDATE SET "
        "emailed_seq = GREATEST(conversation_reads.emailed_seq, excluded.emailed_seq)",
        conversation_id, seq)
