"""Visitors: sessions (one per chat_session cookie), their consents, access records, and the
customer a session becomes once it gives its details."""

from __future__ import annotations

import secrets
from typing import Any

from ...errors import NotFound
from ..base import Customer, VisitorSession
from ..rows import CONSENT, CUSTOMER, like, to_consent, to_customer
from .engine import Connection


async def customer(c: Connection, customer_id: str) -> Customer:
    row = await c.fetchrow(CUSTOMER + " WHERE id = $1", customer_id)
    if row is None:
        raise NotFound("No such customer.")
    return to_customer(row)


async def get_customer(c: Connection, customer_id: str) -> Customer | None:
    row = await c.fetchrow(CUSTOMER + " WHERE id = $1", customer_id)
    return to_customer(row) if row else None


async def create_session(c: Connection, session_id: str, now: str) -> None:
    await c.execute(
        "INSERT INTO visitor_sessions (id, created_at, last_seen_at) VALUES ($1, $2, $2)",
        session_id, now,
    )


async def start_session(
    c: Connection, session_id: str, *, policy_version: str, policy_sha256: str, ip: str | None,
    user_agent: str | None, method: str, on_behalf: bool, now: str,
) -> bool:
    made = await c.fetchval(
        "INSERT INTO visitor_sessions (id, created_at, last_seen_at) VALUES ($1, $2, $2) "
        "ON CONFLICT (id) DO NOTHING RETURNING id", session_id, now,
    )
    if made is None:
        return False
    await c.execute("INSERT INTO access_events (session_id, at, kind, ip, user_agent) "
                    "VALUES ($1, $2, 'session_start', $3, $4)", session_id, now, ip, user_agent)
    await c.execute(
        """INSERT INTO consents (session_id, customer_id, policy_version, policy_sha256,
           given_at, ip, user_agent, method, on_behalf) VALUES ($1,NULL,$2,$3,$4,$5,$6,$7,$8)""",
        session_id, policy_version, policy_sha256, now, ip, user_agent, method, on_behalf,
    )
    return True


async def get_session(c: Connection, session_id: str) -> VisitorSession | None:
    row = await c.fetchrow(
        """SELECT s.id, s.customer_id,
                  (SELECT policy_version FROM consents WHERE session_id = s.id
                   AND withdrawn_at IS NULL ORDER BY id DESC LIMIT 1)
           FROM visitor_sessions s WHERE s.id = $1 AND s.revoked_at IS NULL""",
        session_id,
    )
    return VisitorSession(*row) if row else None


async def _live_session(c: Connection, session_id: str) -> str | None:
    """Lock the session's row; its customer id. NotFound when unknown or revoked."""
    row = await c.fetchrow(
        "SELECT customer_id FROM visitor_sessions WHERE id = $1 AND revoked_at IS NULL "
        "FOR UPDATE", session_id,
    )
    if row is None:
        raise NotFound("That session has ended.")
    customer_id: str | None = row[0]
    return customer_id


async def add_consent(
    c: Connection, session_id: str, *, policy_version: str, policy_sha256: str, ip: str | None,
    user_agent: str | None, method: str, on_behalf: bool, now: str,
) -> dict[str, Any]:
    customer_id = await _live_session(c, session_id)
    await c.execute(
        """INSERT INTO consents (session_id, customer_id, policy_version, policy_sha256,
           given_at, ip, user_agent, method, on_behalf) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)""",
        session_id, customer_id, policy_version, policy_sha256, now, ip, user_agent, method,
        on_behalf,
    )
    await c.execute("UPDATE visitor_sessions SET last_seen_at = $1 WHERE id = $2", now, session_id)
    return {"policy_version": policy_version, "policy_sha256": policy_sha256,
            "given_at": now, "method": method, "on_behalf": on_behalf}


async def save_customer(
    c: Connection, session_id: str, *, name: str, email: str, company: str, now: str
) -> Customer:
    customer_id = await _live_session(c, session_id)
    if customer_id is None:
        customer_id = "cu_" + secrets.token_hex(10)
        await c.execute(
            """INSERT INTO customers (id, name, email, company, created_at, updated_at,
               last_active_at) VALUES ($1, $2, $3, $4, $5, $5, $5)""",
            customer_id, name, email, company, now,
        )
        await c.execute("UPDATE visitor_sessions SET customer_id = $1 WHERE id = $2",
                        customer_id, session_id)
        await c.execute("UPDATE consents SET customer_id = $1 WHERE session_id = $2",
                        customer_id, session_id)
    else:
        await c.execute(
            """UPDATE customers SET name = $1, email = $2, company = $3, updated_at = $4,
               last_active_at = $4 WHERE id = $5""",
            name, email, company, now, customer_id,
        )
    return await customer(c, customer_id)


