"""Visitors: sessions (one per chat_session cookie), their consents, access records, and the
customer a session becomes once it gives its details."""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from ...errors import NotFound
from ..base import Customer, VisitorSession
from ..rows import CONSENT, CUSTOMER, like, to_consent, to_customer


def customer(c: sqlite3.Connection, customer_id: str) -> Customer:
    row = c.execute(CUSTOMER + " WHERE id = ?", (customer_id,)).fetchone()
    if row is None:
        raise NotFound("No such customer.")
    return to_customer(row)


def get_customer(c: sqlite3.Connection, customer_id: str) -> Customer | None:
    try:
        return customer(c, customer_id)
    except NotFound:
        return None


def create_session(c: sqlite3.Connection, session_id: str, now: str) -> None:
    c.execute(
        "INSERT INTO visitor_sessions (id, created_at, last_seen_at) VALUES (?, ?, ?)",
        (session_id, now, now),
    )


def start_session(
    c: sqlite3.Connection, session_id: str, *, policy_version: str, policy_sha256: str,
    ip: str | None, user_agent: str | None, method: str, on_behalf: bool, now: str,
) -> bool:
    made = c.execute(
        "INSERT INTO visitor_sessions (id, created_at, last_seen_at) VALUES (?, ?, ?) "
        "ON CONFLICT (id) DO NOTHING", (session_id, now, now),
    ).rowcount
    if not made:
        return False
    c.execute("INSERT INTO access_events (session_id, at, kind, ip, user_agent) "
              "VALUES (?, ?, 'session_start', ?, ?)", (session_id, now, ip, user_agent))
    c.execute(
        """INSERT INTO consents (session_id, customer_id, policy_version, policy_sha256,
           given_at, ip, user_agent, method, on_behalf) VALUES (?,NULL,?,?,?,?,?,?,?)""",
        (session_id, policy_version, policy_sha256, now, ip, user_agent, method,
         int(on_behalf)),
    )
    return True


def get_session(c: sqlite3.Connection, session_id: str) -> VisitorSession | None:
    row = c.execute(
        """SELECT s.id, s.customer_id,
                  (SELECT policy_version FROM consents WHERE session_id = s.id
                   AND withdrawn_at IS NULL ORDER BY id DESC LIMIT 1)
           FROM visitor_sessions s WHERE s.id = ? AND s.revoked_at IS NULL""",
        (session_id,),
    ).fetchone()
    return VisitorSession(*row) if row else None


def _live_session(c: sqlite3.Connection, session_id: str) -> tuple[Any, ...]:
    """The session's row (its customer id first); NotFound when unknown or revoked."""
    row: tuple[Any, ...] | None = c.execute(
        "SELECT customer_id FROM visitor_sessions WHERE id = ? AND revoked_at IS NULL",
        (session_id,),
    ).fetchone()
    if row is None:
        raise NotFound("That session has ended.")
    return row


def add_consent(
    c: sqlite3.Connection, session_id: str, *, policy_version: str, policy_sha256: str,
    ip: str | None, user_agent: str | None, method: str, on_behalf: bool, now: str,
) -> dict[str, Any]:
    row = _live_session(c, session_id)
    c.execute(
        """INSERT INTO consents (session_id, customer_id, policy_version, policy_sha256,
           given_at, ip, user_agent, method, on_behalf) VALUES (?,?,?,?,?,?,?,?,?)""",
        (session_id, row[0], policy_version, policy_sha256, now, ip, user_agent, method,
         int(on_behalf)),
    )
    c.execute("UPDATE visitor_sessions SET last_seen_at = ? WHERE id = ?", (now, session_id))
    return {"policy_version": policy_version, "policy_sha256": policy_sha256,
            "given_at": now, "method": method, "on_behalf": on_behalf}


def save_customer(
    c: sqlite3.Connection, session_id: str, *, name: str, email: str, company: str, now: str
) -> Customer:
    customer_id = _live_session(c, session_id)[0]
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
    return customer(c, customer_id)


def rotate_session(c: sqlite3.Connection, session_id: str, new_session_id: str) -> None:
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


