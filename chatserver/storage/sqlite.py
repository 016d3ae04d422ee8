"""The embedded SQLite store.

One writer thread owns the only writing connection; writes queue up and run in batches inside one
`BEGIN IMMEDIATE` transaction, each job in its own savepoint, then one commit with
`synchronous=FULL` (group commit: one fsync serves every message that arrived meanwhile, and no
caller hears "stored" before the commit returns). Reads run on a small pool of reader connections,
which WAL lets proceed beside the writer. `secure_delete` overwrites deleted content.

We call the stdlib sqlite3 module from our own threads rather than through aiosqlite: a batch is
one thread hop for the whole transaction, where aiosqlite makes one hop per statement.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AlreadyClaimed, Conflict, ConversationClosed, LegalHold, NotFound
from . import notes_sql
from .base import (
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
from .sqlite_mail import SQLiteMailStore
from .sqlite_team import SQLiteTeamStore
from .sqlite_upkeep import BUSY_TIMEOUT_MS, Upkeep, note_scrub_needed

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
MAX_BATCH = 512

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


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


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


def _statements(script: str) -> list[str]:
    """Split a migration into statements; triggers hold semicolons of their own."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError("a migration ends in the middle of a statement")
    return statements


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("chatserver.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


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


class SQLiteStore(SQLiteMailStore, SQLiteTeamStore):
    def __init__(self, path: Path, clock: Clock = utc_now) -> None:
        self.path = path
        self.clock = clock
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(4, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._jobs: list[tuple[Job, asyncio.Future[Any]]] = []
        self._flushing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._upkeep = Upkeep(path, self._write, self._on_writer, lambda: self._writer)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> SQLiteStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(self._writer_pool, self._open_writer)
        await self._upkeep.scrub_if_needed()  # a scrub a crash interrupted
        return self

    def _open_writer(self) -> sqlite3.Connection:
        conn = _connect(str(self.path))
        # Checkpoints run on a thread of their own (sqlite_upkeep), never inside a commit here.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)", (version, iso(self.clock()))
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return conn

    async def close(self) -> None:
        await self._upkeep.close()
        await self._idle.wait()
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            await loop.run_in_executor(self._writer_pool, self._writer.close)
            self._writer = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)

    # -- plumbing ---------------------------------------------------------------------------

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, future))
        if not self._flushing:
            self._flushing = True
            self._idle.clear()
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._jobs:
                batch, self._jobs = self._jobs[:MAX_BATCH], self._jobs[MAX_BATCH:]
                try:
                    results = await loop.run_in_executor(self._writer_pool, self._run_batch, batch)
                except BaseException as exc:  # the commit itself failed: nobody's write stuck
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                self._upkeep.after_batch()
        finally:
            self._flushing = False
            self._idle.set()

    def _run_batch(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        conn = self._writer
        assert conn is not None, "store is closed"
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job, _ in batch:
                conn.execute("SAVEPOINT job")
                try:
                    results.append(job(conn))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append(exc)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(str(self.path))
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def _on_writer(self, job: Callable[[], T]) -> T:
        """Run `job` on the writer's thread between batches (outside any transaction)."""
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, job)

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, lambda: job(self._reader()))

    def _now(self) -> str:
        return iso(self.clock())

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # -- policy -----------------------------------------------------------------------------

    async def publish_policy(self, policy: PolicyVersion) -> PolicyVersion:
        now = self._now()

        def job(c: sqlite3.Connection) -> PolicyVersion:
            if c.execute(
                "SELECT 1 FROM policy_versions WHERE version = ?", (policy.version,)
            ).fetchone():
                raise Conflict(f"Policy version {policy.version} exists already.",
                               code="version_exists")
            (ordinal,) = c.execute(
                "SELECT COALESCE(MAX(ordinal), 0) + 1 FROM policy_versions"
            ).fetchone()
            c.execute(
                "INSERT INTO policy_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (policy.version, policy.effective_date, policy.summary, policy.text,
                 policy.sha256, now, ordinal),
            )
            return PolicyVersion(policy.version, policy.effective_date, policy.summary,
                                 policy.text, policy.sha256, now)

        return await self._write(job)

    _POLICY = "SELECT version, effective_date, summary, text, sha256, published_at FROM policy_versions"

    async def current_policy(self) -> PolicyVersion | None:
        row = await self._read(
            lambda c: c.execute(self._POLICY + " ORDER BY ordinal DESC LIMIT 1").fetchone()
        )
        return PolicyVersion(*row) if row else None

    async def get_policy(self, version: str) -> PolicyVersion | None:
        row = await self._read(
            lambda c: c.execute(self._POLICY + " WHERE version = ?", (version,)).fetchone()
        )
        return PolicyVersion(*row) if row else None

    async def list_policies(self) -> list[PolicyVersion]:
        rows = await self._read(
            lambda c: c.execute(self._POLICY + " ORDER BY ordinal DESC").fetchall()
        )
        return [PolicyVersion(*r) for r in rows]

    # -- visitors ---------------------------------------------------------------------------

    async def create_visitor_session(self, session_id: str) -> None:
        now = self._now()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO visitor_sessions (id, created_at, last_seen_at) VALUES (?, ?, ?)",
                (session_id, now, now),
            )
        )

    async def get_visitor_session(self, session_id: str) -> VisitorSession | None:
        def job(c: sqlite3.Connection) -> VisitorSession | None:
            row = c.execute(
                """SELECT s.id, s.customer_id,
                          (SELECT policy_version FROM consents WHERE session_id = s.id
                           AND withdrawn_at IS NULL ORDER BY id DESC LIMIT 1)
                   FROM visitor_sessions s WHERE s.id = ? AND s.revoked_at IS NULL""",
                (session_id,),
            ).fetchone()
            return VisitorSession(*row) if row else None

        return await self._read(job)

    async def add_consent(
        self, session_id: str, *, policy_version: str, policy_sha256: str, ip: str | None,
        user_agent: str | None, method: str, on_behalf: bool,
    ) -> dict[str, Any]:
        now = self._now()

        def job(c: sqlite3.Connection) -> dict[str, Any]:
            row = c.execute(
                "SELECT customer_id FROM visitor_sessions WHERE id = ? AND revoked_at IS NULL",
                (session_id,),
            ).fetchone()
            if row is None:
                raise NotFound("That session has ended.")
            c.execute(
                """INSERT INTO consents (session_id, customer_id, policy_version, policy_sha256,
                   given_at, ip, user_agent, method, on_behalf) VALUES (?,?,?,?,?,?,?,?,?)""",
                (session_id, row[0], policy_version, policy_sha256, now, ip, user_agent, method,
                 int(on_behalf)),
            )
            c.execute("UPDATE visitor_sessions SET last_seen_at = ? WHERE id = ?", (now, session_id))
            return {"policy_version": policy_version, "policy_sha256": policy_sha256,
                    "given_at": now, "method": method, "on_behalf": on_behalf}

        return await self._write(job)

    async def save_customer(
        self, session_id: str, *, name: str, email: str, company: str
    ) -> Customer:
        now = self._now()

        def job(c: sqlite3.Connection) -> Customer:
            row = c.execute(
                "SELECT customer_id FROM visitor_sessions WHERE id = ? AND revoked_at IS NULL",
                (session_id,),
            ).fetchone()
            if row is None:
                raise NotFound("That session has ended.")
            customer_id = row[0]
            if customer_id is None:
                customer_id = "cu_" + secrets.token_hex(10)
                c.execute(
                    """INSERT INTO customers (id, name, email, company, created_at, updated_at,
                       last_active_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (customer_id, name, email, company, now, now, now),
                )
                c.execute(
                    "UPDATE visitor_sessions SET customer_id = ? WHERE id = ?",
                    (customer_id, session_id),
                )
                c.execute(
                    "UPDATE consents SET customer_id = ? WHERE session_id = ?",
                    (customer_id, session_id),
                )
            else:
                c.execute(
                    """UPDATE customers SET name = ?, email = ?, company = ?, updated_at = ?,
                       last_active_at = ? WHERE id = ?""",
                    (name, email, company, now, now, customer_id),
                )
            return self._customer(c, customer_id)

        return await self._write(job)

    async def rotate_visitor_session(self, session_id: str, new_session_id: str) -> None:
        def job(c: sqlite3.Connection) -> None:
            row = c.execute(
                "SELECT customer_id, created_at, last_seen_at FROM visitor_sessions "
                "WHERE id = ? AND revoked_at IS NULL", (session_id,),
            ).fetchone()
            if row is None:
                raise NotFound("That session has ended.")
            # A new row, the children moved over, the old row gone: the foreign keys have no
            # ON UPDATE CASCADE, and the old id must not survive anywhere.
            c.execute(
                "INSERT INTO visitor_sessions (id, customer_id, created_at, last_seen_at) "
                "VALUES (?, ?, ?, ?)", (new_session_id, *row),
            )
            for table in ("consents", "access_events"):
                c.execute(f"UPDATE {table} SET session_id = ? WHERE session_id = ?",
                          (new_session_id, session_id))
            c.execute("DELETE FROM visitor_sessions WHERE id = ?", (session_id,))

        await self._write(job)

    @staticmethod
    def _customer(c: sqlite3.Connection, customer_id: str) -> Customer:
        row = c.execute(_CUSTOMER + " WHERE id = ?", (customer_id,)).fetchone()
        if row is None:
            raise NotFound("No such customer.")
        return _customer(row)

    async def get_customer(self, customer_id: str) -> Customer | None:
        def job(c: sqlite3.Connection) -> Customer | None:
            try:
                return self._customer(c, customer_id)
            except NotFound:
                return None

        return await self._read(job)

    async def record_access(
        self, session_id: str, kind: str, ip: str | None, user_agent: str | None
    ) -> None:
        now = self._now()

        def job(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO access_events (session_id, at, kind, ip, user_agent) "
                "VALUES (?, ?, ?, ?, ?)",
                (session_id, now, kind, ip, user_agent),
            )
            c.execute("UPDATE visitor_sessions SET last_seen_at = ? WHERE id = ?", (now, session_id))
            c.execute(
                """UPDATE customers SET last_active_at = ? WHERE id =
                   (SELECT customer_id FROM visitor_sessions WHERE id = ?)""",
                (now, session_id),
            )

        await self._write(job)

    # -- conversations ----------------------------------------------------------------------

    @staticmethod
    def _get_conversation(c: sqlite3.Connection, conversation_id: str) -> Conversation | None:
        row = c.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM {_CONVERSATION_FROM} WHERE c.id = ?",
            (conversation_id,),
        ).fetchone()
        return _conversation(row) if row else None

    @classmethod
    def _require_conversation(cls, c: sqlite3.Connection, conversation_id: str) -> Conversation:
        found = cls._get_conversation(c, conversation_id)
        if found is None:
            raise NotFound("No such conversation.")
        return found

    async def open_conversation(
        self, customer_id: str, *, create: bool = True
    ) -> tuple[Conversation, bool]:
        now = self._now()

        def job(c: sqlite3.Connection) -> tuple[Conversation, bool]:
            row = c.execute(
                f"""SELECT {_CONVERSATION_COLUMNS} FROM {_CONVERSATION_FROM}
                    WHERE c.customer_id = ? AND c.status != 'closed'
                    ORDER BY c.created_at DESC LIMIT 1""",
                (customer_id,),
            ).fetchone()
            if row:
                return _conversation(row), False
            if not create:
                raise NotFound("No open conversation.")
            conversation_id = "cv_" + secrets.token_hex(10)
            c.execute(
                "INSERT INTO conversations (id, customer_id, status, created_at) "
                "VALUES (?, ?, 'queued', ?)",
                (conversation_id, customer_id, now),
            )
            return self._require_conversation(c, conversation_id), True

        return await self._write(job)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return await self._read(lambda c: self._get_conversation(c, conversation_id))

    async def claim_conversation(
        self, conversation_id: str, staff_id: int
    ) -> tuple[Conversation, bool]:
        now = self._now()

        def job(c: sqlite3.Connection) -> tuple[Conversation, bool]:
            found = self._require_conversation(c, conversation_id)
            if found.status == "closed":
                raise ConversationClosed()
            if found.status == "active":
                if found.agent_id == staff_id:
                    return found, False
                raise AlreadyClaimed()
            c.execute(
                "UPDATE conversations SET status = 'active', agent_id = ?, claimed_at = ? "
                "WHERE id = ? AND status = 'queued'",
                (staff_id, now, conversation_id),
            )
            return self._require_conversation(c, conversation_id), True

        return await self._write(job)

    async def close_conversation(self, conversation_id: str) -> Conversation | None:
        now = self._now()

        def job(c: sqlite3.Connection) -> Conversation | None:
            found = self._require_conversation(c, conversation_id)
            if found.status == "closed":
                return None
            c.execute(
                "UPDATE conversations SET status = 'closed', closed_at = ? WHERE id = ?",
                (now, conversation_id),
            )
            return self._get_conversation(c, conversation_id)

        return await self._write(job)

    async def append_message(
        self, conversation_id: str, *, sender: str, sender_id: str, author: str, body: str,
        client_msg_id: str | None,
    ) -> tuple[Message, bool, str]:
        now = self._now()

        def job(c: sqlite3.Connection) -> tuple[Message, bool, str]:
            if client_msg_id is not None:
                row = c.execute(
                    _MESSAGE_SELECT + " WHERE m.conversation_id = ? AND m.sender = ? "
                    "AND m.sender_id = ? AND m.client_msg_id = ?",
                    (conversation_id, sender, sender_id, client_msg_id),
                ).fetchone()
                if row:
                    (status,) = c.execute(
                        "SELECT status FROM conversations WHERE id = ?", (conversation_id,)
                    ).fetchone()
                    return _message(row), False, status
            row = c.execute(
                "UPDATE conversations SET last_seq = last_seq + 1, last_message_at = ? "
                "WHERE id = ? RETURNING last_seq, customer_id, status",
                (now, conversation_id),
            ).fetchone()
            if row is None:
                raise NotFound("No such conversation.")
            seq, customer_id, status = row
            if status == "closed" and sender != "system":
                raise ConversationClosed()
            c.execute(
                "INSERT INTO messages (conversation_id, seq, sender, sender_id, body, "
                "client_msg_id, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, seq, sender, sender_id, body, client_msg_id, now),
            )
            if sender == "visitor":
                c.execute(
                    "UPDATE customers SET last_active_at = ? WHERE id = ?", (now, customer_id)
                )
            message = Message(conversation_id, seq, sender, sender_id, author, body,
                              client_msg_id, now)
            return message, True, status

        return await self._write(job)

    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int = 1000
    ) -> list[Message]:
        rows = await self._read(
            lambda c: c.execute(
                _MESSAGE_SELECT + " WHERE m.conversation_id = ? AND m.seq > ? "
                "ORDER BY m.seq LIMIT ?",
                (conversation_id, after_seq, limit),
            ).fetchall()
        )
        return [_message(r) for r in rows]

    _SUMMARY = f"""
        SELECT {_CONVERSATION_COLUMNS}, cu.name, cu.email, cu.company,
               (SELECT policy_version FROM consents WHERE customer_id = c.customer_id
                ORDER BY id DESC LIMIT 1),
               (SELECT COUNT(*) FROM messages WHERE conversation_id = c.id),
               lm.seq, lm.sender, lm.body, lm.sent_at
        FROM {_CONVERSATION_FROM}
        JOIN customers cu ON cu.id = c.customer_id
        LEFT JOIN messages lm ON lm.conversation_id = c.id AND lm.seq = (
            SELECT MAX(seq) FROM messages WHERE conversation_id = c.id AND sender != 'system')
    """

    @staticmethod
    def _summary(row: tuple[Any, ...]) -> ConversationSummary:
        conversation = _conversation(row[:_CONVERSATION_WIDTH])
        name, email, company, version, count, lseq, lsender, lbody, lsent = (
            row[_CONVERSATION_WIDTH:])
        last = (
            {"seq": lseq, "sender": lsender, "body": lbody[:200], "sent_at": lsent}
            if lseq is not None
            else None
        )
        return ConversationSummary(
            conversation=conversation,
            customer={"name": name, "email": email, "company": company},
            policy_version=version,
            message_count=count,
            last_message=last,
        )

    async def open_conversations(self) -> list[ConversationSummary]:
        rows = await self._read(
            lambda c: c.execute(
                self._SUMMARY + " WHERE c.status IN ('queued', 'active') ORDER BY c.created_at"
            ).fetchall()
        )
        return [self._summary(r) for r in rows]

    async def conversation_summary(self, conversation_id: str) -> ConversationSummary | None:
        row = await self._read(
            lambda c: c.execute(self._SUMMARY + " WHERE c.id = ?", (conversation_id,)).fetchone()
        )
        return self._summary(row) if row else None

    async def search_conversations(
        self, search: ConversationSearch, *, limit: int = 50, offset: int = 0,
    ) -> tuple[list[ConversationSummary], int]:
        where: list[str] = []
        args: list[Any] = []
        if search.status:
            where.append("c.status = ?")
            args.append(search.status)
        if search.email:
            where.append("lower(cu.email) = lower(?)")
            args.append(search.email)
        if search.agent_id is not None:
            where.append("c.agent_id = ?")
            args.append(search.agent_id)
        if search.created_from:
            where.append("c.created_at >= ?")
            args.append(search.created_from)
        if search.created_before:
            where.append("c.created_at < ?")
            args.append(search.created_before)
        if search.query:
            like = _like(search.query)
            match = _fts_query(search.query)
            words = (
                " OR c.id IN (SELECT m.conversation_id FROM messages_fts "
                "JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH ?)"
                if match else ""
            )
            where.append(
                "(cu.name LIKE ? ESCAPE '\\' OR cu.email LIKE ? ESCAPE '\\' OR "
                f"cu.company LIKE ? ESCAPE '\\' OR c.id = ?{words})"
            )
            args += [like, like, like, search.query, *([match] if match else [])]
        clause = (" WHERE " + " AND ".join(where)) if where else ""

        def job(c: sqlite3.Connection) -> tuple[list[ConversationSummary], int]:
            rows = c.execute(
                self._SUMMARY + clause + " ORDER BY c.created_at DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            (total,) = c.execute(
                "SELECT COUNT(*) FROM conversations c JOIN customers cu ON cu.id = c.customer_id"
                + clause,
                args,
            ).fetchone()
            return [self._summary(r) for r in rows], total

        return await self._read(job)

    async def messages_between(
        self, created_from: str | None, created_before: str | None, after_id: int, limit: int
    ) -> tuple[list[Message], int]:
        where: list[str] = ["m.id > ?"]
        args: list[Any] = [after_id]
        if created_from:
            where.append("m.sent_at >= ?")
            args.append(created_from)
        if created_before:
            where.append("m.sent_at < ?")
            args.append(created_before)
        rows = await self._read(
            lambda c: c.execute(
                _MESSAGE_SELECT.replace("SELECT m.conversation_id", "SELECT m.id, m.conversation_id")
                + " WHERE " + " AND ".join(where) + " ORDER BY m.id LIMIT ?",
                (*args, limit),
            ).fetchall()
        )
        last = rows[-1][0] if rows else after_id
        return [_message(r[1:]) for r in rows], last

    # -- privacy rights ---------------------------------------------------------------------

    async def update_customer(self, customer_id: str, fields: dict[str, str]) -> Customer:
        now = self._now()
        allowed = {k: v for k, v in fields.items() if k in {"name", "email", "company"}}

        def job(c: sqlite3.Connection) -> Customer:
            self._customer(c, customer_id)
            for key, value in allowed.items():
                c.execute(f"UPDATE customers SET {key} = ? WHERE id = ?", (value, customer_id))
            c.execute("UPDATE customers SET updated_at = ?, last_active_at = ? WHERE id = ?",
                      (now, now, customer_id))
            return self._customer(c, customer_id)

        return await self._write(job)

    async def customers_by_email(self, email: str) -> list[Customer]:
        rows = await self._read(
            lambda c: c.execute(_CUSTOMER + " WHERE lower(email) = lower(?) ORDER BY created_at",
                                (email.strip(),)).fetchall()
        )
        return [_customer(r) for r in rows]

    async def list_consents(self, customer_id: str) -> list[dict[str, Any]]:
        rows = await self._read(
            lambda c: c.execute(_CONSENT + " WHERE customer_id = ? ORDER BY id DESC",
                                (customer_id,)).fetchall()
        )
        return [_consent(r) for r in rows]

    async def session_consents(self, session_id: str) -> list[dict[str, Any]]:
        rows = await self._read(
            lambda c: c.execute(_CONSENT + " WHERE session_id = ? ORDER BY id DESC",
                                (session_id,)).fetchall()
        )
        return [_consent(r) for r in rows]

    async def withdraw_consents(self, session_id: str) -> int:
        now = self._now()

        def job(c: sqlite3.Connection) -> int:
            cur = c.execute(
                """UPDATE consents SET withdrawn_at = ? WHERE withdrawn_at IS NULL AND (
                   session_id = ? OR customer_id = (
                       SELECT customer_id FROM visitor_sessions WHERE id = ?))""",
                (now, session_id, session_id),
            )
            return cur.rowcount

        return await self._write(job)

    async def customer_sessions(self, customer_id: str) -> list[str]:
        rows = await self._read(
            lambda c: c.execute("SELECT id FROM visitor_sessions WHERE customer_id = ?",
                                (customer_id,)).fetchall()
        )
        return [r[0] for r in rows]

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
                    **notes_sql.export_extras(c, conv.id),
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
        the WAL, without stalling writes (see sqlite_upkeep)."""
        await self._upkeep.scrub_if_needed()
        await self._upkeep.truncate_wal()

    async def set_legal_hold(self, customer_id: str, hold: bool) -> Customer:
        def job(c: sqlite3.Connection) -> Customer:
            self._customer(c, customer_id)
            c.execute("UPDATE customers SET legal_hold = ? WHERE id = ?", (int(hold), customer_id))
            return self._customer(c, customer_id)

        return await self._write(job)

    async def list_customers(
        self, *, query: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        clause, args = "", []
        if query:
            like = _like(query)
            clause = (" WHERE name LIKE ? ESCAPE '\\' OR email LIKE ? ESCAPE '\\' "
                      "OR company LIKE ? ESCAPE '\\' OR id = ?")
            args = [like, like, like, query]

        def job(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            rows = c.execute(
                _CUSTOMER.replace("FROM customers", ", (SELECT COUNT(*) FROM conversations "
                                  "WHERE customer_id = customers.id) FROM customers")
                + clause + " ORDER BY last_active_at DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            (total,) = c.execute("SELECT COUNT(*) FROM customers" + clause, args).fetchone()
            items = []
            for row in rows:
                customer = _customer(row[:8])
                items.append({**customer.public(), "id": customer.id,
                              "created_at": customer.created_at,
                              "last_active_at": customer.last_active_at,
                              "legal_hold": customer.legal_hold, "conversations": row[8]})
            return items, total

        return await self._read(job)

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
        rows = await self._read(
            lambda c: c.execute(
                """SELECT a.at, a.kind, a.ip, a.user_agent FROM access_events a
                   JOIN visitor_sessions s ON s.id = a.session_id
                   WHERE s.customer_id = ? ORDER BY a.id DESC LIMIT 500""",
                (customer_id,),
            ).fetchall()
        )
        return [dict(zip(("at", "kind", "ip", "user_agent"), r, strict=True)) for r in rows]

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
