"""Privacy-policy versions: published once, never changed; the latest published is current."""

from __future__ import annotations

from ...errors import Conflict
from ..base import PolicyVersion
from ..rows import POLICY
from .engine import Connection


async def publish(c: Connection, policy: PolicyVersion, now: str) -> PolicyVersion:
    # One publisher at a time, so the ordinal (publication order) is taken once.
    await c.execute("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE")
    if await c.fetchval("SELECT 1 FROM policy_versions WHERE version = $1", policy.version):
        raise Conflict(f"Policy version {policy.version} exists already.", code="version_exists")
    ordinal = await c.fetchval("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM policy_versions")
    await c.execute(
        "INSERT INTO policy_versions (version, effective_date, summary, text, sha256, "
        "published_at, ordinal) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        policy.version, policy.effective_date, policy.summary, policy.text, policy.sha256, now,
        ordinal,
    )
    return PolicyVersion(policy.version, policy.effective_date, policy.summary, policy.text,
                         policy.sha256, now)


async def current(c: Connection) -> PolicyVersion | None:
    row = await c.fetchrow(POLICY + " ORDER BY ordinal DESC LIMIT 1")
    return PolicyVersion(*row) if row else None


async def get(c: Connection, version: str) -> PolicyVersion | None:
    row = await c.fetchrow(POLICY + " WHERE version = $1", version)
    return PolicyVersion(*row) if row else None


async def list_all(c: Connection) -> list[PolicyVersion]:
    return [PolicyVersion(*r) for r in await c.fetch(POLICY + " ORDER BY ordinal DESC")]
