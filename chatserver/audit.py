"""The append-only audit log: a hash chain keyed with a secret, anchored outside the database.

Each entry's hash is an HMAC-SHA256 over the previous entry's hash and a canonical JSON encoding of
the entry, keyed with a key derived from the server's secret key for this purpose only. The key
is not in the database, so whoever can write the database but lacks the key cannot alter, insert
or reorder entries without breaking the chain. Deleting the newest entries (or all of them) leaves
a chain that still links, so the newest entry's id and hash are also kept, MAC'd, in the anchor
file in the data folder (`audit_anchor.py`). Retention deletes the oldest entries and appends an
entry that vouches for the new start. `audit_verify.py` checks all of it and says what it cannot
prove; docs/security.md states the threat model.

Entries name actors and targets by opaque ids only, never by a customer's name, email or message.
Repeated failures fold into one entry with a count (`audit_repeats.py`).

A store must be attached (`attach`) before anything is recorded on it: that is where the key,
the anchor and the upgrade of a log written before keying come in.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import weakref
from datetime import timedelta
from typing import Any

from .audit_anchor import AnchorFile, AnchorInvalid, Head, encode
from .audit_repeats import Repeats
from .audit_verify import ANCHOR_RESET, KEYING_MARKER, RETENTION, Report, verify
from .settings import Settings
from .storage.base import Store, iso

log = logging.getLogger("chatserver.audit")

_HASHED = ("id", "at", "actor", "action", "ip", "target", "detail")
_CHAIN_LABEL = b"chatserver.audit-chain/1"
_ANCHOR_LABEL = b"chatserver.audit-anchor/1"


def _derive(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps({k: entry.get(k) for k in _HASHED}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """The unkeyed hash of entries written before the chain was keyed."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(entry)).hexdigest()


def keyed_hash(key: bytes, prev_hash: str, entry: dict[str, Any]) -> str:
    return hmac.new(key, prev_hash.encode() + b"\n" + _canonical(entry),
                    hashlib.sha256).hexdigest()


