"""The audit log's chain: keyed with a secret outside the database and anchored outside it, so
alterations, deletions at either end and rewrites with recomputed hashes are all found, while a
log cut by retention or upgraded from an unkeyed one still verifies."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatserver import audit
from chatserver.audit_repeats import Repeats
from chatserver.audit_verify import Report
from chatserver.settings import Settings, load
from chatserver.storage import open_store
from chatserver.storage.base import Store

from . import databases
from .support import Server


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    return load(environ={"CHATSERVER_DATA_DIR": str(data), **databases.database_env(data)})


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _open(settings: Settings, clock: Clock | None = None) -> Store:
    store = await open_store(settings.database_url, clock or Clock())
    await audit.attach(store, settings)
    return store


@pytest.fixture
async def store(settings: Settings, clock: Clock) -> AsyncIterator[Store]:
    s = await _open(settings, clock)
    yield s
    await audit.detach(s)
    await s.close()


async def _fill(store: Store, n: int) -> None:
    for k in range(n):
        await audit.record(store, actor="staff:1", action="transcript.download",
                           target=f"conversation:{k}", ip="127.0.0.1", detail={"format": "txt"})


_CLI_ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent.parent)}


def _cli_env(data_dir: Path) -> dict[str, str]:
    return {**_CLI_ENV, **databases.database_env(data_dir)}


def _cli_verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatserver", "--data-dir", str(data_dir), "audit", "verify"],
        capture_output=True, text=True, timeout=60, env=_cli_env(data_dir))


async def _tampered(store: Store, settings: Settings, sql: str, *args: Any) -> Report:
    """Close the store, run `sql` on the database as an attacker with it would, and check the
    log again from a fresh process's point of view."""
    await audit.detach(store)
    await store.close()
    databases.query(settings.database_url, sql, *args)
    reopened = await open_store(settings.database_url)
    try:
        return await audit.Chain(reopened, settings).check()
    finally:
        await reopened.close()


async def test_an_intact_log_verifies_and_says_what_was_checked(store: Store,
                                                                settings: Settings) -> None:
    """A new log is keyed from its first entry; verify passes, naming the checks (keys, links,
    anchor) and what it cannot prove."""
    await _fill(store, 5)
    report = await audit.check(store)
    assert report.intact and report.entries == 6 and report.first_id == 1  # keying entry + 5
    assert report.anchor is not None and report.anchor.seq == 6
    text = " ".join(report.checked)
    assert "HMAC" in text and "anchor" in text and "starts at entry 1" in text
    assert any("secret key" in line for line in report.cannot_prove)
    entries = await store.all_audit()
    assert entries[0]["action"] == "audit.chain_keyed" and entries[1]["prev_hash"] == entries[0][
        "hash"]
    anchor = json.loads((settings.data_dir / "audit.anchor").read_text())
    assert anchor["seq"] == 6 and anchor["hash"] == entries[-1]["hash"] and "mac" in anchor


async def test_an_altered_entry_is_found(store: Store, settings: Settings) -> None:
    """Changing one field of entry 3 breaks its keyed hash: verify names entry 3."""
    await _fill(store, 5)
    report = await _tampered(store, settings,
                             "UPDATE audit_log SET target = 'conversation:x' WHERE id = 3")
    assert not report.intact and report.first_broken_id == 3 and "altered" in str(report.problem)


async def test_deleting_the_newest_entries_is_found(store: Store, settings: Settings) -> None:
    """The chain left after deleting the newest entries still links; the anchor shows the cut."""
    await _fill(store, 5)
    report = await _tampered(store, settings, "DELETE FROM audit_log WHERE id > 3")
    assert not report.intact and report.first_broken_id == 4
    assert "entries 4 to 6 were deleted" in str(report.problem)


async def test_deleting_every_entry_is_found(store: Store, settings: Settings) -> None:
    """An empty log where the anchor names entry 6 is reported as emptied."""
    await _fill(store, 5)
    report = await _tampered(store, settings, "DELETE FROM audit_log")
    assert not report.intact and "every entry was deleted" in str(report.problem)


async def test_a_rewrite_with_recomputed_plain_hashes_is_found(store: Store,
                                                               settings: Settings) -> None:
    """Rewriting a middle entry and recomputing it and every later hash with plain SHA-256 (all
    an attacker without the key can do) is found at the rewritten entry."""
    await _fill(store, 5)
    entries = await store.all_audit()
    await audit.detach(store)
    await store.close()
    prev = entries[2]["hash"]
    for entry in entries[3:]:
        if entry["id"] == 4:
            entry["target"] = "conversation:forged"
        digest = audit.entry_hash(prev, entry)
        databases.query(settings.database_url,
                        "UPDATE audit_log SET target = ?, prev_hash = ?, hash = ? WHERE id = ?",
                        entry["target"], prev, digest, entry["id"])
        prev = digest
    reopened = await open_store(settings.database_url)
    try:
        report = await audit.Chain(reopened, settings).check()
    finally:
        await reopened.close()
    assert not report.intact and report.first_broken_id == 4 and "altered" in str(report.problem)


