"""Staff accounts, their sign-ins (sessions and the record of attempts), and the one-time token
that creates the first admin. Names are unique and looked up without regard to case."""

from __future__ import annotations

from typing import Any

from ...errors import Conflict, NotFound
from ..base import DEFAULT_DISPLAY_NAME, Staff
from ..rows import ADMINS, STAFF, to_staff
from .engine import Connection
from .visitors import rowcount


async def _insert(c: Connection, name: str, role: str, password_hash: str, now: str,
                  display_name: str = DEFAULT_DISPLAY_NAME) -> Staff:
    # The unique index on lower(name) settles two creations of one name at the same instant.
    await c.execute("LOCK TABLE staff IN SHARE ROW EXCLUSIVE MODE")
    if await c.fetchval("SELECT 1 FROM staff WHERE lower(name) = lower($1)", name):
        raise Conflict(f"A staff member named {name!r} exists already.", code="name_taken")
    row = await c.fetchrow(
        "INSERT INTO staff (name, role, password_hash, created_at, display_name) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id, name, role, state, created_at, password_hash, "
        "failed_logins, last_failed_at, display_name",
        name, role, password_hash, now, display_name,
    )
    return to_staff(row)


async def add(c: Connection, name: str, role: str, password_hash: str, now: str,
              display_name: str = DEFAULT_DISPLAY_NAME) -> Staff:
    return await _insert(c, name, role, password_hash, now, display_name)


async def get(c: Connection, staff_id: int) -> Staff | None:
    row = await c.fetchrow(STAFF + " WHERE id = $1", staff_id)
    return to_staff(row) if row else None


async def get_by_name(c: Connection, name: str) -> Staff | None:
    row = await c.fetchrow(STAFF + " WHERE lower(name) = lower($1)", name)
    return to_staff(row) if row else None


async def list_all(c: Connection) -> list[Staff]:
    return [to_staff(r) for r in await c.fetch(STAFF + " ORDER BY lower(name), id")]


async def count_admins(c: Connection) -> int:
    return int(await c.fetchval(ADMINS))


async def set_password(c: Connection, staff_id: int, password_hash: str) -> None:
    await c.execute("UPDATE staff SET password_hash = $1 WHERE id = $2", password_hash, staff_id)


async def update(c: Connection, staff_id: int, *, role: str | None, state: str | None,
                 display_name: str | None = None) -> Staff:
    # Role and state changes one at a time, so "no active admin would remain" is judged on
    # what is committed, not on two changes that each saw the other admin still there.
    await c.execute("LOCK TABLE staff IN SHARE ROW EXCLUSIVE MODE")
    if await get(c, staff_id) is None:
        raise NotFound("No such staff member.")
    before = await c.fetchval(ADMINS)
    if role is not None:
        await c.execute("UPDATE staff SET role = $1 WHERE id = $2", role, staff_id)
    if state is not None:
        await c.execute("UPDATE staff SET state = $1 WHERE id = $2", state, staff_id)
    if display_name is not None:
        await c.execute("UPDATE staff SET display_name = $1 WHERE id = $2", display_name,
                        staff_id)
    if await c.fetchval(ADMINS) == 0 < before:  # the transaction is rolled back with this error
        raise Conflict("That would leave no active admin.", code="last_admin")
    found = await get(c, staff_id)
    assert found is not None
    return found


async def revoke_sessions(c: Connection, staff_id: int, now: str) -> list[str]:
    rows = await c.fetch(
        "UPDATE staff_sessions SET revoked_at = $1 WHERE staff_id = $2 AND revoked_at IS NULL "
        "RETURNING id", now, staff_id,
    )
    return [r[0] for r in rows]


async def note_login(c: Connection, staff_id: int, ok: bool, now: str) -> None:
    if ok:
        await c.execute(
            "UPDATE staff SET failed_logins = 0, last_failed_at = NULL WHERE id = $1", staff_id)
    else:
        await c.execute(
            "UPDATE staff SET failed_logins = failed_logins + 1, last_failed_at = $1 "
            "WHERE id = $2", now, staff_id)


async def last_logins(c: Connection) -> dict[int, str]:
    rows = await c.fetch(
        "SELECT staff_id, MAX(at) FROM login_events WHERE outcome = 'success' "
        "AND staff_id IS NOT NULL GROUP BY staff_id"
    )
    return {staff_id: at for staff_id, at in rows}


