"""What the SQLite and PostgreSQL stores share: the SELECTs both dialects write alike, the
mapping of their rows to records, and reading numbered migration files.

A row is a sqlite3 tuple or an asyncpg Record; both index and slice alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .base import Conversation, ConversationSummary, Customer, Message, Staff

Row = Any  # tuple[Any, ...] from sqlite3, asyncpg.Record from PostgreSQL

# -- conversations and messages ---------------------------------------------------------------

COLUMNS = """
    c.id, c.customer_id, c.status, c.agent_id, s.name, c.created_at, c.claimed_at, c.closed_at,
    c.last_seq, c.last_message_at, s.display_name
"""
WIDTH = 11  # the columns of COLUMNS, which a summary's row starts with
FROM = "conversations c LEFT JOIN staff s ON s.id = c.agent_id"
# Author names are read at display time, so a corrected customer name shows everywhere. An
# agent's author name is the display name, never the sign-in name: customers see these frames.
# {agent} matches the staff row to sender_id (text) in the dialect's own way.
MESSAGES = """
    SELECT m.conversation_id, m.seq, m.sender, m.sender_id,
           CASE m.sender WHEN 'visitor' THEN cu.name WHEN 'agent' THEN st.display_name
                ELSE 'system' END,
           m.body, m.client_msg_id, m.sent_at
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    JOIN customers cu ON cu.id = c.customer_id
    LEFT JOIN staff st ON m.sender = 'agent' AND {agent}
"""
SUMMARY = f"""
    SELECT {COLUMNS}, cu.name, cu.email, cu.company,
           (SELECT policy_version FROM consents WHERE customer_id = c.customer_id
            ORDER BY id DESC LIMIT 1),
           (SELECT COUNT(*) FROM messages WHERE conversation_id = c.id),
           lm.seq, lm.sender, lm.body, lm.sent_at
    FROM {FROM}
    JOIN customers cu ON cu.id = c.customer_id
    LEFT JOIN messages lm ON lm.conversation_id = c.id AND lm.seq = (
        SELECT MAX(seq) FROM messages WHERE conversation_id = c.id AND sender <> 'system')