class Chain:
    """One store's audit log as this process writes it."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._key = _derive(settings.secret_key, _CHAIN_LABEL)
        self.anchor = AnchorFile(settings.data_dir, _derive(settings.secret_key, _ANCHOR_LABEL))
        self.repeats = Repeats(settings.audit_repeat_window_seconds, self.append,
                               lambda: iso(store.clock()))
        self._anchor_lock = asyncio.Lock()
        self._latest: dict[str, Any] | None = None
        self.conflicted = False  # the anchor disagrees with the log: leave it as evidence

    def hasher(self, prev_hash: str, entry: dict[str, Any]) -> str:
        return keyed_hash(self._key, prev_hash, entry)

    def is_keyed(self, entry: dict[str, Any]) -> bool:
        return hmac.compare_digest(entry["hash"], self.hasher(entry["prev_hash"], entry))

    async def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        full = await self.store.append_audit(entry, self.hasher)
        await self.advance(full)
        return full

    async def advance(self, entry: dict[str, Any]) -> None:
        """Move the anchor to the newest entry this process wrote, never backwards, and only
        when the log still leads on from the anchored entry."""
        if self._latest is None or entry["id"] > self._latest["id"]:
            self._latest = entry
        async with self._anchor_lock:
            latest = self._latest
            if self.conflicted or latest is None:
                return
            anchored = await asyncio.to_thread(self._read_anchor)
            if anchored is None or anchored.seq >= latest["id"]:
                return  # another process moved it on already (or it is gone: see attach)
            if not await self._leads_on(anchored, latest):
                self._conflict(f"the log no longer leads on from anchored entry {anchored.seq}")
                return
            await asyncio.to_thread(self._write_anchor, Head(latest["id"], latest["hash"]))

    def _read_anchor(self) -> Head | None:
        try:
            return self.anchor.read()
        except AnchorInvalid:
            return None

    def _write_anchor(self, head: Head, *, force: bool = False) -> None:
        with self.anchor.locked():
            try:
                current = self.anchor.read()
            except AnchorInvalid:
                current = None
                if not force:
                    return
            if current is not None and current.seq >= head.seq and not force:
                return
            self.anchor.write(head)

    async def _leads_on(self, anchored: Head, latest: dict[str, Any]) -> bool:
        if latest["id"] == anchored.seq + 1:
            return bool(latest["prev_hash"] == anchored.hash)
        span = latest["id"] - anchored.seq + 1
        newest = await self.store.list_audit(limit=min(span + 100, 5000))
        rows = {e["id"]: e for e in newest}
        if anchored.seq not in rows:
            return True  # too far behind to check here; `audit verify` checks the whole chain
        if rows[anchored.seq]["hash"] != anchored.hash:
            return False
        return all(rows.get(i) is not None and rows[i]["prev_hash"] == rows[i - 1]["hash"]
                   for i in range(anchored.seq + 1, latest["id"] + 1))

    def _conflict(self, why: str) -> None:
        if not self.conflicted:
            log.error("audit log does not match its anchor (%s); the anchor is left as it is: "
                      "run `chatserver audit verify`", why)
        self.conflicted = True

    async def start(self) -> None:
        """Key a new or older log and set up its anchor, or check the log against it."""
        newest = await self.store.list_audit(limit=1)
        head = newest[0] if newest else None
        try:
            anchored = await asyncio.to_thread(self.anchor.read)
            invalid = None
        except AnchorInvalid as exc:
            anchored, invalid = None, str(exc)
        if anchored is None and (head is None or not self.is_keyed(head)) and invalid is None:
            # A new log, or one written before keying: key it from here on. The keying entry
            # chains to the last unkeyed one, so it vouches for all of them.
            marker = await self.store.append_audit(
                {"actor": "server", "action": KEYING_MARKER,
                 "detail": {"unkeyed_entries": head["id"] if head else 0}}, self.hasher)
            await asyncio.to_thread(self._write_anchor, Head(marker["id"], marker["hash"]),
                                    force=True)
            if head is not None:
                log.info("audit log keyed: %d older entries vouched for by entry %d",
                         head["id"], marker["id"])
            return
        if anchored is None:
            reason = "missing" if invalid is None else "invalid"
            log.error("audit anchor file %s; making a new one (audit verify will report it)",
                      reason)
            reset = await self.store.append_audit(
                {"actor": "server", "action": ANCHOR_RESET,
                 "detail": {"reason": reason, "newest_before": head["id"] if head else 0}},
                self.hasher)
            await asyncio.to_thread(self._write_anchor, Head(reset["id"], reset["hash"]),
                                    force=True)
            return
        if head is None or head["id"] < anchored.seq:
            self._conflict(f"entries up to {anchored.seq} were anchored, the log ends at "
                           f"{head['id'] if head else 0}")
            return
        if head["id"] > anchored.seq:
            await self.advance(head)  # entries written after a process stopped short
        elif head["hash"] != anchored.hash:
            self._conflict(f"entry {anchored.seq} differs from the anchored one")

    async def check(self) -> Report:
        entries = await self.store.all_audit()
        try:
            anchored, problem = await asyncio.to_thread(self.anchor.read), None
        except AnchorInvalid as exc:
            anchored, problem = None, str(exc)
        return verify(entries, keyed=self.hasher, plain=entry_hash, anchor=anchored,
                      anchor_problem=problem)

    async def cut(self, actor: str, *, dry_run: bool) -> int:
        """Audit retention: delete entries older than CHATSERVER_AUDIT_RETENTION_DAYS."""
        before = iso(self.store.clock() - timedelta(days=self.settings.audit_retention_days))
        entry = {"actor": actor, "action": RETENTION, "detail": {}}
        result = await self.store.cut_audit(before, entry, self.hasher, dry_run=dry_run)
        if result is None:
            return 0
        if not dry_run:
            await self.advance(result)
            return int(result["detail"]["cut"])
        return int(result["cut"])


def anchor_text(settings: Settings, seq: int, digest: str) -> str:
    """An anchor file's content for a log whose newest entry is (seq, digest): for the anchor
    that goes with a backup copy."""
    return encode(_derive(settings.secret_key, _ANCHOR_LABEL), Head(seq, digest))


_chains: weakref.WeakKeyDictionary[Store, Chain] = weakref.WeakKeyDictionary()


async def attach(store: Store, settings: Settings) -> Chain:
    """Key `store`'s audit log with `settings`' secret and anchor it in its data folder."""
    chain = Chain(store, settings)
    _chains[store] = chain
    await chain.start()
    return chain


def chain(store: Store) -> Chain:
    found = _chains.get(store)
    if found is None:
        raise RuntimeError("audit.attach(store, settings) must come before recording")
    return found


async def detach(store: Store) -> None:
    """Write pending repeat counts; call before closing the store."""
    found = _chains.pop(store, None)
    if found is not None:
        await found.repeats.flush()


async def record(
    store: Store,
    *,
    actor: str,
    action: str,
    ip: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Append an entry; None when it was a repeat folded into a later entry with a count."""
    log_chain = chain(store)
    entry = {"actor": actor, "action": action, "ip": ip, "target": target,
             "detail": detail or {}}
    if log_chain.repeats.fold(entry):
        return None
    return await log_chain.append(entry)


async def check(store: Store) -> Report:
    return await chain(store).check()
