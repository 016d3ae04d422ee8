"""Periodic jobs that run once across all the server's processes, not once per process.

`chatserver serve --workers N` (or several hosts on one PostgreSQL database) runs the same
background loops in every process. A loop asks the database before each round: `claim` moves the
job's row in `job_runs` from due to its next due time, and of several processes asking at once
exactly one succeeds (Store.claim_job), so the job runs once per interval whichever processes are
alive. A process that dies mid-run leaves the next due time set: the job runs again one interval
later, somewhere else if need be.
"""

from __future__ import annotations

from datetime import timedelta

from .storage.base import Store, iso

# Each process looks at least this often whether a job is due, so a job whose interval is long
# still runs within this of its due time when the process that ran it last has gone.
POLL_SECONDS = 30.0


async def claim(store: Store, name: str, interval_seconds: float) -> bool:
    """True when this process should run `name` now (and the next run is an interval away)."""
    next_due = store.clock() + timedelta(seconds=interval_seconds)
    return await store.claim_job(name, iso(next_due))


def poll_seconds(interval_seconds: float) -> float:
    """How long a loop sleeps between asking whether its job is due."""
    return max(0.05, min(float(interval_seconds), POLL_SECONDS))
