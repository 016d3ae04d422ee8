"""The embedded SQLite store: the `Store` interface as a thin async front.

Writes go to the engine's group-commit writer, reads to its reader pool (engine.py); upkeep.py
scrubs and truncates after deletions, backup.py copies the database online.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from ...errors import Conflict, LegalHold, NotFound
from ..base import (
    DEFAULT_DISPLAY_NAME,
    AuditHasher,
    Clock,
    Conversation,
    ConversationSearch,
    ConversationSummary,
    Customer,
    Message,
    PolicyVersion,
    Staff,
    VisitorSession,
    chain_entry,
    iso,
    utc_now,
)
from . import conversations, policies, visitors
from . import search as full_text
from .engine import Engine
from .mail import SQLiteMailStore
from .upkeep import note_scrub_needed

T = TypeVar("T")

_CONVERSATION_COLUMNS = """
    c.id, c.customer_id, c.status, c.agent_id, s.name, c.created_at, c.claimed_at, c.closed_at,
    c.last_seq, c.last_message_at, s.display_name
"""
_CONVERSATION_WIDTH = 11
_CONVERSATION_FROM = "conversations c LEFT JOIN staff s ON s.id = c.agent_id"
# Author names are read at display time, so a corrected customer name shows everywhere. An
# agent's author name is the display name, never the sign-in name: customers see these frames.
_MESSAGE_SELECT = """
    SELECT m.conversation_id, m.seq, m.sender, m.sender_id,
           CASE m.sender WHEN 'visitor' THEN cu.name WHEN 'agent' THEN st.display_name
                ELSE 'system' END,
           m.body, m.client_msg_id, m.sent_at
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    JOIN customers cu ON cu.id = c.customer_id
    LEFT JOIN staff st ON m.sender = 'agent' AND st.id = CAST(m.sender_id AS INTEGER)
