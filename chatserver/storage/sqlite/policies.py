"""Privacy-policy versions: published once, never changed; the latest published is current."""

from __future__ import annotations

import sqlite3

from ...errors import Conflict
from ..base import PolicyVersion
from ..rows import POLICY


def publish(c: sqlite3.Connection, policy: PolicyVersion, now: str) -> PolicyVersion:
    if c.execute("SELECT 1 FROM policy_versions WHERE version = ?", (policy.version,)).fetchone():
        raise Conflict(f"Policy version {policy.version} exists already.", code="version_exists")
    (ordinal,) = c.execute("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM policy_versions").fetchone()
    c.execute(
        "INSERT INTO policy_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
        (policy.version, policy.effective_date, policy.summary, policy.text,
         policy.sha256, now, ordinal),
    )
    return PolicyVersion(policy.version, policy.effective_date, policy.summary, policy.text,
                         policy.sha256, now)


def current(c: sqlite3.Connection) -> PolicyVersion | None:
    row = c.execute(POLICY + " ORDER BY ordinal DESC LIMIT 1").fetchone()
    return PolicyVersion(*row) if row else None


def get(c: sqlite3.Connection, version: str) -> PolicyVersion | None:
    row = c.execute(POLICY + " WHERE version = ?", (version,)).fetchone()
    return PolicyVersion(*row) if row else None


def list_all(c: sqlite3.Connection) -> list[PolicyVersion]:
    return [PolicyVersion(*r) for r in c.execute(POLICY + " ORDER BY ordinal DESC").fetchall()]