async def test_retention_cuts_old_entries_and_the_rest_still_verifies(
        store: Store, settings: Settings, clock: Clock) -> None:
    """Entries older than CHATSERVER_AUDIT_RETENTION_DAYS are deleted; the entry recording the
    cut vouches for the new start, so the log verifies; deleting the oldest kept entry after
    that is still found."""
    await _fill(store, 4)
    clock.now += timedelta(days=settings.audit_retention_days + 1)
    await _fill(store, 2)
    chain = audit.chain(store)
    assert await chain.cut("retention", dry_run=True) == 5
    assert await chain.cut("retention", dry_run=False) == 5
    entries = await store.all_audit()
    assert [e["id"] for e in entries] == [6, 7, 8]
    assert entries[-1]["action"] == "audit.retention"
    assert entries[-1]["detail"] == {"cut": 5, "first_kept": 6,
                                     "first_kept_prev_hash": entries[0]["prev_hash"]}
    report = await audit.check(store)
    assert report.intact, report.problem
    assert any("removed by retention" in line for line in report.checked)
    assert await chain.cut("retention", dry_run=False) == 0  # nothing old enough now
    broken = await _tampered(store, settings, "DELETE FROM audit_log WHERE id = 6")
    assert not broken.intact and broken.first_broken_id == 7
    assert "no retention entry vouches" in str(broken.problem)


async def test_a_log_written_before_keying_is_vouched_for_by_the_keying_entry(
        settings: Settings) -> None:
    """Entries hashed with plain SHA-256 by an older version are kept as they are; the keying
    entry appended on upgrade chains to the last of them, so they verify, and altering one of
    them is still found."""
    store = await open_store(settings.database_url)
    prev = ""
    for k in range(1, 4):  # what the unkeyed version wrote
        entry = {"id": k, "at": "2025-01-01T00:00:00.000000Z", "actor": "cli",
                 "action": "staff.create", "ip": None, "target": f"staff:{k}", "detail": {}}
        full = await store.append_audit(entry, lambda p, e: audit.entry_hash(p, e))
        assert full["prev_hash"] == prev
        prev = full["hash"]
    await store.close()
    store = await _open(settings)
    entries = await store.all_audit()
    assert entries[3]["action"] == "audit.chain_keyed"
    assert entries[3]["detail"] == {"unkeyed_entries": 3} and entries[3]["prev_hash"] == prev
    report = await audit.check(store)
    assert report.intact, report.problem
    assert any("before the chain was keyed" in line for line in report.checked)
    broken = await _tampered(store, settings, "UPDATE audit_log SET target = 'x' WHERE id = 2")
    assert not broken.intact and broken.first_broken_id == 2


async def test_a_lost_anchor_is_made_anew_and_reported(store: Store, settings: Settings) -> None:
    """With the anchor file gone, the next start makes a new one after an entry saying so, and
    verify reports that truncation before it cannot be ruled out."""
    await _fill(store, 2)
    await audit.detach(store)
    await store.close()
    (settings.data_dir / "audit.anchor").unlink()
    reopened = await _open(settings)
    try:
        entries = await reopened.all_audit()
        assert entries[-1]["action"] == "audit.anchor_reset"
        assert entries[-1]["detail"] == {"reason": "missing", "newest_before": 3}
        report = await audit.check(reopened)
        assert not report.intact and report.first_broken_id == 4
        assert "anchor file was missing" in str(report.problem)
    finally:
        await audit.detach(reopened)
        await reopened.close()


async def test_an_anchor_made_with_another_key_is_refused(store: Store,
                                                          settings: Settings) -> None:
    """A forged anchor (MAC with another key) does not count: verify says so."""
    await _fill(store, 1)
    path = settings.data_dir / "audit.anchor"
    data = json.loads(path.read_text())
    data["seq"] = 1
    path.write_text(json.dumps(data))
    report = await audit.check(store)
    assert not report.intact and "MAC does not match" in str(report.problem)


