"""Mail on SQLite: the outbox, one-time links and read state (migration 009)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ...errors import NotFound
from ..base import READ_MARKS, MailToken, OutboxMail, VisitorSession

FINISHED = ("sent", "failed", "dropped")
_OUTBOX_LIST = ("id", "kind", "status", "attempts", "last_error", "conversation_id",
                "created_at", "next_attempt_at", "sent_at")
# A sign-in can only carry a consent the customer still stands by.
_STANDING_CONSENT = """
    SELECT policy_version, policy_sha256, on_behalf FROM consents
    WHERE customer_id = ? AND withdrawn_at IS NULL ORDER BY id DESC LIMIT 1
"""
# Agent replies nobody has seen or mailed yet, per conversation, in a window of send times.
_UNSEEN_REPLIES = """
    SELECT m.conversation_id, c.customer_id, MIN(m.seq), MAX(m.seq)
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    LEFT JOIN conversation_reads r ON r.conversation_id = m.conversation_id
    WHERE m.sender = 'agent' AND m.sent_at > ?
      AND m.seq > MAX(COALESCE(r.seen_seq, 0), COALESCE(r.mailed_seq, 0))
    GROUP BY m.conversation_id
    HAVING MIN(m.sent_at) <= ?
"""
_UNSPENT = "WHERE token_hash = ? AND purpose = ? AND used_at IS NULL AND expires_at > ?"


def insert(c: sqlite3.Connection, now: str, kind: str, customer_id: str | None,
           conversation_id: str | None, address: str | None,
           params: dict[str, Any] | None) -> int:
    cur = c.execute(
        "INSERT INTO mail_outbox (kind, customer_id, conversation_id, address, params, "
        "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (kind, customer_id, conversation_id, address, json.dumps(params or {}), now, now),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def queue_account_mail(c: sqlite3.Connection, kind: str, email: str, now: str) -> None:
    row = c.execute(
        "SELECT id FROM customers WHERE lower(email) = lower(?) "
        "ORDER BY last_active_at DESC, created_at DESC LIMIT 1", (email.strip(),)
    ).fetchone()
    if row is not None:
        insert(c, now, kind, row[0], None, None, None)


def any_unseen_replies(c: sqlite3.Connection, cutoff: str, horizon: str) -> bool:
    return c.execute(_UNSEEN_REPLIES, (horizon, cutoff)).fetchone() is not None


def queue_reply_mails(c: sqlite3.Connection, cutoff: str, horizon: str, now: str) -> int:
    due = c.execute(_UNSEEN_REPLIES, (horizon, cutoff)).fetchall()
    for conversation_id, customer_id, first, last in due:
        c.execute(
            "INSERT INTO conversation_reads (conversation_id, mailed_seq) VALUES (?, ?) "
            "ON CONFLICT (conversation_id) DO UPDATE SET mailed_seq = "
            "MAX(mailed_seq, excluded.mailed_seq)", (conversation_id, last))
        insert(c, now, "reply", customer_id, conversation_id, None,
               {"from_seq": first, "to_seq": last})
    return len(due)


def claim(c: sqlite3.Connection, lease_until: str, now: str) -> OutboxMail | None:
    row = c.execute(
        """SELECT id, kind, customer_id, conversation_id, address, params, attempts
           FROM mail_outbox
           WHERE (status = 'pending' AND next_attempt_at <= ?)
              OR (status = 'sending' AND lease_until <= ?)
           ORDER BY next_attempt_at, id LIMIT 1""", (now, now)).fetchone()
    if row is None:
        return None
    c.execute("UPDATE mail_outbox SET status = 'sending', lease_until = ?, "
              "attempts = attempts + 1 WHERE id = ?", (lease_until, row[0]))
    return OutboxMail(id=row[0], kind=row[1], customer_id=row[2], conversation_id=row[3],
                      address=row[4], params=json.loads(row[5]), attempts=row[6] + 1)


def finish(c: sqlite3.Connection, mail_id: int, status: str, error: str | None,
           retry_at: str | None, now: str) -> None:
    if status == "pending":
        c.execute("UPDATE mail_outbox SET status = 'pending', next_attempt_at = ?, "
                  "lease_until = NULL, last_error = ? WHERE id = ?",
                  (retry_at or now, error, mail_id))
        return
    if status not in FINISHED:
        raise ValueError(f"unknown mail status {status!r}")
    c.execute(
        "UPDATE mail_outbox SET status = ?, last_error = ?, lease_until = NULL, "
        "address = NULL, params = '{}', sent_at = ? WHERE id = ?",
        (status, error, now if status == "sent" else None, mail_id))


def list_mail(c: sqlite3.Connection, limit: int, offset: int
              ) -> tuple[list[dict[str, Any]], int]:
    rows = c.execute(
        f"SELECT {', '.join(_OUTBOX_LIST)} FROM mail_outbox ORDER BY id DESC "
        "LIMIT ? OFFSET ?", (limit, offset)).fetchall()
    (total,) = c.execute("SELECT COUNT(*) FROM mail_outbox").fetchone()
    return [dict(zip(_OUTBOX_LIST, r, strict=True)) for r in rows], total


def prune(c: sqlite3.Connection, before: str) -> int:
    marks = ",".join("?" * len(FINISHED))
    return c.execute(
        f"DELETE FROM mail_outbox WHERE status IN ({marks}) AND created_at < ?",
        (*FINISHED, before)).rowcount


# -- one-time links ---------------------------------------------------------------------------

def create_token(c: sqlite3.Connection, token_hash: str, customer_id: str, purpose: str,
                 expires_at: str, conversation_id: str | None, now: str, day_ago: str) -> None:
    # A newer link voids the older ones; long-dead links of anyone are swept too.
    c.execute("DELETE FROM mail_tokens WHERE customer_id = ? AND purpose = ? "
              "AND conversation_id IS ? AND used_at IS NULL",
              (customer_id, purpose, conversation_id))
    c.execute("DELETE FROM mail_tokens WHERE expires_at < ?", (day_ago,))
    c.execute(
        "INSERT INTO mail_tokens (token_hash, customer_id, purpose, conversation_id, "
        "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash, customer_id, purpose, conversation_id, now, expires_at))


def check_token(c: sqlite3.Connection, token_hash: str, purpose: str, now: str
                ) -> MailToken | None:
    row = c.execute("SELECT customer_id, conversation_id FROM mail_tokens " + _UNSPENT,
                    (token_hash, purpose, now)).fetchone()
    return MailToken(*row) if row else None


def use_token(c: sqlite3.Connection, token_hash: str, purpose: str, now: str
              ) -> MailToken | None:
    row = c.execute(
        "UPDATE mail_tokens SET used_at = ? " + _UNSPENT
        + " RETURNING customer_id, conversation_id",
        (now, token_hash, purpose, now)).fetchone()
    return MailToken(*row) if row else None


def create_linked_session(c: sqlite3.Connection, session_id: str, customer_id: str,
                          ip: str | None, user_agent: str | None, now: str) -> VisitorSession:
    if c.execute("SELECT 1 FROM customers WHERE id = ?", (customer_id,)).fetchone() is None:
        raise NotFound("No such customer.")
    c.execute("INSERT INTO visitor_sessions (id, customer_id, created_at, last_seen_at) "
              "VALUES (?, ?, ?, ?)", (session_id, customer_id, now, now))
    standing = c.execute(_STANDING_CONSENT, (customer_id,)).fetchone()
    if standing is not None:
        c.execute(
            """INSERT INTO consents (session_id, customer_id, policy_version,
               policy_sha256, given_at, ip, user_agent, method, on_behalf)
               VALUES (?, ?, ?, ?, ?, ?, ?, 'email_link', ?)""",
            (session_id, customer_id, standing[0], standing[1], now, ip, user_agent,
             standing[2]))
    c.execute("INSERT INTO access_events (session_id, at, kind, ip, user_agent) "
              "VALUES (?, ?, 'email_link', ?, ?)", (session_id, now, ip, user_agent))
    c.execute("UPDATE customers SET last_active_at = ? WHERE id = ?", (now, customer_id))
    return VisitorSession(session_id, customer_id, standing[0] if standing else None)


# -- read state -------------------------------------------------------------------------------

def mark_seen(c: sqlite3.Connection, conversation_id: str, seq: int, read: bool) -> int:
    row = c.execute("SELECT last_seq FROM conversations WHERE id = ?",
                    (conversation_id,)).fetchone()
    if row is None:
        raise NotFound("No such conversation.")
    upto: int = max(0, min(seq, int(row[0])))
    c.execute(
        "INSERT INTO conversation_reads (conversation_id, read_seq, seen_seq) "
        "VALUES (?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET "
        "read_seq = MAX(read_seq, excluded.read_seq), "
        "seen_seq = MAX(seen_seq, excluded.seen_seq)",
        (conversation_id, upto if read else 0, upto))
    return upto


def read_state(c: sqlite3.Connection, conversation_id: str) -> dict[str, int]:
    row = c.execute(
        f"SELECT {', '.join(READ_MARKS)} FROM conversation_reads WHERE conversation_id = ?",
        (conversation_id,)).fetchone()
    return dict(zip(READ_MARKS, row or (0,) * len(READ_MARKS), strict=True))


def mark_emailed(c: sqlite3.Connection, conversation_id: str, seq: int) -> None:
    c.execute(
        "INSERT INTO conversation_reads (conversation_id, emailed_seq) "
        "SELECT id, ? FROM conversations WHERE id = ? "
        "ON CONFLICT (conversation_id) DO UPDATE SET "
        "emailed_seq = MAX(emailed_seq, excluded.emailed_seq)", (seq, conversation_id))
