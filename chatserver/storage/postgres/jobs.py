"""Periodic jobs shared by all the server's processes (chatserver/jobs.py): the row in `job_runs`
that says when a job is next due."""

from __future__ import annotations

from .engine import Connection


async def claim(c: Connection, name: str, next_due: str, now: str) -> bool:
    """Move the job's due time on when it is due (or new); whether this call did. The row lock
    the upsert takes orders concurrent claims: the second re-reads the first's due time (read
    committed) and its WHERE fails."""
    claimed = await c.fetchval(
        "INSERT INTO job_runs (name, due_at, claimed_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (name) DO UPDATE SET due_at = excluded.due_at, "
        "claimed_at = excluded.claimed_at WHERE job_runs.due_at <= $3 RETURNING name",
        name, next_due, now)
    return claimed is not None