async def rotate_session(c: Connection, session_id: str, new_session_id: str) -> None:
    """Give the session a new id: a new row, the children moved over, the old row gone (the
    foreign keys have no ON UPDATE CASCADE, and the old id must not survive anywhere). The old
    row is locked first, as every other write to a session does."""
    row = await c.fetchrow(
        "SELECT customer_id, created_at, last_seen_at FROM visitor_sessions "
        "WHERE id = $1 AND revoked_at IS NULL FOR UPDATE", session_id,
    )
    if row is None:
        raise NotFound("That session has ended.")
    await c.execute(
        "INSERT INTO visitor_sessions (id, customer_id, created_at, last_seen_at) "
        "VALUES ($1, $2, $3, $4)", new_session_id, row[0], row[1], row[2],
    )
    for table in ("consents", "access_events"):
        await c.execute(f"UPDATE {table} SET session_id = $1 WHERE session_id = $2",
                        new_session_id, session_id)
    await c.execute("DELETE FROM visitor_sessions WHERE id = $1", session_id)


async def record_access(c: Connection, session_id: str, kind: str, ip: str | None,
                        user_agent: str | None, now: str) -> None:
    # The session first (an erasure may have just removed it: NotFound, not a key violation),
    # then the customer: the order an erasure locks them in, reversed nowhere.
    customer_id = await c.fetchval(
        "UPDATE visitor_sessions SET last_seen_at = $1 WHERE id = $2 "
        "RETURNING COALESCE(customer_id, '')",
        now, session_id,
    )
    if customer_id is None:
        raise NotFound("That session has ended.")
    await c.execute(
        "INSERT INTO access_events (session_id, at, kind, ip, user_agent) "
        "VALUES ($1, $2, $3, $4, $5)",
        session_id, now, kind, ip, user_agent,
    )
    if customer_id:
        await c.execute("UPDATE customers SET last_active_at = $1 WHERE id = $2",
                        now, customer_id)


async def update_customer(c: Connection, customer_id: str, fields: dict[str, str], now: str
                          ) -> Customer:
    await customer(c, customer_id)
    allowed = {k: v for k, v in fields.items() if k in {"name", "email", "company"}}
    for key, value in allowed.items():  # keys from the fixed set above, never from a caller
        await c.execute(f"UPDATE customers SET {key} = $1 WHERE id = $2", value, customer_id)
    await c.execute("UPDATE customers SET updated_at = $1, last_active_at = $1 WHERE id = $2",
                    now, customer_id)
    return await customer(c, customer_id)


async def customers_by_email(c: Connection, email: str) -> list[Customer]:
    rows = await c.fetch(CUSTOMER + " WHERE lower(email) = lower($1) ORDER BY created_at",
                         email.strip())
    return [to_customer(r) for r in rows]


async def list_consents(c: Connection, customer_id: str) -> list[dict[str, Any]]:
    rows = await c.fetch(CONSENT + " WHERE customer_id = $1 ORDER BY id DESC", customer_id)
    return [to_consent(r) for r in rows]


async def session_consents(c: Connection, session_id: str) -> list[dict[str, Any]]:
    rows = await c.fetch(CONSENT + " WHERE session_id = $1 ORDER BY id DESC", session_id)
    return [to_consent(r) for r in rows]


async def withdraw_consents(c: Connection, session_id: str, now: str) -> int:
    status = await c.execute(
        """UPDATE consents SET withdrawn_at = $1 WHERE withdrawn_at IS NULL AND (
           session_id = $2 OR customer_id = (
               SELECT customer_id FROM visitor_sessions WHERE id = $2))""",
        now, session_id,
    )
    return rowcount(status)


def rowcount(status: str) -> int:
    """The row count of a command tag such as 'UPDATE 3' or 'DELETE 0'."""
    return int(status.rsplit(" ", 1)[-1])


async def customer_sessions(c: Connection, customer_id: str) -> list[str]:
    rows = await c.fetch("SELECT id FROM visitor_sessions WHERE customer_id = $1", customer_id)
    return [r[0] for r in rows]


async def set_legal_hold(c: Connection, customer_id: str, hold: bool) -> Customer:
    await customer(c, customer_id)
    await c.execute("UPDATE customers SET legal_hold = $1 WHERE id = $2", hold, customer_id)
    return await customer(c, customer_id)


async def list_customers(
    c: Connection, *, query: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    clause, args = "", []
    if query:
        clause = (" WHERE name ILIKE $1 OR email ILIKE $1 OR company ILIKE $1 OR id = $2")
        args = [like(query), query]
    n = len(args)
    rows = await c.fetch(
        CUSTOMER.replace("FROM customers", ", (SELECT COUNT(*) FROM conversations "
                         "WHERE customer_id = customers.id) FROM customers")
        + clause + f" ORDER BY last_active_at DESC LIMIT ${n + 1} OFFSET ${n + 2}",
        *args, limit, offset,
    )
    total = await c.fetchval("SELECT COUNT(*) FROM customers" + clause, *args)
    items = []
    for row in rows:
        found = to_customer(row[:8])
        items.append({**found.public(), "id": found.id, "created_at": found.created_at,
                      "last_active_at": found.last_active_at,
                      "legal_hold": found.legal_hold, "conversations": row[8]})
    return items, int(total)


async def customer_access(c: Connection, customer_id: str) -> list[dict[str, Any]]:
    rows = await c.fetch(
        """SELECT a.at, a.kind, a.ip, a.user_agent FROM access_events a
           JOIN visitor_sessions s ON s.id = a.session_id
           WHERE s.customer_id = $1 ORDER BY a.id DESC LIMIT 500""",
        customer_id,
    )
    return [dict(zip(("at", "kind", "ip", "user_agent"), r, strict=True)) for r in rows]
