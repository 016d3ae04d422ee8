"""The customer's rights on PostgreSQL: export, erasure, and the retention purge.

An erasure is one transaction, a purge a series of short ones (a batch of rows or accounts each,
so it never holds chat writes up), with the same scope as on SQLite. They lock what they
delete first (the customer's row, then their conversations' rows), so a message being stored at
that moment either lands before and is erased too, or finds its conversation gone. Deleted rows
stay in the table files as dead row versions until VACUUM, which the store runs right after (it
cannot run inside a transaction); docs/privacy.md says what can remain elsewhere.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from ...errors import LegalHold, NotFound
from ..base import EXPORTED_LINKS, EXPORTED_MAIL
from ..rows import COLUMNS, CONSENT, FROM, to_consent, to_conversation, to_message
from .conversations import MESSAGE_SELECT
from .engine import Connection
from .mail import read_state
from .notes import export_extras
from .visitors import customer, rowcount

# The tables an erasure or purge deletes from: vacuumed afterwards.
TOUCHED = ("messages", "conversations", "consents", "access_events", "visitor_sessions",
           "customers", "login_events", "mail_outbox", "mail_tokens", "conversation_reads",
           "notes", "conversation_ratings", "blocks")


async def export_customer(c: Connection, customer_id: str) -> dict[str, Any]:
    found = await customer(c, customer_id)
    conversations = []
    for row in await c.fetch(
        f"SELECT {COLUMNS} FROM {FROM} WHERE c.customer_id = $1 ORDER BY c.created_at",
        customer_id,
    ):
        conv = to_conversation(row)
        messages = [
            to_message(m).frame() for m in await c.fetch(
                MESSAGE_SELECT + " WHERE m.conversation_id = $1 ORDER BY m.seq", conv.id)
        ]
        conversations.append({
            "id": conv.id, "status": conv.status, "created_at": conv.created_at,
            "claimed_at": conv.claimed_at, "closed_at": conv.closed_at,
            "agent": conv.agent_display_name, "messages": messages,
            "read": await read_state(c, conv.id),
            **await export_extras(c, conv.id),
        })
    mail = [dict(zip(EXPORTED_MAIL, r, strict=True)) for r in await c.fetch(
        f"SELECT {', '.join(EXPORTED_MAIL)} FROM mail_outbox WHERE customer_id = $1 ORDER BY id",
        customer_id)]
    mail_links = [dict(zip(EXPORTED_LINKS, r, strict=True)) for r in await c.fetch(
        f"SELECT {', '.join(EXPORTED_LINKS)} FROM mail_tokens WHERE customer_id = $1 "
        "ORDER BY created_at", customer_id)]
    sessions = [
        {"ref": sid[:12], "created_at": created, "last_seen_at": seen, "revoked_at": revoked}
        for sid, created, seen, revoked in await c.fetch(
            "SELECT id, created_at, last_seen_at, revoked_at FROM visitor_sessions "
            "WHERE customer_id = $1 ORDER BY created_at", customer_id)
    ]
    access = [
        {"session_ref": sid[:12], "at": at, "kind": kind, "ip": ip, "user_agent": agent}
        for sid, at, kind, ip, agent in await c.fetch(
            """SELECT a.session_id, a.at, a.kind, a.ip, a.user_agent
               FROM access_events a JOIN visitor_sessions s ON s.id = a.session_id
               WHERE s.customer_id = $1 ORDER BY a.id""", customer_id)
    ]
    consents = [to_consent(r) for r in await c.fetch(
        CONSENT + " WHERE customer_id = $1 ORDER BY id", customer_id)]
    return {
        "account": {**found.public(), "id": found.id, "created_at": found.created_at,
                    "updated_at": found.updated_at, "last_active_at": found.last_active_at,
                    "legal_hold": found.legal_hold},
        "consents": consents,
        "conversations": conversations,
        "sessions": sessions,
        "access_records": access,
        "mail": mail,
        "mail_links": mail_links,
    }


async def export_session(c: Connection, session_id: str) -> dict[str, Any]:
    row = await c.fetchrow("SELECT created_at, last_seen_at, revoked_at FROM visitor_sessions "
                           "WHERE id = $1", session_id)
    if row is None:
        raise NotFound("That session has ended.")
    return {
        "account": None,
        "consents": [to_consent(r) for r in await c.fetch(
            CONSENT + " WHERE session_id = $1 ORDER BY id", session_id)],
        "conversations": [],
        "sessions": [{"ref": session_id[:12], "created_at": row[0], "last_seen_at": row[1],
                      "revoked_at": row[2]}],
        "access_records": [
            {"session_ref": session_id[:12], "at": at, "kind": kind, "ip": ip,
             "user_agent": agent}
            for at, kind, ip, agent in await c.fetch(
                "SELECT at, kind, ip, user_agent FROM access_events WHERE session_id = $1 "
                "ORDER BY id", session_id)],
    }


async def _tombstone(c: Connection, now: str, reason: str, conversations: int, messages: int,
                     sessions: int, consents: int, access: int, versions: list[str]
                     ) -> dict[str, Any]:
    tombstone = {
        "id": "er_" + secrets.token_hex(10), "at": now, "reason": reason,
        "conversations": conversations, "messages": messages, "sessions": sessions,
        "consents": consents, "access_events": access, "policy_versions": versions,
    }
    await c.execute(
        "INSERT INTO erasures (id, at, reason, conversations, messages, sessions, consents, "
        "access_events, policy_versions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        tombstone["id"], now, reason, conversations, messages, sessions, consents, access,
        json.dumps(versions),
    )
    return tombstone


_CONVERSATIONS = "SELECT id FROM conversations WHERE customer_id = $1 ORDER BY created_at FOR UPDATE"
_SESSIONS = "SELECT id FROM visitor_sessions WHERE customer_id = $1 ORDER BY id FOR UPDATE"


async def erase(c: Connection, customer_id: str, reason: str, now: str) -> dict[str, Any]:
    """Delete the customer and everything of theirs; keep a tombstone without PII.

    Rows are locked children first, the customer last, the order every other write takes them
    in (a message locks its conversation, then touches the customer; an access record its
    session, then the customer), so an erasure and a write never wait for each other in a
    circle. Locking the conversations waits for messages being stored in them; later ones find
    them gone."""
    await c.fetch(_CONVERSATIONS, customer_id)
    await c.fetch(_SESSIONS, customer_id)
    held = await c.fetchval("SELECT legal_hold FROM customers WHERE id = $1 FOR UPDATE",
                            customer_id)
    if held is None:
        await customer(c, customer_id)  # raises NotFound
    if held:
        raise LegalHold()
    # Again, now that nothing new can be opened for the customer (that takes its row first).
    conversations = [r[0] for r in await c.fetch(_CONVERSATIONS, customer_id)]
    sessions = [r[0] for r in await c.fetch(_SESSIONS, customer_id)]
    messages = int(await c.fetchval(
        "SELECT COUNT(*) FROM messages WHERE conversation_id = ANY($1::text[])", conversations))
    versions = sorted({r[0] for r in await c.fetch(
        "SELECT policy_version FROM consents WHERE customer_id = $1", customer_id)})
    consents = rowcount(await c.execute(
        "DELETE FROM consents WHERE customer_id = $1 OR session_id = ANY($2::text[])",
        customer_id, sessions))
    access = rowcount(await c.execute(
        "DELETE FROM access_events WHERE session_id = ANY($1::text[])", sessions))
    await c.execute("DELETE FROM messages WHERE conversation_id = ANY($1::text[])", conversations)
    await c.execute("DELETE FROM conversations WHERE id = ANY($1::text[])", conversations)
    await c.execute("DELETE FROM visitor_sessions WHERE customer_id = $1", customer_id)
    await c.execute("DELETE FROM customers WHERE id = $1", customer_id)
    tombstone = await _tombstone(c, now, reason, len(conversations), messages, len(sessions),
                                 consents, access, versions)
    return {**tombstone, "session_ids": sessions, "conversation_ids": conversations}


async def erase_bare_session(c: Connection, session_id: str, reason: str, now: str
                             ) -> dict[str, Any]:
    """Erase a session that never became a customer: its consents and access records."""
    versions = sorted({r[0] for r in await c.fetch(
        "SELECT policy_version FROM consents WHERE session_id = $1", session_id)})
    consents = rowcount(await c.execute("DELETE FROM consents WHERE session_id = $1", session_id))
    access = rowcount(await c.execute("DELETE FROM access_events WHERE session_id = $1",
                                      session_id))
    await c.execute("DELETE FROM visitor_sessions WHERE id = $1", session_id)
    tombstone = await _tombstone(c, now, reason, 0, 0, 1, consents, access, versions)
    return {**tombstone, "session_ids": [session_id], "conversation_ids": []}


async def erase_session(c: Connection, session_id: str, reason: str, now: str) -> dict[str, Any]:
    row = await c.fetchrow("SELECT customer_id FROM visitor_sessions WHERE id = $1 FOR UPDATE",
                           session_id)
    if row is None:
        raise NotFound("That session has ended.")
    if row[0] is not None:
        return await erase(c, row[0], reason, now)
    return await erase_bare_session(c, session_id, reason, now)


PURGE_BATCH = 100  # rows or accounts per purge transaction: each stays short
PURGE_COUNTS = ("accounts", "sessions_without_details", "closed_conversations", "access_events",
                "staff_sign_ins", "messages")
_HELD = "SELECT id FROM customers WHERE legal_hold"
_HELD_SESSIONS = f"SELECT id FROM visitor_sessions WHERE customer_id IN ({_HELD})"
_STALE_ACCOUNTS = """SELECT id FROM customers cu WHERE NOT legal_hold AND last_active_at <= $1
    AND NOT EXISTS (SELECT 1 FROM conversations WHERE customer_id = cu.id AND status <> 'closed')"""
_OLD_CONVERSATIONS = f"""SELECT id FROM conversations WHERE status = 'closed'
    AND closed_at <= $1 AND customer_id NOT IN ({_HELD})"""
_UNFINISHED = "SELECT id FROM visitor_sessions WHERE customer_id IS NULL AND created_at <= $1"

# One purge step: (rows or accounts done, counts, session ids, conversation ids). A step that
# did a whole batch is run again; one that did less has finished its rule.
Step = tuple[int, dict[str, int], list[str], list[str]]


async def purge_counts(c: Connection, *, account_cutoff: str, access_cutoff: str,
                       conversation_cutoff: str, session_cutoff: str) -> dict[str, int]:
    """What a purge would delete now, counted as the real run counts it, rule by rule."""
    async def one(sql: str, *args: Any) -> int:
        return int(await c.fetchval(sql, *args))

    return {
        "access_events": await one(f"SELECT COUNT(*) FROM access_events WHERE at <= $1 "
                                   f"AND session_id NOT IN ({_HELD_SESSIONS})", access_cutoff),
        "closed_conversations": await one(f"SELECT COUNT(*) FROM ({_OLD_CONVERSATIONS}) o",
                                          conversation_cutoff),
        "accounts": await one(f"SELECT COUNT(*) FROM ({_STALE_ACCOUNTS}) a", account_cutoff),
        "sessions_without_details": await one(f"SELECT COUNT(*) FROM ({_UNFINISHED}) u",
                                              session_cutoff),
        "staff_sign_ins": await one("SELECT COUNT(*) FROM login_events WHERE at <= $1",
                                    access_cutoff),
        # The old closed conversations go first; the stale accounts' erasure takes the rest.
        "messages": await one(f"SELECT COUNT(*) FROM messages WHERE conversation_id IN "
                              f"({_OLD_CONVERSATIONS})", conversation_cutoff)
        + await one(f"""SELECT COUNT(*) FROM messages m JOIN conversations c
                        ON c.id = m.conversation_id
                        WHERE c.customer_id IN ({_STALE_ACCOUNTS})
                        AND c.id NOT IN ({_OLD_CONVERSATIONS.replace("$1", "$2")})""",
                    account_cutoff, conversation_cutoff),
    }


async def purge_access(c: Connection, cutoff: str) -> Step:
    n = rowcount(await c.execute(
        f"""DELETE FROM access_events WHERE id IN (SELECT id FROM access_events
            WHERE at <= $1 AND session_id NOT IN ({_HELD_SESSIONS}) ORDER BY id LIMIT $2)""",
        cutoff, PURGE_BATCH))
    return n, {"access_events": n}, [], []


async def purge_conversations(c: Connection, cutoff: str) -> Step:
    # Locked before deleting, as an erasure locks them: a late system message waits, then
    # finds its conversation gone.
    old = [r[0] for r in await c.fetch(
        _OLD_CONVERSATIONS + " ORDER BY closed_at, id LIMIT $2 FOR UPDATE", cutoff, PURGE_BATCH)]
    messages = rowcount(await c.execute(
        "DELETE FROM messages WHERE conversation_id = ANY($1::text[])", old))
    await c.execute("DELETE FROM conversations WHERE id = ANY($1::text[])", old)
    return len(old), {"closed_conversations": len(old), "messages": messages}, [], old


async def purge_accounts(c: Connection, cutoff: str, now: str) -> Step:
    stale = [r[0] for r in await c.fetch(
        _STALE_ACCOUNTS + " ORDER BY last_active_at, id LIMIT $2", cutoff, PURGE_BATCH)]
    erased = [await erase(c, customer_id, "retention", now) for customer_id in stale]
    return (len(stale),
            {"accounts": len(stale), "messages": sum(e["messages"] for e in erased)},
            [s for e in erased for s in e["session_ids"]],
            [x for e in erased for x in e["conversation_ids"]])


async def purge_unfinished(c: Connection, cutoff: str) -> Step:
    """Sessions that consented but never gave details expire within hours: anyone can make
    them, so they must not pile up. No tombstone each (they hold no account); the purge's audit
    entry counts them. Locked first: one giving its details meanwhile is no longer selected."""
    ids = [r[0] for r in await c.fetch(
        _UNFINISHED + " ORDER BY created_at, id LIMIT $2 FOR UPDATE", cutoff, PURGE_BATCH)]
    if ids:
        await c.execute("DELETE FROM consents WHERE session_id = ANY($1::text[])", ids)
        await c.execute("DELETE FROM access_events WHERE session_id = ANY($1::text[])", ids)
        await c.execute("DELETE FROM visitor_sessions WHERE id = ANY($1::text[])", ids)
    return len(ids), {"sessions_without_details": len(ids)}, [], []


async def purge_logins(c: Connection, cutoff: str) -> Step:
    # Staff sign-in records hold addresses too: kept as long as access records.
    n = rowcount(await c.execute(
        "DELETE FROM login_events WHERE id IN (SELECT id FROM login_events WHERE at <= $1 "
        "ORDER BY id LIMIT $2)", cutoff, PURGE_BATCH))
    return n, {"staff_sign_ins": n}, [], []