async def create_session(c: Connection, session_id: str, staff_id: int, expires_at: str,
                         now: str) -> None:
    await c.execute(
        "INSERT INTO staff_sessions (id, staff_id, created_at, last_seen_at, expires_at) "
        "VALUES ($1, $2, $3, $3, $4)",
        session_id, staff_id, now, expires_at,
    )


async def session_staff(c: Connection, session_id: str, idle_cutoff: str, now: str
                        ) -> tuple[Staff, str] | None:
    """The signed-in staff member and the session's last use, unless it has ended."""
    row = await c.fetchrow(
        """SELECT st.id, st.name, st.role, st.state, st.created_at, st.password_hash,
                  st.failed_logins, st.last_failed_at, st.display_name, ss.last_seen_at
           FROM staff_sessions ss JOIN staff st ON st.id = ss.staff_id
           WHERE ss.id = $1 AND ss.revoked_at IS NULL AND ss.expires_at > $2
           AND ss.last_seen_at > $3 AND st.state = 'active'""",
        session_id, now, idle_cutoff,
    )
    return (to_staff(row[:9]), row[9]) if row else None


async def touch_session(c: Connection, session_id: str, now: str) -> None:
    await c.execute("UPDATE staff_sessions SET last_seen_at = $1 WHERE id = $2", now, session_id)


async def revoke_session(c: Connection, session_id: str, now: str) -> None:
    await c.execute(
        "UPDATE staff_sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        now, session_id,
    )


async def record_login(c: Connection, staff_id: int | None, ip: str | None,
                       user_agent: str | None, outcome: str, now: str) -> None:
    await c.execute(
        "INSERT INTO login_events (at, staff_id, ip, user_agent, outcome) "
        "VALUES ($1, $2, $3, $4, $5)",
        now, staff_id, ip, user_agent, outcome,
    )


async def login_events(c: Connection, staff_id: int | None, limit: int) -> list[dict[str, Any]]:
    if staff_id is not None:
        rows = await c.fetch(
            "SELECT id, at, staff_id, ip, user_agent, outcome FROM login_events "
            "WHERE staff_id = $1 ORDER BY id DESC LIMIT $2", staff_id, limit)
    else:
        rows = await c.fetch(
            "SELECT id, at, staff_id, ip, user_agent, outcome FROM login_events "
            "ORDER BY id DESC LIMIT $1", limit)
    keys = ("id", "at", "staff_id", "ip", "user_agent", "outcome")
    return [dict(zip(keys, r, strict=True)) for r in rows]


async def create_setup_token(c: Connection, token_hash: str, expires_at: str, now: str) -> None:
    await c.execute(
        "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)",
        token_hash, now, expires_at,
    )


async def create_first_admin(c: Connection, token_hash: str, name: str, password_hash: str,
                             now: str) -> Staff | None:
    await c.execute("LOCK TABLE staff IN SHARE ROW EXCLUSIVE MODE")
    if await c.fetchval("SELECT 1 FROM staff WHERE role = 'admin' AND state = 'active'"):
        return None
    if await c.fetchval("SELECT 1 FROM staff WHERE lower(name) = lower($1)", name):
        raise Conflict(f"A staff member named {name!r} exists already.", code="name_taken")
    used = rowcount(await c.execute(
        "UPDATE setup_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL "
        "AND expires_at > $1", now, token_hash,
    ))
    if used != 1:
        return None
    return await _insert(c, name, "admin", password_hash, now)


async def setup_token_valid(c: Connection, token_hash: str, now: str) -> bool:
    row = await c.fetchval(
        "SELECT 1 FROM setup_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        token_hash, now,
    )
    return row is not None


async def set_away(c: Connection, staff_id: int, away: bool) -> None:
    """Away: no transfers to this agent, who does not count as online for customers."""
    if rowcount(await c.execute("UPDATE staff SET away = $1 WHERE id = $2", away,
                                staff_id)) != 1:
        raise NotFound("No such staff member.")


async def away_ids(c: Connection) -> set[int]:
    return {r[0] for r in await c.fetch("SELECT id FROM staff WHERE away")}