"""


def _conversation(row: tuple[Any, ...]) -> Conversation:
    return Conversation(*row)


def _message(row: tuple[Any, ...]) -> Message:
    return Message(*row)


_CUSTOMER = (
    "SELECT id, name, email, company, created_at, updated_at, last_active_at, legal_hold "
    "FROM customers"
)
_CONSENT_KEYS = ("policy_version", "policy_sha256", "given_at", "method", "on_behalf",
                 "withdrawn_at", "ip", "user_agent")
_CONSENT = (
    "SELECT policy_version, policy_sha256, given_at, method, on_behalf, withdrawn_at, ip, "
    "user_agent FROM consents"
)


def _customer(row: tuple[Any, ...]) -> Customer:
    return Customer(id=row[0], name=row[1], email=row[2], company=row[3], created_at=row[4],
                    updated_at=row[5], last_active_at=row[6], legal_hold=bool(row[7]))


def _like(query: str) -> str:
    """A LIKE pattern matching `query` literally anywhere (used with ESCAPE '\\')."""
    return "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _consent(row: tuple[Any, ...]) -> dict[str, Any]:
    data = dict(zip(_CONSENT_KEYS, row, strict=True))
    data["on_behalf"] = bool(data["on_behalf"])
    return data


def _fts_query(text: str) -> str | None:
    """User words to an FTS5 query: "a quoted phrase" as a phrase, else every word (AND).

    Each word is quoted, so FTS5 operators typed by a user are taken as plain words."""
    stripped = text.strip()
    if len(stripped) > 2 and stripped[0] == stripped[-1] == '"':
        words = re.findall(r"\w+", stripped[1:-1])
        return '"' + " ".join(words) + '"' if words else None
    words = re.findall(r"\w+", stripped)
    return " ".join(f'"{w}"*' for w in words) if words else None  # prefixes: "print" finds "printer"


def _staff(row: tuple[Any, ...]) -> Staff:
    return Staff(
        id=row[0], name=row[1], role=row[2], state=row[3], created_at=row[4],
        password_hash=row[5], failed_logins=row[6], last_failed_at=row[7],
        display_name=row[8],
    )


PURGE_BATCH = 100  # rows or accounts per purge transaction: each stays short
PURGE_COUNTS = ("accounts", "sessions_without_details", "closed_conversations", "access_events",
                "staff_sign_ins", "messages")
_HELD = "SELECT id FROM customers WHERE legal_hold = 1"
_HELD_SESSIONS = f"SELECT id FROM visitor_sessions WHERE customer_id IN ({_HELD})"
_STALE_ACCOUNTS = """SELECT id FROM customers cu WHERE legal_hold = 0 AND last_active_at <= ?
    AND NOT EXISTS (SELECT 1 FROM conversations WHERE customer_id = cu.id AND status != 'closed')"""


def _purge_counts(c: sqlite3.Connection, account_cutoff: str, access_cutoff: str,
                  conversation_cutoff: str, session_cutoff: str) -> dict[str, int]:
    """What a purge would delete now, counted as the real run counts it, rule by rule."""
    def one(sql: str, *args: Any) -> int:
        return int(c.execute(sql, args).fetchone()[0])

    old = (f"SELECT id FROM conversations WHERE status = 'closed' AND closed_at <= ? "
           f"AND customer_id NOT IN ({_HELD})")
    return {
        "access_events": one(f"SELECT COUNT(*) FROM access_events WHERE at <= ? "
                             f"AND session_id NOT IN ({_HELD_SESSIONS})", access_cutoff),
        "closed_conversations": one(f"SELECT COUNT(*) FROM ({old})", conversation_cutoff),
        "accounts": one(f"SELECT COUNT(*) FROM ({_STALE_ACCOUNTS})", account_cutoff),
        "sessions_without_details": one(
            "SELECT COUNT(*) FROM visitor_sessions WHERE customer_id IS NULL AND created_at <= ?",
            session_cutoff),
        "staff_sign_ins": one("SELECT COUNT(*) FROM login_events WHERE at <= ?", access_cutoff),
        # The old closed conversations go first; the stale accounts' erasure takes the rest.
        "messages": one(f"SELECT COUNT(*) FROM messages WHERE conversation_id IN ({old})",
                        conversation_cutoff)
        + one(f"""SELECT COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
                  WHERE c.customer_id IN ({_STALE_ACCOUNTS})
                  AND c.id NOT IN ({old})""", account_cutoff, conversation_cutoff),
    }


class SQLiteStore(SQLiteMailStore):
    def __init__(self, path: Path, clock: Clock = utc_now) -> None:
        self.path = path
        self.clock = clock
        self.engine = Engine(path)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> SQLiteStore:
        await self.engine.open(self._now)
        return self

    async def close(self) -> None:
        await self.engine.close()

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await self.engine.write(job)

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await self.engine.read(job)

    def _now(self) -> str:
        return iso(self.clock())

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # -- policy -----------------------------------------------------------------------------

    async def publish_policy(self, policy: PolicyVersion) -> PolicyVersion:
        now = self._now()
        return await self.engine.write(lambda c: policies.publish(c, policy, now))

    async def current_policy(self) -> PolicyVersion | None:
        return await self.engine.read(policies.current)

    async def get_policy(self, version: str) -> PolicyVersion | None:
        return await self.engine.read(lambda c: policies.get(c, version))

    async def list_policies(self) -> list[PolicyVersion]:
        return await self.engine.read(policies.list_all)

    # -- visitors ---------------------------------------------------------------------------

    async def create_visitor_session(self, session_id: str) -> None:
        now = self._now()
        await self.engine.write(lambda c: visitors.create_session(c, session_id, now))

    async def get_visitor_session(self, session_id: str) -> VisitorSession | None:
        return await self.engine.read(lambda c: visitors.get_session(c, session_id))

    async def add_consent(
        self, session_id: str, *, policy_version: str, policy_sha256: str, ip: str | None,
        user_agent: str | None, method: str, on_behalf: bool,
    ) -> dict[str, Any]:
        now = self._now()
        return await self.engine.write(lambda c: visitors.add_consent(
            c, session_id, policy_version=policy_version, policy_sha256=policy_sha256, ip=ip,
            user_agent=user_agent, method=method, on_behalf=on_behalf, now=now))

    async def save_customer(
        self, session_id: str, *, name: str, email: str, company: str
    ) -> Customer:
        now = self._now()
        return await self.engine.write(lambda c: visitors.save_customer(
            c, session_id, name=name, email=email, company=company, now=now))

    async def rotate_visitor_session(self, session_id: str, new_session_id: str) -> None:
        await self.engine.write(
            lambda c: visitors.rotate_session(c, session_id, new_session_id))

    @staticmethod
    def _customer(c: sqlite3.Connection, customer_id: str) -> Customer:
        row = c.execute(_CUSTOMER + " WHERE id = ?", (customer_id,)).fetchone()
        if row is None:
            raise NotFound("No such customer.")
        return _customer(row)

    async def get_customer(self, customer_id: str) -> Customer | None:
        return await self.engine.read(lambda c: visitors.get_customer(c, customer_id))

    async def record_access(
        self, session_id: str, kind: str, ip: str | None, user_agent: str | None
    ) -> None:
        now = self._now()
        await self.engine.write(
            lambda c: visitors.record_access(c, session_id, kind, ip, user_agent, now))

    # -- conversations ----------------------------------------------------------------------

    async def open_conversation(
        self, customer_id: str, *, create: bool = True
    ) -> tuple[Conversation, bool]:
        now = self._now()
        return await self.engine.write(lambda c: conversations.open_conversation(
            c, customer_id, create=create, now=now))

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return await self.engine.read(lambda c: conversations.get(c, conversation_id))

    async def claim_conversation(
        self, conversation_id: str, staff_id: int
    ) -> tuple[Conversation, bool]:
        now = self._now()
        return await self.engine.write(
            lambda c: conversations.claim(c, conversation_id, staff_id, now))

    async def close_conversation(self, conversation_id: str) -> Conversation | None:
        now = self._now()
        return await self.engine.write(lambda c: conversations.close(c, conversation_id, now))

    async def append_message(
        self, conversation_id: str, *, sender: str, sender_id: str, author: str, body: str,
        client_msg_id: str | None,
    ) -> tuple[Message, bool, str]:
        now = self._now()
        return await self.engine.write(lambda c: conversations.append(
            c, conversation_id, sender=sender, sender_id=sender_id, author=author, body=body,
            client_msg_id=client_msg_id, now=now))

    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int = 1000
    ) -> list[Message]:
        return await self.engine.read(
            lambda c: conversations.messages_after(c, conversation_id, after_seq, limit))

    async def open_conversations(self) -> list[ConversationSummary]:
        return await self.engine.read(conversations.open_conversations)

    async def conversation_summary(self, conversation_id: str) -> ConversationSummary | None:
        return await self.engine.read(lambda c: conversations.summary(c, conversation_id))

    async def search_conversations(
        self, search: ConversationSearch, *, limit: int = 50, offset: int = 0,
    ) -> tuple[list[ConversationSummary], int]:
        return await self.engine.read(
            lambda c: full_text.search_conversations(c, search, limit=limit, offset=offset))

    async def messages_between(
        self, created_from: str | None, created_before: str | None, after_id: int, limit: int
    ) -> tuple[list[Message], int]:
        return await self.engine.read(lambda c: conversations.messages_between(
            c, created_from, created_before, after_id, limit))

    # -- privacy rights ---------------------------------------------------------------------

    async def update_customer(self, customer_id: str, fields: dict[str, str]) -> Customer:
        now = self._now()
        return await self.engine.write(
            lambda c: visitors.update_customer(c, customer_id, fields, now))

    async def customers_by_email(self, email: str) -> list[Customer]:
        return await self.engine.read(lambda c: visitors.customers_by_email(c, email))

    async def list_consents(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.list_consents(c, customer_id))

    async def session_consents(self, session_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.session_consents(c, session_id))

    async def withdraw_consents(self, session_id: str) -> int:
        now = self._now()
        return await self.engine.write(lambda c: visitors.withdraw_consents(c, session_id, now))

    async def customer_sessions(self, customer_id: str) -> list[str]:
        return await self.engine.read(lambda c: visitors.customer_sessions(c, customer_id))

    async def export_customer(self, customer_id: str) -> dict[str, Any]:
        def job(c: sqlite3.Connection) -> dict[str, Any]:
            customer = self._customer(c, customer_id)
            conversations = []
            for row in c.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM {_CONVERSATION_FROM} "
                "WHERE c.customer_id = ? ORDER BY c.created_at", (customer_id,)
            ).fetchall():
                conv = _conversation(row)
                messages = [
                    _message(m).frame() for m in c.execute(
                        _MESSAGE_SELECT + " WHERE m.conversation_id = ? ORDER BY m.seq",
                        (conv.id,)).fetchall()
                ]
                conversations.append({
                    "id": conv.id, "status": conv.status, "created_at": conv.created_at,
                    "claimed_at": conv.claimed_at, "closed_at": conv.closed_at,
                    "agent": conv.agent_display_name, "messages": messages,
                })
            sessions = [
                {"ref": sid[:12], "created_at": created, "last_seen_at": seen,
                 "revoked_at": revoked}
                for sid, created, seen, revoked in c.execute(
                    "SELECT id, created_at, last_seen_at, revoked_at FROM visitor_sessions "
                    "WHERE customer_id = ? ORDER BY created_at", (customer_id,)).fetchall()
            ]
            access = [
                {"session_ref": sid[:12], "at": at, "kind": kind, "ip": ip,
                 "user_agent": agent}
                for sid, at, kind, ip, agent in c.execute(
                    """SELECT a.session_id, a.at, a.kind, a.ip, a.user_agent
                       FROM access_events a JOIN visitor_sessions s ON s.id = a.session_id
                       WHERE s.customer_id = ? ORDER BY a.id""", (customer_id,)).fetchall()
            ]
            consents = [_consent(r) for r in c.execute(
                _CONSENT + " WHERE customer_id = ? ORDER BY id", (customer_id,)).fetchall()]
            return {
                "account": {**customer.public(), "id": customer.id,
                            "created_at": customer.created_at,
                            "updated_at": customer.updated_at,
                            "last_active_at": customer.last_active_at,
                            "legal_hold": customer.legal_hold},
                "consents": consents,
                "conversations": conversations,
                "sessions": sessions,
                "access_records": access,
            }

        return await self._read(job)

    async def export_session(self, session_id: str) -> dict[str, Any]:
        def job(c: sqlite3.Connection) -> dict[str, Any]:
            row = c.execute("SELECT created_at, last_seen_at, revoked_at FROM visitor_sessions "
                            "WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise NotFound("That session has ended.")
            return {
                "account": None,
                "consents": [_consent(r) for r in c.execute(
                    _CONSENT + " WHERE session_id = ? ORDER BY id", (session_id,))],
                "conversations": [],
                "sessions": [{"ref": session_id[:12], "created_at": row[0],
                              "last_seen_at": row[1], "revoked_at": row[2]}],
                "access_records": [
                    {"session_ref": session_id[:12], "at": at, "kind": kind, "ip": ip,
                     "user_agent": agent}
                    for at, kind, ip, agent in c.execute(
                        "SELECT at, kind, ip, user_agent FROM access_events WHERE session_id = ? "
                        "ORDER BY id", (session_id,))],
            }

        return await self._read(job)

    def _erase(self, c: sqlite3.Connection, customer_id: str, reason: str, now: str
               ) -> dict[str, Any]:
        customer = self._customer(c, customer_id)
        if customer.legal_hold:
            raise LegalHold()
        sessions = [r[0] for r in c.execute(
            "SELECT id FROM visitor_sessions WHERE customer_id = ?", (customer_id,))]
        conversations = [r[0] for r in c.execute(
            "SELECT id FROM conversations WHERE customer_id = ?", (customer_id,))]
        marks = ",".join("?" * len(conversations))
        (messages,) = c.execute(
            f"SELECT COUNT(*) FROM messages WHERE conversation_id IN ({marks})", conversations
        ).fetchone() if conversations else (0,)
        versions = sorted({r[0] for r in c.execute(
            "SELECT policy_version FROM consents WHERE customer_id = ?", (customer_id,))})
        smarks = ",".join("?" * len(sessions))
        consents = c.execute(
            f"DELETE FROM consents WHERE customer_id = ? OR session_id IN ({smarks})",
            (customer_id, *sessions)).rowcount
        access = c.execute(
            f"DELETE FROM access_events WHERE session_id IN ({smarks})", sessions
        ).rowcount if sessions else 0
        if conversations:
            c.execute(f"DELETE FROM messages WHERE conversation_id IN ({marks})", conversations)
            c.execute(f"DELETE FROM conversations WHERE id IN ({marks})", conversations)
            note_scrub_needed(c, now)
        c.execute("DELETE FROM visitor_sessions WHERE customer_id = ?", (customer_id,))
        c.execute("DELETE FROM customers WHERE id = ?", (customer_id,))
        tombstone = {
            "id": "er_" + secrets.token_hex(10), "at": now, "reason": reason,
            "conversations": len(conversations), "messages": messages,
            "sessions": len(sessions), "consents": consents, "access_events": access,
            "policy_versions": versions,
        }
        c.execute(
            "INSERT INTO erasures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tombstone["id"], now, reason, len(conversations), messages, len(sessions),
             consents, access, json.dumps(versions)),
        )
        return {**tombstone, "session_ids": sessions, "conversation_ids": conversations}

    async def erase_customer(self, customer_id: str, *, reason: str) -> dict[str, Any]:
        now = self._now()
        result = await self._write(lambda c: self._erase(c, customer_id, reason, now))
        await self.compact()
        return result

    def _erase_bare_session(self, c: sqlite3.Connection, session_id: str, reason: str, now: str
                            ) -> dict[str, Any]:
        """Erase a session that never became a customer: its consents and access records."""
        versions = sorted({r[0] for r in c.execute(
            "SELECT policy_version FROM consents WHERE session_id = ?", (session_id,))})
        consents = c.execute("DELETE FROM consents WHERE session_id = ?", (session_id,)).rowcount
        access = c.execute("DELETE FROM access_events WHERE session_id = ?",
                           (session_id,)).rowcount
        c.execute("DELETE FROM visitor_sessions WHERE id = ?", (session_id,))
        tombstone = {"id": "er_" + secrets.token_hex(10), "at": now, "reason": reason,
                     "conversations": 0, "messages": 0, "sessions": 1, "consents": consents,
                     "access_events": access, "policy_versions": versions}
        c.execute("INSERT INTO erasures VALUES (?, ?, ?, 0, 0, 1, ?, ?, ?)",
                  (tombstone["id"], now, reason, consents, access, json.dumps(versions)))
        return {**tombstone, "session_ids": [session_id], "conversation_ids": []}

    async def erase_session(self, session_id: str, *, reason: str) -> dict[str, Any]:
        now = self._now()

        def job(c: sqlite3.Connection) -> dict[str, Any]:
            row = c.execute("SELECT customer_id FROM visitor_sessions WHERE id = ?",
                            (session_id,)).fetchone()
            if row is None:
                raise NotFound("That session has ended.")
            if row[0] is not None:
                return self._erase(c, row[0], reason, now)
            return self._erase_bare_session(c, session_id, reason, now)

        result = await self._write(job)
        await self.compact()
        return result

    async def purge(
        self, *, account_cutoff: str, access_cutoff: str, conversation_cutoff: str,
        session_cutoff: str, dry_run: bool,
    ) -> dict[str, Any]:
        """Apply the retention rules in batches of PURGE_BATCH, each its own short transaction,
        so a large purge never holds chat writes up; a crash midway leaves a partial purge that
        the next run completes. A dry run only counts, on a reader."""
        if dry_run:
            counts = await self._read(lambda c: _purge_counts(
                c, account_cutoff, access_cutoff, conversation_cutoff, session_cutoff))
            return {"counts": counts, "session_ids": [], "conversation_ids": [], "dry_run": True}
        now = self._now()
        Step = tuple[int, dict[str, int], list[str], list[str]]  # done, counts, sessions, convs

        def access(c: sqlite3.Connection) -> Step:
            n = c.execute(
                f"""DELETE FROM access_events WHERE id IN (SELECT id FROM access_events
                    WHERE at <= ? AND session_id NOT IN ({_HELD_SESSIONS}) LIMIT ?)""",
                (access_cutoff, PURGE_BATCH)).rowcount
            return n, {"access_events": n}, [], []

        def conversations(c: sqlite3.Connection) -> Step:
            old = [r[0] for r in c.execute(
                f"""SELECT id FROM conversations WHERE status = 'closed' AND closed_at <= ?
                    AND customer_id NOT IN ({_HELD}) LIMIT ?""",
                (conversation_cutoff, PURGE_BATCH))]
            messages = 0
            for conversation_id in old:
                messages += c.execute(
                    "DELETE FROM messages WHERE conversation_id = ?", (conversation_id,)).rowcount
                c.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            if old:
                note_scrub_needed(c, now)
            return len(old), {"closed_conversations": len(old), "messages": messages}, [], old

        def accounts(c: sqlite3.Connection) -> Step:
            stale = [r[0] for r in c.execute(
                f"{_STALE_ACCOUNTS} LIMIT ?", (account_cutoff, PURGE_BATCH))]
            erased = [self._erase(c, customer_id, "retention", now) for customer_id in stale]
            return (len(stale),
                    {"accounts": len(stale), "messages": sum(e["messages"] for e in erased)},
                    [s for e in erased for s in e["session_ids"]],
                    [x for e in erased for x in e["conversation_ids"]])

        def unfinished(c: sqlite3.Connection) -> Step:
            # Sessions that consented but never gave details expire within hours: anyone can
            # make them, so they must not pile up. No tombstone each (they hold no account);
            # the purge's audit entry counts them. They never had a chat socket to close.
            ids = [r[0] for r in c.execute(
                "SELECT id FROM visitor_sessions WHERE customer_id IS NULL AND created_at <= ? "
                "LIMIT ?", (session_cutoff, PURGE_BATCH))]
            marks = ",".join("?" * len(ids))
            if ids:
                c.execute(f"DELETE FROM consents WHERE session_id IN ({marks})", ids)
                c.execute(f"DELETE FROM access_events WHERE session_id IN ({marks})", ids)
                c.execute(f"DELETE FROM visitor_sessions WHERE id IN ({marks})", ids)
            return len(ids), {"sessions_without_details": len(ids)}, [], []

        def logins(c: sqlite3.Connection) -> Step:
            # Staff sign-in records hold addresses too: kept as long as access records.
            n = c.execute(
                "DELETE FROM login_events WHERE id IN (SELECT id FROM login_events WHERE at <= ? "
                "LIMIT ?)", (access_cutoff, PURGE_BATCH)).rowcount
            return n, {"staff_sign_ins": n}, [], []

        counts = dict.fromkeys(PURGE_COUNTS, 0)
        session_ids: list[str] = []
        conversation_ids: list[str] = []
        for step in (access, conversations, accounts, unfinished, logins):
            while True:
                done, delta, sessions, convs = await self._write(step)
                for key, value in delta.items():
                    counts[key] += value
                session_ids += sessions
                conversation_ids += convs
                if done < PURGE_BATCH:
                    break
        await self.compact()
        return {"counts": counts, "session_ids": session_ids,
                "conversation_ids": conversation_ids, "dry_run": False}

    async def compact(self) -> None:
        """Make deleted content unrecoverable from the files: scrub the search index, then empty
        the WAL, without stalling writes (see upkeep.py)."""
        await self.engine.upkeep.scrub_if_needed()
        await self.engine.upkeep.truncate_wal()

    async def set_legal_hold(self, customer_id: str, hold: bool) -> Customer:
        return await self.engine.write(lambda c: visitors.set_legal_hold(c, customer_id, hold))

    async def list_customers(
        self, *, query: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        return await self.engine.read(
            lambda c: visitors.list_customers(c, query=query, limit=limit, offset=offset))

    # -- staff ------------------------------------------------------------------------------

    _STAFF = (
        "SELECT id, name, role, state, created_at, password_hash, failed_logins, last_failed_at, "
        "display_name FROM staff"
    )

    async def add_staff(self, name: str, role: str, password_hash: str,
                        display_name: str = DEFAULT_DISPLAY_NAME) -> Staff:
        now = self._now()

        def job(c: sqlite3.Connection) -> Staff:
            if c.execute("SELECT 1 FROM staff WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"A staff member named {name!r} exists already.",
                               code="name_taken")
            cur = c.execute(
                "INSERT INTO staff (name, role, password_hash, created_at, display_name) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, role, password_hash, now, display_name),
            )
            return _staff(c.execute(self._STAFF + " WHERE id = ?", (cur.lastrowid,)).fetchone())

        return await self._write(job)

    async def get_staff(self, staff_id: int) -> Staff | None:
        row = await self._read(
            lambda c: c.execute(self._STAFF + " WHERE id = ?", (staff_id,)).fetchone()
        )
        return _staff(row) if row else None

    async def get_staff_by_name(self, name: str) -> Staff | None:
        row = await self._read(
            lambda c: c.execute(self._STAFF + " WHERE name = ?", (name,)).fetchone()
        )
        return _staff(row) if row else None

    async def list_staff(self) -> list[Staff]:
        rows = await self._read(lambda c: c.execute(self._STAFF + " ORDER BY name").fetchall())
        return [_staff(r) for r in rows]

    async def count_admins(self) -> int:
        row = await self._read(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM staff WHERE role = 'admin' AND state = 'active'"
            ).fetchone()
        )
        return int(row[0])

    async def set_password(self, staff_id: int, password_hash: str) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE staff SET password_hash = ? WHERE id = ?", (password_hash, staff_id)
            )
        )

    async def update_staff(
        self, staff_id: int, *, role: str | None = None, state: str | None = None,
        display_name: str | None = None,
    ) -> Staff:
        def job(c: sqlite3.Connection) -> Staff:
            found = c.execute(self._STAFF + " WHERE id = ?", (staff_id,)).fetchone()
            if found is None:
                raise NotFound("No such staff member.")
            if role is not None:
                c.execute("UPDATE staff SET role = ? WHERE id = ?", (role, staff_id))
            if state is not None:
                c.execute("UPDATE staff SET state = ? WHERE id = ?", (state, staff_id))
            if display_name is not None:
                c.execute("UPDATE staff SET display_name = ? WHERE id = ?",
                          (display_name, staff_id))
            (admins,) = c.execute(
                "SELECT COUNT(*) FROM staff WHERE role = 'admin' AND state = 'active'"
            ).fetchone()
            if admins == 0:  # rolled back: the job's savepoint undoes the update
                raise Conflict("That would leave no active admin.", code="last_admin")
            return _staff(c.execute(self._STAFF + " WHERE id = ?", (staff_id,)).fetchone())

        return await self._write(job)

    async def revoke_staff_sessions(self, staff_id: int) -> list[str]:
        now = self._now()

        def job(c: sqlite3.Connection) -> list[str]:
            ids = [r[0] for r in c.execute(
                "SELECT id FROM staff_sessions WHERE staff_id = ? AND revoked_at IS NULL",
                (staff_id,))]
            c.execute("UPDATE staff_sessions SET revoked_at = ? WHERE staff_id = ? "
                      "AND revoked_at IS NULL", (now, staff_id))
            return ids

        return await self._write(job)

    async def note_login(self, staff_id: int, ok: bool) -> None:
        now = self._now()
        if ok:
            await self._write(lambda c: c.execute(
                "UPDATE staff SET failed_logins = 0, last_failed_at = NULL WHERE id = ?",
                (staff_id,)))
        else:
            await self._write(lambda c: c.execute(
                "UPDATE staff SET failed_logins = failed_logins + 1, last_failed_at = ? "
                "WHERE id = ?", (now, staff_id)))

    async def last_logins(self) -> dict[int, str]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT staff_id, MAX(at) FROM login_events WHERE outcome = 'success' "
                "AND staff_id IS NOT NULL GROUP BY staff_id"
            ).fetchall()
        )
        return {staff_id: at for staff_id, at in rows}

    async def customer_access(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.customer_access(c, customer_id))

    async def create_staff_session(self, session_id: str, staff_id: int, expires_at: str) -> None:
        now = self._now()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO staff_sessions (id, staff_id, created_at, last_seen_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (session_id, staff_id, now, now, expires_at),
            )
        )

    async def get_staff_session(self, session_id: str, idle_cutoff: str | None = None
                                ) -> Staff | None:
        now = self._now()
        row = await self._read(
            lambda c: c.execute(
                """SELECT st.id, st.name, st.role, st.state, st.created_at, st.password_hash,
                          st.failed_logins, st.last_failed_at, st.display_name, ss.last_seen_at
                   FROM staff_sessions ss JOIN staff st ON st.id = ss.staff_id
                   WHERE ss.id = ? AND ss.revoked_at IS NULL AND ss.expires_at > ?
                   AND ss.last_seen_at > ? AND st.state = 'active'""",
                (session_id, now, idle_cutoff or ""),
            ).fetchone()
        )
        if row is None:
            return None
        if row[9] < iso(self.clock() - timedelta(minutes=1)):
            # Refresh the idle clock at most once a minute: a write per request is waste.
            await self._write(lambda c: c.execute(
                "UPDATE staff_sessions SET last_seen_at = ? WHERE id = ?", (now, session_id)))
        return _staff(row[:9])

    async def revoke_staff_session(self, session_id: str) -> None:
        now = self._now()
        await self._write(
            lambda c: c.execute(
                "UPDATE staff_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, session_id),
            )
        )

    async def record_login(
        self, staff_id: int | None, ip: str | None, user_agent: str | None, outcome: str
    ) -> None:
        now = self._now()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO login_events (at, staff_id, ip, user_agent, outcome) "
                "VALUES (?, ?, ?, ?, ?)",
                (now, staff_id, ip, user_agent, outcome),
            )
        )

    async def login_events(
        self, staff_id: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        clause = " WHERE staff_id = ?" if staff_id is not None else ""
        args: tuple[Any, ...] = (staff_id,) if staff_id is not None else ()
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id, at, staff_id, ip, user_agent, outcome FROM login_events"
                + clause + " ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        )
        keys = ("id", "at", "staff_id", "ip", "user_agent", "outcome")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # -- setup tokens -----------------------------------------------------------------------

    async def create_setup_token(self, token_hash: str, expires_at: str) -> None:
        now = self._now()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES (?, ?, ?)",
                (token_hash, now, expires_at),
            )
        )

    async def create_first_admin(
        self, token_hash: str, name: str, password_hash: str
    ) -> Staff | None:
        now = self._now()

        def job(c: sqlite3.Connection) -> Staff | None:
            if c.execute("SELECT 1 FROM staff WHERE role = 'admin' AND state = 'active'").fetchone():
                return None
            if c.execute("SELECT 1 FROM staff WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"A staff member named {name!r} exists already.", code="name_taken")
            used = c.execute(
                "UPDATE setup_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL "
                "AND expires_at > ?",
                (now, token_hash, now),
            )
            if used.rowcount != 1:
                return None
            cur = c.execute(
                "INSERT INTO staff (name, role, password_hash, created_at) VALUES (?, 'admin', ?, ?)",
                (name, password_hash, now),
            )
            return _staff(c.execute(self._STAFF + " WHERE id = ?", (cur.lastrowid,)).fetchone())

        return await self._write(job)

    async def setup_token_valid(self, token_hash: str) -> bool:
        now = self._now()
        row = await self._read(
            lambda c: c.execute(
                "SELECT 1 FROM setup_tokens WHERE token_hash = ? AND used_at IS NULL "
                "AND expires_at > ?",
                (token_hash, now),
            ).fetchone()
        )
        return row is not None

    # -- audit ------------------------------------------------------------------------------

    _AUDIT_KEYS = ("id", "at", "actor", "action", "ip", "target", "detail", "prev_hash", "hash")

    def _audit_row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        entry = dict(zip(self._AUDIT_KEYS, row, strict=True))
        entry["detail"] = json.loads(entry["detail"])
        return entry

    @staticmethod
    def _append_audit(c: sqlite3.Connection, entry: dict[str, Any], hasher: AuditHasher,
                      now: str, prev: tuple[int, str] | None = None) -> dict[str, Any]:
        """Append after `prev` (id, hash), by default the newest entry."""
        if prev is None:
            last = c.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
            prev = (last[0], last[1]) if last else (0, "")
        full = chain_entry(prev, entry, hasher, now)
        prev_hash, digest = full["prev_hash"], full["hash"]
        c.execute(
            "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (full["id"], now, full["actor"], full["action"], full["ip"], full["target"],
             json.dumps(full["detail"], sort_keys=True), prev_hash, digest),
        )
        return full

    async def append_audit(self, entry: dict[str, Any], hasher: AuditHasher) -> dict[str, Any]:
        now = self._now()
        return await self._write(lambda c: self._append_audit(c, entry, hasher, now))

    async def cut_audit(self, before: str, entry: dict[str, Any], hasher: AuditHasher, *,
                        dry_run: bool = False) -> dict[str, Any] | None:
        now = self._now()
        # Always a prefix of the chain: up to the newest entry older than `before`.
        upto = "SELECT MAX(id) FROM audit_log WHERE at < ?"
        if dry_run:
            (n,) = await self._read(lambda c: c.execute(
                f"SELECT COUNT(*) FROM audit_log WHERE id <= ({upto})", (before,)).fetchone())
            return {"cut": n}

        def job(c: sqlite3.Connection) -> dict[str, Any] | None:
            last = c.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
            if last is None:
                return None
            cut = c.execute(f"DELETE FROM audit_log WHERE id <= ({upto})", (before,)).rowcount
            if not cut:
                return None
            first = c.execute("SELECT id, prev_hash FROM audit_log ORDER BY id LIMIT 1").fetchone()
            first_kept, first_prev = first if first else (last[0] + 1, last[1])
            detail = {**(entry.get("detail") or {}), "cut": cut, "first_kept": first_kept,
                      "first_kept_prev_hash": first_prev}
            return self._append_audit(c, {**entry, "detail": detail}, hasher, now,
                                      (last[0], last[1]))

        return await self._write(job)

    async def list_audit(
        self, limit: int = 100, offset: int = 0, *, actor: str | None = None,
        action: str | None = None, target: str | None = None, since: str | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        for column, value, op in (("actor", actor, "="), ("target", target, "="),
                                  ("at", since, ">="), ("at", before, "<")):
            if value:
                where.append(f"{column} {op} ?")
                args.append(value)
        if action:  # "transcript" matches transcript.view and transcript.download
            where.append("(action = ? OR action LIKE ? ESCAPE '\\')")
            args += [action, _like(action + ".")[1:]]
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._read(
            lambda c: c.execute(
                "SELECT * FROM audit_log" + clause + " ORDER BY id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        )
        return [self._audit_row(r) for r in rows]

    async def all_audit(self) -> list[dict[str, Any]]:
        rows = await self._read(
            lambda c: c.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
        )
        return [self._audit_row(r) for r in rows]