"""


def to_conversation(row: Row) -> Conversation:
    return Conversation(*row)


def to_message(row: Row) -> Message:
    return Message(*row)


def to_summary(row: Row) -> ConversationSummary:
    conversation = to_conversation(row[:WIDTH])
    name, email, company, version, count, lseq, lsender, lbody, lsent = row[WIDTH:]
    last = (
        {"seq": lseq, "sender": lsender, "body": lbody[:200], "sent_at": lsent}
        if lseq is not None
        else None
    )
    return ConversationSummary(
        conversation=conversation,
        customer={"name": name, "email": email, "company": company},
        policy_version=version,
        message_count=int(count),
        last_message=last,
    )


# -- customers and consents -------------------------------------------------------------------

CUSTOMER = (
    "SELECT id, name, email, company, created_at, updated_at, last_active_at, legal_hold "
    "FROM customers"
)
CONSENT = (
    "SELECT policy_version, policy_sha256, given_at, method, on_behalf, withdrawn_at, ip, "
    "user_agent FROM consents"
)
_CONSENT_KEYS = ("policy_version", "policy_sha256", "given_at", "method", "on_behalf",
                 "withdrawn_at", "ip", "user_agent")


def like(query: str) -> str:
    """A LIKE pattern matching `query` literally anywhere, backslash the escape (SQLite says
    ESCAPE '\\'; it is PostgreSQL's default)."""
    return "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def to_customer(row: Row) -> Customer:
    return Customer(id=row[0], name=row[1], email=row[2], company=row[3], created_at=row[4],
                    updated_at=row[5], last_active_at=row[6], legal_hold=bool(row[7]))


def to_consent(row: Row) -> dict[str, Any]:
    data = dict(zip(_CONSENT_KEYS, row, strict=True))
    data["on_behalf"] = bool(data["on_behalf"])
    return data


# -- policies, staff, audit -------------------------------------------------------------------

POLICY = "SELECT version, effective_date, summary, text, sha256, published_at FROM policy_versions"
STAFF = (
    "SELECT id, name, role, state, created_at, password_hash, failed_logins, last_failed_at, "
    "display_name FROM staff"
)
ADMINS = "SELECT COUNT(*) FROM staff WHERE role = 'admin' AND state = 'active'"
_AUDIT_KEYS = ("id", "at", "actor", "action", "ip", "target", "detail", "prev_hash", "hash")
AUDIT = f"SELECT {', '.join(_AUDIT_KEYS)} FROM audit_log"


def to_staff(row: Row) -> Staff:
    return Staff(id=row[0], name=row[1], role=row[2], state=row[3], created_at=row[4],
                 password_hash=row[5], failed_logins=row[6], last_failed_at=row[7],
                 display_name=row[8])


def to_entry(row: Row) -> dict[str, Any]:
    entry = dict(zip(_AUDIT_KEYS, row, strict=True))
    entry["detail"] = json.loads(entry["detail"])
    return entry


# -- migrations -------------------------------------------------------------------------------


# -- the support team's additions (issue 12): notes, ratings, history, reports, blocks, canned --

# A note's author is the writer's display name, read at display time like a message's.
NOTE = """
    SELECT n.id, n.conversation_id, n.after_seq, n.staff_id, st.display_name, n.body,
           n.client_msg_id, n.created_at
    FROM notes n JOIN staff st ON st.id = n.staff_id
"""
RATING = "SELECT conversation_id, score, comment, rated_at FROM conversation_ratings"
# A customer's conversations as the history an agent sees: no message text.
HISTORY_KEYS = ("id", "status", "created_at", "closed_at", "agent", "message_count", "rating")
HISTORY = """
    SELECT c.id, c.status, c.created_at, c.closed_at, s.display_name,
           (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id), r.score
    FROM conversations c
    LEFT JOIN staff s ON s.id = c.agent_id
    LEFT JOIN conversation_ratings r ON r.conversation_id = c.id
"""
# One row per conversation for the admin reports: times, agent, counts, rating; no text.
REPORT_KEYS = ("id", "created_at", "claimed_at", "closed_at", "status", "agent_id", "agent",
               "messages", "first_reply_at", "rating")
REPORT = """
    SELECT c.id, c.created_at, c.claimed_at, c.closed_at, c.status, c.agent_id, s.name,
           (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id
            AND m.sender <> 'system'),
           (SELECT MIN(m.sent_at) FROM messages m WHERE m.conversation_id = c.id
            AND m.sender = 'agent'),
           r.score
    FROM conversations c
    LEFT JOIN staff s ON s.id = c.agent_id
    LEFT JOIN conversation_ratings r ON r.conversation_id = c.id
"""
BLOCK_KEYS = ("id", "conversation_id", "ip", "reason", "created_at", "expires_at")
BLOCK = f"SELECT {', '.join(BLOCK_KEYS)} FROM blocks"
CANNED = "SELECT id, shortcut, body, created_at, updated_at FROM canned_responses"
CANNED_TAKEN = "Another canned response has that shortcut."


def read_migrations(package: str) -> list[tuple[int, str]]:
    """The files NNN_name.sql in `package`'s migrations folder, as (NNN, text), in order."""
    folder = resources.files(package) / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


@dataclass(slots=True)
class AppendRequest:
    """One message to store, as both stores' batch writers take it (sqlite/appends.py,
    postgres/appends.py)."""
    conversation_id: str
    sender: str
    sender_id: str
    author: str
    body: str
    client_msg_id: str | None
    now: str
    unless_paused: bool = False  # an agent's: refused when the customer withdrew consent

    def key(self) -> tuple[str, str, str, str] | None:
        """What makes a repeat: the unique index on messages."""
        if self.client_msg_id is None:
            return None
        return (self.conversation_id, self.sender, self.sender_id, self.client_msg_id)
