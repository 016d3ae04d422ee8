"""The embedded SQLite store: the `Store` interface as a thin async front.

Writes go to the engine's group-commit writer, reads to its reader pool (engine.py); upkeep.py
scrubs and truncates after deletions, backup.py copies the database online.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from ...errors import Conflict, NotFound
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
from . import conversations, policies, privacy, visitors
from . import search as full_text
from .engine import Engine
from .mail import SQLiteMailStore

T = TypeVar("T")

def _staff(row: tuple[Any, ...]) -> Staff:
    return Staff(
        id=row[0], name=row[1], role=row[2], state=row[3], created_at=row[4],
        password_hash=row[5], failed_logins=row[6], last_failed_at=row[7],
        display_name=row[8],
    )


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
        return await self.engine.read(lambda c: privacy.export_customer(c, customer_id))

    async def export_session(self, session_id: str) -> dict[str, Any]:
        return await self.engine.read(lambda c: privacy.export_session(c, session_id))

    async def erase_customer(self, customer_id: str, *, reason: str) -> dict[str, Any]:
        now = self._now()
        result = await self.engine.write(lambda c: privacy.erase(c, customer_id, reason, now))
        await self.compact()
        return result

    async def erase_session(self, session_id: str, *, reason: str) -> dict[str, Any]:
        now = self._now()
        result = await self.engine.write(
            lambda c: privacy.erase_session(c, session_id, reason, now))
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
            counts = await self.engine.read(lambda c: privacy.purge_counts(
                c, account_cutoff=account_cutoff, access_cutoff=access_cutoff,
                conversation_cutoff=conversation_cutoff, session_cutoff=session_cutoff))
            return {"counts": counts, "session_ids": [], "conversation_ids": [], "dry_run": True}
        now = self._now()
        steps: tuple[Callable[[sqlite3.Connection], privacy.Step], ...] = (
            lambda c: privacy.purge_access(c, access_cutoff),
            lambda c: privacy.purge_conversations(c, conversation_cutoff, now),
            lambda c: privacy.purge_accounts(c, account_cutoff, now),
            lambda c: privacy.purge_unfinished(c, session_cutoff),
            lambda c: privacy.purge_logins(c, access_cutoff),
        )
        counts = dict.fromkeys(privacy.PURGE_COUNTS, 0)
        session_ids: list[str] = []
        conversation_ids: list[str] = []
        for step in steps:
            while True:
                done, delta, sessions, convs = await self.engine.write(step)
                for key, value in delta.items():
                    counts[key] += value
                session_ids += sessions
                conversation_ids += convs
                if done < privacy.PURGE_BATCH:
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
            args += [action, visitors.like(action + ".")[1:]]
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
