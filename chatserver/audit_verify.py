"""Checking the audit chain, and saying what the check proves and what it cannot.

The chain as `audit.py` writes it:

- each entry's hash is an HMAC, keyed from the server's secret key, over the previous entry's
  hash and the entry's canonical JSON; entries written before keying existed use plain SHA-256
  and may only come first, followed by the entry `audit.chain_keyed` that vouches for them;
- the newest entry's id and hash are kept, with a MAC, in the anchor file outside the database;
- a retention cut deletes the oldest entries and appends `audit.retention`, whose detail names
  the oldest entry kept and that entry's prev_hash;
- `audit.anchor_reset` marks a start at which the anchor file was missing or invalid and had to
  be made anew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .audit_anchor import Head

KEYING_MARKER = "audit.chain_keyed"
RETENTION = "audit.retention"
ANCHOR_RESET = "audit.anchor_reset"

CANNOT_PROVE = [
    "Someone holding both the database and the secret key (CHATSERVER_SECRET_KEY or "
    "secret.key) can rewrite the whole log and its anchor: keep the key away from database "
    "copies and backups.",
    "Removing the whole log and the anchor file together looks like a new installation; "
    "compare the head printed here with one noted earlier.",
    "Entries written after the anchor's last update (a process killed in between) could be "
    "removed unnoticed.",
    "Entries older than the retention period are gone by design; only their removal is "
    "vouched for, not their content.",
]


@dataclass
class Report:
    entries: int = 0
    first_id: int | None = None
    last_id: int | None = None
    anchor: Head | None = None
    first_broken_id: int | None = None
    problem: str | None = None
    checked: list[str] = field(default_factory=list)
    cannot_prove: list[str] = field(default_factory=lambda: list(CANNOT_PROVE))

    @property
    def intact(self) -> bool:
        return self.problem is None

    def fail(self, entry_id: int | None, problem: str) -> None:
        if self.problem is None:  # the first problem found is the one reported
            self.first_broken_id, self.problem = entry_id, problem

    def as_dict(self) -> dict[str, Any]:
        return {"intact": self.intact, "first_broken_id": self.first_broken_id,
                "problem": self.problem, "entries": self.entries, "first_id": self.first_id,
                "last_id": self.last_id, "checked": self.checked,
                "cannot_prove": self.cannot_prove}


def _describe(entry: dict[str, Any]) -> str:
    return f"entry {entry['id']} ({entry['action']} at {entry['at']})"


def verify(
    entries: list[dict[str, Any]],
    *,
    keyed: Any,
    plain: Any,
    anchor: Head | None,
    anchor_problem: str | None,
) -> Report:
    """Walk `entries` (oldest first). `keyed(prev, entry)` and `plain(prev, entry)` give the
    hash an entry should have; `anchor` is the anchored head (None: no anchor file) and
    `anchor_problem` why the anchor file could not be used, if so."""
    report = Report(entries=len(entries), anchor=anchor)
    if entries:
        report.first_id, report.last_id = entries[0]["id"], entries[-1]["id"]
    prev: dict[str, Any] | None = None
    legacy = 0
    keyed_seen = False
    latest_cut: dict[str, Any] | None = None
    for entry in entries:
        if prev is None:
            if entry["id"] == 1 and entry["prev_hash"] != "":
                report.fail(1, "entry 1 names a predecessor, but nothing comes before it")
        elif entry["id"] != prev["id"] + 1:
            report.fail(prev["id"] + 1, f"entries {prev['id'] + 1} to {entry['id'] - 1} are "
                        "missing from the middle of the log")
        elif entry["prev_hash"] != prev["hash"]:
            report.fail(entry["id"], f"{_describe(entry)} does not chain to entry {prev['id']}")
        if entry["hash"] == keyed(entry["prev_hash"], entry):
            if not keyed_seen and legacy and entry["action"] != KEYING_MARKER:
                report.fail(entry["id"], f"{_describe(entry)} follows unkeyed entries but is "
                            "not the keying entry")
            keyed_seen = True
        elif not keyed_seen and entry["hash"] == plain(entry["prev_hash"], entry):
            legacy += 1
        else:
            report.fail(entry["id"], f"{_describe(entry)} was altered: its hash does not match "
                        "its content" + (" under the audit key" if keyed_seen or not legacy
                                         else ""))
        if entry["action"] == RETENTION and isinstance(entry.get("detail"), dict):
            latest_cut = entry
        if entry["action"] == ANCHOR_RESET:
            report.fail(entry["id"], f"{_describe(entry)}: the anchor file was "
                        f"{entry['detail'].get('reason', 'lost')} and was made anew, so "
                        "entries removed from the end before then cannot be ruled out")
        prev = entry

    _check_start(report, entries, latest_cut)
    _check_anchor(report, entries, anchor, anchor_problem)
    if entries:
        report.checked.insert(0, f"every entry from {report.first_id} to {report.last_id} "
                              "follows the one before it (ids without gaps, each naming the "
                              "previous hash)")
        keyed_n = len(entries) - legacy
        report.checked.insert(1, f"{keyed_n} entries carry an HMAC keyed from the secret key "
                              "that matches their content: nobody without the key can alter or "
                              "insert one")
        if legacy:
            report.checked.insert(2, f"{legacy} older entries, written before the chain was "
                                  "keyed, carry plain SHA-256 hashes that match; the keying "
                                  "entry after them vouches for the last of them")
    return report


def _check_start(report: Report, entries: list[dict[str, Any]],
                 latest_cut: dict[str, Any] | None) -> None:
    if not entries or entries[0]["id"] == 1:
        if entries:
            report.checked.append("the log starts at entry 1: nothing was cut from its start")
        return
    first = entries[0]
    detail = latest_cut["detail"] if latest_cut else {}
    if detail.get("first_kept") == first["id"] and \
            detail.get("first_kept_prev_hash") == first["prev_hash"]:
        report.checked.append(f"entries before {first['id']} were removed by retention, as "
                              f"entry {latest_cut['id'] if latest_cut else '?'} "
                              "(audit.retention) records")
    else:
        report.fail(first["id"], f"entries before {first['id']} are gone and no retention "
                    "entry vouches for their removal")


def _check_anchor(report: Report, entries: list[dict[str, Any]], anchor: Head | None,
                  anchor_problem: str | None) -> None:
    if anchor_problem:
        report.fail(None, anchor_problem)
        return
    if anchor is None:
        if entries:
            report.fail(None, "the anchor file (audit.anchor in the data folder) is missing, so "
                        "entries removed from the end could not be noticed")
        return
    if not entries:
        report.fail(1, f"the log is empty but its anchor names entry {anchor.seq}: every entry "
                    "was deleted")
        return
    first_id, last_id = entries[0]["id"], entries[-1]["id"]
    if anchor.seq > last_id:
        report.fail(last_id + 1, f"the anchor names entry {anchor.seq} but the log ends at "
                    f"entry {last_id}: entries {last_id + 1} to {anchor.seq} were deleted")
        return
    if anchor.seq < first_id:
        report.fail(first_id, f"the anchor names entry {anchor.seq}, older than the oldest "
                    f"entry kept ({first_id})")
        return
    held = entries[anchor.seq - first_id]
    if held["id"] != anchor.seq or held["hash"] != anchor.hash:
        report.fail(anchor.seq, f"entry {anchor.seq} is not the one the anchor holds: the end "
                    "of the log was replaced")
        return
    report.checked.append(f"the anchor file holds entry {anchor.seq} with the same hash, so "
                          "no entry up to it was removed from the end")
    if last_id > anchor.seq:
        report.checked.append(f"entries {anchor.seq + 1} to {last_id} are newer than the "
                              "anchor (written by a process stopped before updating it): keyed "
                              "and chained, but their removal would not have been noticed")