def record_access(c: sqlite3.Connection, session_id: str, kind: str, ip: str | None,
                  user_agent: str | None, now: str) -> None:
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


def update_customer(c: sqlite3.Connection, customer_id: str, fields: dict[str, str], now: str
                    ) -> Customer:
    allowed = {k: v for k, v in fields.items() if k in {"name", "email", "company"}}
    customer(c, customer_id)
    for key, value in allowed.items():
        c.execute(f"UPDATE customers SET {key} = ? WHERE id = ?", (value, customer_id))
    c.execute("UPDATE customers SET updated_at = ?, last_active_at = ? WHERE id = ?",
              (now, now, customer_id))
    return customer(c, customer_id)


def customers_by_email(c: sqlite3.Connection, email: str) -> list[Customer]:
    rows = c.execute(CUSTOMER + " WHERE lower(email) = lower(?) ORDER BY created_at",
                     (email.strip(),)).fetchall()
    return [to_customer(r) for r in rows]


def list_consents(c: sqlite3.Connection, customer_id: str) -> list[dict[str, Any]]:
    rows = c.execute(CONSENT + " WHERE customer_id = ? ORDER BY id DESC",
                     (customer_id,)).fetchall()
    return [to_consent(r) for r in rows]


def session_consents(c: sqlite3.Connection, session_id: str) -> list[dict[str, Any]]:
    rows = c.execute(CONSENT + " WHERE session_id = ? ORDER BY id DESC",
                     (session_id,)).fetchall()
    return [to_consent(r) for r in rows]


def withdraw_consents(c: sqlite3.Connection, session_id: str, now: str) -> int:
    cur = c.execute(
        """UPDATE consents SET withdrawn_at = ? WHERE withdrawn_at IS NULL AND (
           session_id = ? OR customer_id = (
               SELECT customer_id FROM visitor_sessions WHERE id = ?))""",
        (now, session_id, session_id),
    )
    return cur.rowcount


def customer_sessions(c: sqlite3.Connection, customer_id: str) -> list[str]:
    rows = c.execute("SELECT id FROM visitor_sessions WHERE customer_id = ?",
                     (customer_id,)).fetchall()
    return [r[0] for r in rows]


def set_legal_hold(c: sqlite3.Connection, customer_id: str, hold: bool) -> Customer:
    customer(c, customer_id)
    c.execute("UPDATE customers SET legal_hold = ? WHERE id = ?", (int(hold), customer_id))
    return customer(c, customer_id)


def list_customers(
    c: sqlite3.Connection, *, query: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    clause, args = "", []
    if query:
        pattern = like(query)
        clause = (" WHERE name LIKE ? ESCAPE '\\' OR email LIKE ? ESCAPE '\\' "
                  "OR company LIKE ? ESCAPE '\\' OR id = ?")
        args = [pattern, pattern, pattern, query]
    rows = c.execute(
        CUSTOMER.replace("FROM customers", ", (SELECT COUNT(*) FROM conversations "
                         "WHERE customer_id = customers.id) FROM customers")
        + clause + " ORDER BY last_active_at DESC LIMIT ? OFFSET ?",
        (*args, limit, offset),
    ).fetchall()
    (total,) = c.execute("SELECT COUNT(*) FROM customers" + clause, args).fetchone()
    items = []
    for row in rows:
        found = to_customer(row[:8])
        items.append({**found.public(), "id": found.id,
                      "created_at": found.created_at,
                      "last_active_at": found.last_active_at,
                      "legal_hold": found.legal_hold, "conversations": row[8]})
    return items, total


def customer_access(c: sqlite3.Connection, customer_id: str) -> list[dict[str, Any]]:
    rows = c.execute(
        """SELECT a.at, a.kind, a.ip, a.user_agent FROM access_events a
           JOIN visitor_sessions s ON s.id = a.session_id
           WHERE s.customer_id = ? ORDER BY a.id DESC LIMIT 500""",
        (customer_id,),
    ).fetchall()
    return [dict(zip(("at", "kind", "ip", "user_agent"), r, strict=True)) for r in rows]
