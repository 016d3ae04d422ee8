"""Export, erasure and the retention purge: the customer's rights and our promise to forget.

Each is one Store transaction; this module adds what surrounds it: closing the sockets of erased
sessions, the audit entry (opaque ids and counts only), and the schedule. The clock is the store's,
so tests move time by handing the store another clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import audit, jobs, metrics
from .errors import CLOSE_SESSION_ENDED
from .hub import Hub
from .settings import Settings
from .storage.base import Store, iso

log = logging.getLogger("chatserver.privacy")
EXPORT_FORMAT = "chatserver.export/1"


async def export_document(
    store: Store, customer_id: str | None, *, session_id: str | None = None
) -> dict[str, Any]:
    """Everything held: the customer's, or a session's that never gave its details."""
    if customer_id is not None:
        data = await store.export_customer(customer_id)
        data["blocks"] = await store.customer_blocks(customer_id)
    else:
        assert session_id is not None
        data = {**await store.export_session(session_id), "mail": [], "mail_links": [],
                "blocks": []}
    return {"format": EXPORT_FORMAT, "exported_at": iso(store.clock()), **data}


async def erase(
    store: Store,
    hub: Hub | None,
    customer_id: str | None = None,
    *,
    session_id: str | None = None,
    reason: str,
    actor: str,
    ip: str | None = None,
) -> dict[str, Any]:
    """Erase a customer (or a session that never became one) now; close their sockets; leave
    an audit entry without PII."""
    if customer_id is not None:
        result = await store.erase_customer(customer_id, reason=reason)
    else:
        assert session_id is not None
        result = await store.erase_session(session_id, reason=reason)
    await _after_erasure(hub, result["session_ids"], result.get("conversation_ids", []))
    await audit.record(store, actor=actor, action="customer.erase", ip=ip,
                       target=f"erasure:{result['id']}", detail=_counts(result))
    log.info("customer erased erasure=%s reason=%s", result["id"], reason)
    return result


def _counts(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("conversations", "messages", "sessions", "consents", "access_events", "reason")
    return {k: result[k] for k in keys if k in result}


async def _after_erasure(hub: Hub | None, session_ids: list[str],
                         conversation_ids: list[str]) -> None:
    """Close the erased sessions' sockets and clear the erased conversations off every
    dashboard."""
    if hub is None:  # the CLI: a running server closes such sockets at their next message
        return
    for session_id in session_ids:
        await hub.end_session(session_id, CLOSE_SESSION_ENDED)
    await hub.erased(conversation_ids)


def cutoffs(settings: Settings, store: Store) -> dict[str, str]:
    now = store.clock()
    return {
        "account_cutoff": iso(now - timedelta(days=settings.retention_days)),
        "access_cutoff": iso(now - timedelta(days=settings.access_retention_days)),
        "conversation_cutoff": iso(now - timedelta(days=settings.conversation_retention_days)),
        "session_cutoff": iso(now - timedelta(hours=settings.unfinished_session_hours)),
    }


async def purge(
    store: Store, hub: Hub | None, settings: Settings, *, dry_run: bool, actor: str,
    ip: str | None = None,
) -> dict[str, Any]:
    """Apply every retention rule now (or count what it would do); audit a real run."""
    result = await store.purge(**cutoffs(settings, store), dry_run=dry_run)
    result["counts"]["expired_blocks"] = await store.purge_blocks(dry_run=dry_run)
    result["counts"]["audit_entries"] = await audit.chain(store).cut(actor, dry_run=dry_run)
    if not dry_run:
        await _after_erasure(hub, result["session_ids"], result.get("conversation_ids", []))
        await audit.record(store, actor=actor, action="retention.purge", ip=ip,
                           detail=result["counts"])
        log.info("retention purge %s", json.dumps(result["counts"], sort_keys=True))
        metrics.purge_ran(actor)
    return {"dry_run": dry_run, "counts": result["counts"]}


PURGE_JOB = "retention.purge"


async def purge_forever(store: Store, hub: Hub, settings: Settings) -> None:
    """The periodic purge, run by the server while it is up: once per interval across all its
    processes (jobs.py), whichever of them wins the round."""
    interval = settings.purge_interval_seconds
    while True:
        try:
            if await jobs.claim(store, PURGE_JOB, interval):
                await purge(store, hub, settings, dry_run=False, actor="retention")
        except Exception:  # the next round tries again; the log says why
            log.exception("retention purge failed")
        await asyncio.sleep(jobs.poll_seconds(interval))


def subprocessors(settings: Settings) -> list[dict[str, str]]:
    """The sub-processors named in the settings file, for the policy page."""
    if not settings.subprocessors_file:
        return []
    raw = json.loads(Path(settings.subprocessors_file).read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError("the sub-processors file must hold a JSON list")
    keys = ("name", "purpose", "data", "country")
    return [{k: str(item.get(k, "")) for k in keys} for item in raw if isinstance(item, dict)]
