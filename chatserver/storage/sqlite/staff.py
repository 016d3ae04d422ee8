"""Staff accounts, their sign-ins (sessions and the record of attempts), and the one-time token
that creates the first admin."""

from __future__ import annotations

import sqlite3
from typing import Any

from ...errors import Conflict, NotFound
from ..base import DEFAULT_DISPLAY_NAME, Staff
from ..rows import ADMINS, STAFF, to_staff


def add(c: sqlite3.Connection, name: str, role: str, password_hash: str, now: str,
        display_name: str = DEFAULT_DISPLAY_NAME) -> Staff:
    if c.execute("SELECT 1 FROM staff WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"A staff member named {name!r} exists already.", code="name_taken")
    cur = c.execute(
        "INSERT INTO staff (name, role, password_hash, created_at, display_name) "
        "VALUES (?, ?, ?, ?, ?)",
        (name, role, password_hash, now, display_name),
    )
    return to_staff(c.execute(STAFF + " WHERE id = ?", (cur.lastrowid,)).fetchone())


def get(c: sqlite3.Connection, staff_id: int) -> Staff | None:
    row = c.execute(STAFF + " WHERE id = ?", (staff_id,)).fetchone()
    return to_staff(row) if row else None


def get_by_name(c: sqlite3.Connection, name: str) -> Staff | None:
    row = c.execute(STAFF + " WHERE name = ?", (name,)).fetchone()
    return to_staff(row) if row else None


def list_all(c: sqlite3.Connection) -> list[Staff]:
    return [to_staff(r) for r in c.execute(STAFF + " ORDER BY name").fetchall()]


def count_admins(c: sqlite3.Connection) -> int:
    return int(c.execute(ADMINS).fetchone()[0])


def set_password(c: sqlite3.Connection, staff_id: int, password_hash: str) -> None:
    c.execute("UPDATE staff SET password_hash = ? WHERE id = ?", (password_hash, staff_id))


def update(c: sqlite3.Connection, staff_id: int, *, role: str | None, state: str | None,
           display_name: str | None) -> Staff:
    found = c.execute(STAFF + " WHERE id = ?", (staff_id,)).fetchone()
    if found is None:
        raise NotFound("No such staff member.")
    (before,) = c.execute(ADMINS).fetchone()
    if role is not None:
        c.execute("UPDATE staff SET role = ? WHERE id = ?", (role, staff_id))
    if state is not None:
        c.execute("UPDATE staff SET state = ? WHERE id = ?", (state, staff_id))
    if display_name is not None:
        c.execute("UPDATE staff SET display_name = ? WHERE id = ?", (display_name, staff_id))
    (admins,) = c.execute(ADMINS).fetchone()
    if admins == 0 < before:  # rolled back: the job's savepoint undoes the update
        raise Conflict("That would leave no active admin.", code="last_admin")
    return to_staff(c.execute(STAFF + " WHERE id = ?", (staff_id,)).fetchone())


def revoke_sessions(c: sqlite3.Connection, staff_id: int, now: str) -> list[str]:
    ids = [r[0] for r in c.execute(
        "SELECT id FROM staff_sessions WHERE staff_id = ? AND revoked_at IS NULL",
        (staff_id,))]
    c.execute("UPDATE staff_sessions SET revoked_at = ? WHERE staff_id = ? "
              "AND revoked_at IS NULL", (now, staff_id))
    return ids


def note_login(c: sqlite3.Connection, staff_id: int, ok: bool, now: str) -> None:
    if ok:
        c.execute("UPDATE staff SET failed_logins = 0, last_failed_at = NULL WHERE id = ?",
                  (staff_id,))
    else:
        c.execute("UPDATE staff SET failed_logins = failed_logins + 1, last_failed_at = ? "
                  "WHERE id = ?", (now, staff_id))


def last_logins(c: sqlite3.Connection) -> dict[int, str]:
    rows = c.execute(
        "SELECT staff_id, MAX(at) FROM login_events WHERE outcome = 'success' "
        "AND staff_id IS NOT NULL GROUP BY staff_id"
    ).fetchall()
    return {staff_id: at for staff_id, at in rows}


def create_session(c: sqlite3.Connection, session_id: str, staff_id: int, expires_at: str,
                   now: str) -> None:
    c.execute(
        "INSERT INTO staff_sessions (id, staff_id, created_at, last_seen_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (session_id, staff_id, now, now, expires_at),
    )


def session_staff(c: sqlite3.Connection, session_id: str, idle_cutoff: str, now: str
                  ) -> tuple[Staff, str] | None:
    """The signed-in staff member and the session's last use, unless it has ended."""
    row = c.execute(
        """SELECT st.id, st.name, st.role, st.state, st.created_at, st.password_hash,
                  st.failed_logins, st.last_failed_at, st.display_name, ss.last_seen_at
           FROM staff_sessions ss JOIN staff st ON st.id = ss.staff_id
           WHERE ss.id = ? AND ss.revoked_at IS NULL AND ss.expires_at > ?
           AND ss.last_seen_at > ? AND st.state = 'active'""",
        (session_id, now, idle_cutoff),
    ).fetchone()
    return (to_staff(row[:9]), row[9]) if row else None


def touch_session(c: sqlite3.Connection, session_id: str, now: str) -> None:
    c.execute("UPDATE staff_sessions SET last_seen_at = ? WHERE id = ?", (now, session_id))


def revoke_session(c: sqlite3.Connection, session_id: str, now: str) -> None:
    c.execute(
        "UPDATE staff_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (now, session_id),
    )


def record_login(c: sqlite3.Connection, staff_id: int | None, ip: str | None,
                 user_agent: str | None, outcome: str, now: str) -> None:
    c.execute(
        "INSERT INTO login_events (at, staff_id, ip, user_agent, outcome) "
        "VALUES (?, ?, ?, ?, ?)",
        (now, staff_id, ip, user_agent, outcome),
    )


def login_events(c: sqlite3.Connection, staff_id: int | None, limit: int
                 ) -> list[dict[str, Any]]:
    clause = " WHERE staff_id = ?" if staff_id is not None else ""
    args: tuple[Any, ...] = (staff_id,) if staff_id is not None else ()
    rows = c.execute(
        "SELECT id, at, staff_id, ip, user_agent, outcome FROM login_events"
        + clause + " ORDER BY id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    keys = ("id", "at", "staff_id", "ip", "user_agent", "outcome")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def create_setup_token(c: sqlite3.Connection, token_hash: str, expires_at: str, now: str
                       ) -> None:
    c.execute(
        "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES (?, ?, ?)",
        (token_hash, now, expires_at),
    )


def create_first_admin(c: sqlite3.Connection, token_hash: str, name: str, password_hash: str,
                       now: str) -> Staff | None:
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
    return to_staff(c.execute(STAFF + " WHERE id = ?", (cur.lastrowid,)).fetchone())


def setup_token_valid(c: sqlite3.Connection, token_hash: str, now: str) -> bool:
    row = c.execute(
        "SELECT 1 FROM setup_tokens WHERE token_hash = ? AND used_at IS NULL "
        "AND expires_at > ?",
        (token_hash, now),
    ).fetchone()
    return row is not None


def set_away(c: sqlite3.Connection, staff_id: int, away: bool) -> None:
    """Away: no transfers to this agent, who does not count as online for customers."""
    if c.execute("UPDATE staff SET away = ? WHERE id = ?",
                 (1 if away else 0, staff_id)).rowcount != 1:
        raise NotFound("No such staff member.")


def away_ids(c: sqlite3.Connection) -> set[int]:
    return {r[0] for r in c.execute("SELECT id FROM staff WHERE away = 1")}
