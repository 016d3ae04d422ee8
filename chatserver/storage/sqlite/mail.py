"""The SQLite side of MailStore: the outbox, one-time links and read state (migration 009).

A mixin of SQLiteStore, kept apart so mail is one concept in one file; it uses the store's
writer queue and reader pool like every other method.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import NotFound
from ..base import Clock, MailToken, OutboxMail, VisitorSession, iso

T = TypeVar("T")
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


class SQLiteMailStore:
    if TYPE_CHECKING:
        clock: Clock

        async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T: ...
        async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T: ...
        def _now(self) -> str: ...

    @staticmethod
    def _insert_mail(c: sqlite3.Connection, now: str, kind: str, customer_id: str | None,
                     conversation_id: str | None, address: str | None,
                     params: dict[str, Any] | None) -> int:
        cur = c.execute(
            "INSERT INTO mail_outbox (kind, customer_id, conversation_id, address, params, "
            "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, customer_id, conversation_id, address, json.dumps(params or {}), now, now),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def queue_account_mail(self, kind: str, email: str) -> None:
        now = self._now()

        def job(c: sqlite3.Connection) -> None:
            row = c.execute(
                "SELECT id FROM customers WHERE lower(email) = lower(?) "
                "ORDER BY last_active_at DESC, created_at DESC LIMIT 1", (email.strip(),)
            ).fetchone()
            if row is not None:
                self._insert_mail(c, now, kind, row[0], None, None, None)

        await self._write(job)

    async def queue_mail(
        self, kind: str, *, customer_id: str | None = None, conversation_id: str | None = None,
        address: str | None = None, params: dict[str, Any] | None = None,
    ) -> int:
        now = self._now()
        return await self._write(
            lambda c: self._insert_mail(c, now, kind, customer_id, conversation_id, address,
                                        params))

    async def queue_reply_mails(self, *, cutoff: str, horizon: str) -> int:
        # A read first: most rounds find nothing, and a read does not queue behind writes.
        if not await self._read(lambda c: c.execute(_UNSEEN_REPLIES,
                                                    (horizon, cutoff)).fetchone()):
            return 0
        now = self._now()

        def job(c: sqlite3.Connection) -> int:
            due = c.execute(_UNSEEN_REPLIES, (horizon, cutoff)).fetchall()
            for conversation_id, customer_id, first, last in due:
                c.execute(
                    "INSERT INTO conversation_reads (conversation_id, mailed_seq) VALUES (?, ?) "
                    "ON CONFLICT (conversation_id) DO UPDATE SET mailed_seq = "
                    "MAX(mailed_seq, excluded.mailed_seq)", (conversation_id, last))
                self._insert_mail(c, now, "reply", customer_id, conversation_id, None,
                                  {"from_seq": first, "to_seq": last})
            return len(due)

        return await self._write(job)

    async def claim_mail(self, lease_until: str) -> OutboxMail | None:
        now = self._now()

        def job(c: sqlite3.Connection) -> OutboxMail | None:
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
            return OutboxMail(id=row[0], kind=row[1], customer_id=row[2],
                              conversation_id=row[3], address=row[4],
                              params=json.loads(row[5]), attempts=row[6] + 1)

        return await self._write(job)

    async def finish_mail(self, mail_id: int, *, status: str, error: str | None = None,
                          retry_at: str | None = None) -> None:
        now = self._now()

        def job(c: sqlite3.Connection) -> None:
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

        await self._write(job)

    async def list_mail(self, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        def job(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            rows = c.execute(
                f"SELECT {', '.join(_OUTBOX_LIST)} FROM mail_outbox ORDER BY id DESC "
                "LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            (total,) = c.execute("SELECT COUNT(*) FROM mail_outbox").fetchone()
            return [dict(zip(_OUTBOX_LIST, r, strict=True)) for r in rows], total

        return await self._read(job)

    async def prune_mail(self, before: str) -> int:
        marks = ",".join("?" * len(FINISHED))
        return await self._write(lambda c: c.execute(
            f"DELETE FROM mail_outbox WHERE status IN ({marks}) AND created_at < ?",
            (*FINISHED, before)).rowcount)

    # -- one-time links -----------------------------------------------------------------------

    async def create_mail_token(
        self, token_hash: str, customer_id: str, purpose: str, expires_at: str,
        conversation_id: str | None = None,
    ) -> None:
        now = self._now()
        day_ago = iso(self.clock() - timedelta(days=1))

        def job(c: sqlite3.Connection) -> None:
            # A newer link voids the older ones; long-dead links of anyone are swept too.
            c.execute("DELETE FROM mail_tokens WHERE customer_id = ? AND purpose = ? "
                      "AND conversation_id IS ? AND used_at IS NULL",
                      (customer_id, purpose, conversation_id))
            c.execute("DELETE FROM mail_tokens WHERE expires_at < ?", (day_ago,))
            c.execute(
                "INSERT INTO mail_tokens (token_hash, customer_id, purpose, conversation_id, "
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash, customer_id, purpose, conversation_id, now, expires_at))

        await self._write(job)

    _UNSPENT = ("WHERE token_hash = ? AND purpose = ? AND used_at IS NULL "
                   "AND expires_at > ?")

    async def check_mail_token(self, token_hash: str, purpose: str) -> MailToken | None:
        now = self._now()
        row = await self._read(lambda c: c.execute(
            "SELECT customer_id, conversation_id FROM mail_tokens " + self._UNSPENT,
            (token_hash, purpose, now)).fetchone())
        return MailToken(*row) if row else None

    async def use_mail_token(self, token_hash: str, purpose: str) -> MailToken | None:
        now = self._now()
        row = await self._write(lambda c: c.execute(
            "UPDATE mail_tokens SET used_at = ? " + self._UNSPENT
            + " RETURNING customer_id, conversation_id",
            (now, token_hash, purpose, now)).fetchone())
        return MailToken(*row) if row else None

    async def create_linked_session(
        self, session_id: str, customer_id: str, *, ip: str | None, user_agent: str | None,
    ) -> VisitorSession:
        now = self._now()

        def job(c: sqlite3.Connection) -> VisitorSession:
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

        return await self._write(job)

    # -- read state ---------------------------------------------------------------------------

    async def mark_seen(self, conversation_id: str, seq: int, *, read: bool) -> int:
        def job(c: sqlite3.Connection) -> int:
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

        return await self._write(job)

    async def read_state(self, conversation_id: str) -> dict[str, int]:
        row = await self._read(lambda c: c.execute(
            "SELECT read_seq, seen_seq, mailed_seq FROM conversation_reads "
            "WHERE conversation_id = ?", (conversation_id,)).fetchone())
        read, seen, mailed = row or (0, 0, 0)
        return {"read_seq": read, "seen_seq": seen, "mailed_seq": mailed}