def _attack(data_dir: Path, attack: str) -> None:
    """What someone who can write the database (but has no secret key) does to hide entries."""
    url = _cli_env(data_dir).get("CHATSERVER_DATABASE_URL") or f"sqlite://{data_dir / 'chat.db'}"

    def db(sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return databases.query(url, sql, *args)

    if attack == "delete newest":
        ((last,),) = db("SELECT MAX(id) FROM audit_log")
        db("DELETE FROM audit_log WHERE id >= ?", last - 1)
    elif attack == "delete all":
        db("DELETE FROM audit_log")
    else:  # rewrite a middle entry, recomputing it and every later hash with SHA-256
        rows = db("SELECT id, at, actor, action, ip, target, detail, prev_hash "
                  "FROM audit_log ORDER BY id")
        middle = len(rows) // 2
        ((prev,),) = db("SELECT hash FROM audit_log WHERE id = ?", rows[middle][0] - 1)
        for n, row in enumerate(rows[middle:]):
            keys = ("id", "at", "actor", "action", "ip", "target", "detail")
            entry = dict(zip(keys, row[:7], strict=True))
            entry["detail"] = json.loads(entry["detail"])
            if n == 0:
                entry["target"] = "staff:999"
            digest = audit.entry_hash(prev, entry)
            db("UPDATE audit_log SET target = ?, prev_hash = ?, hash = ? WHERE id = ?",
               entry["target"], prev, digest, entry["id"])
            prev = digest


@pytest.fixture(scope="module")
def written_by_the_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose audit log `chatserver` itself wrote (three staff accounts)."""
    data = tmp_path_factory.mktemp("cli") / "data"
    server = Server(data)
    server.start()  # only `serve` makes a data folder
    server.stop()
    for name in ("ann", "bob", "cat"):
        done = subprocess.run([sys.executable, "-m", "chatserver", "--data-dir", str(data),
                               "user", "add", name, "--role", "agent", "--password-stdin"],
                              env=_cli_env(data), text=True,
                              input="correct horse battery staple\n",
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
    return data


@pytest.mark.parametrize("attack", ["delete newest", "delete all", "rewrite middle"])
def test_cli_verify_finds_each_attack(written_by_the_cli: Path, tmp_path: Path,
                                      attack: str) -> None:
    """On a log written by `chatserver` itself, `chatserver audit verify` exits 0, printing what
    it checked and what it cannot prove; after each attack it exits 1 with the reason."""
    data = tmp_path / "data"
    shutil.copytree(written_by_the_cli, data)
    databases.copy_server_database(written_by_the_cli, data)
    intact = _cli_verify(data)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact" in intact.stdout
    assert "checked:" in intact.stdout and "cannot prove:" in intact.stdout
    _attack(data, attack)
    broken = _cli_verify(data)
    assert broken.returncode == 1, broken.stdout
    assert "broken" in broken.stdout
    expected = {"delete newest": "were deleted", "delete all": "every entry was deleted",
                "rewrite middle": "altered"}[attack]
    assert expected in broken.stdout, broken.stdout


async def test_repeated_failed_sign_ins_fold_into_one_entry(make_server: Any) -> None:
    """Eight failed sign-ins from outside write one entry at once and, at shutdown (or when the
    window ends), one more with the count of the other seven, instead of eight entries."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1",
                         CHATSERVER_AUDIT_REPEAT_WINDOW_SECONDS="600")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for n in range(8):
            response = await http.post("/api/staff/login",
                                       json={"username": f"nobody{n}", "password": "wrong"})
            assert response.status_code == 401
    query = "SELECT detail FROM audit_log WHERE action = 'staff.login_failed' ORDER BY id"
    assert len(server.query(query)) == 1  # the first one, at once
    server.stop()  # shutdown writes the pending count
    details = [json.loads(d) for (d,) in server.query(query)]
    assert len(details) == 2
    assert details[0] == {"outcome": "unknown_user"}
    assert details[1]["repeats"] == 7 and details[1]["outcome"] == "unknown_user"
    assert details[1]["first_at"] <= details[1]["last_at"]
    assert server.cli("audit", "verify").returncode == 0


async def test_repeats_are_written_when_their_window_ends() -> None:
    """A fold writes its count when the window ends, keeps folding while repeats come, and a
    quiet window ends it (the next occurrence is written at once again)."""
    written: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def write(entry: dict[str, Any]) -> None:
        written.append(entry)
        arrived.set()

    repeats = Repeats(0.2, write, lambda: datetime.now(UTC).isoformat())
    entry = {"actor": "anonymous", "action": "staff.login_failed", "target": None,
             "ip": "192.0.2.1", "detail": {"outcome": "bad_password"}}
    assert repeats.fold(entry) is False  # the first: write it now
    assert repeats.fold(entry) and repeats.fold({**entry, "ip": "192.0.2.2"})
    assert repeats.fold({**entry, "action": "staff.login"}) is False  # not a repeatable one
    await asyncio.wait_for(arrived.wait(), 5)
    assert written[0]["detail"]["repeats"] == 2 and written[0]["detail"]["addresses"] == 2
    assert written[0]["ip"] is None
    arrived.clear()
    assert repeats.fold(entry)  # still folding in the next window
    await asyncio.wait_for(arrived.wait(), 5)
    assert written[1]["detail"]["repeats"] == 1 and written[1]["ip"] == "192.0.2.1"
    for _ in range(250):  # a quiet window ends the fold
        if not repeats.pending():
            break
        await asyncio.sleep(0.02)
    assert repeats.fold(entry) is False
    await repeats.flush()
