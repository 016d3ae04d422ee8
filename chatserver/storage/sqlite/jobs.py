"""Periodic jobs shared by all the server's processes (chatserver/jobs.py): the row in `job_runs`
that says when a job is next due."""

from __future__ import annotations

import sqlite3


def claim(c: sqlite3.Connection, name: str, next_due: str, now: str) -> bool:
    """Move the job's due time on when it is due (or new); whether this call did. The writer
    runs in BEGIN IMMEDIATE, which orders processes: the second sees the first's due time."""
    return bool(c.execute(
        "INSERT INTO job_runs (name, due_at, claimed_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET due_at = excluded.due_at, "
        "claimed_at = excluded.claimed_at WHERE job_runs.due_at <= ?",
        (name, next_due, now, now)).rowcount)
