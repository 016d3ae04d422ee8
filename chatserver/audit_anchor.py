"""The audit chain's anchor: its newest entry, kept outside the database.

A keyed chain stops anyone without the key from altering or inserting entries, but not from
deleting the newest ones (or all of them): what is left still chains. The anchor file in the data
folder holds the id and hash of the newest entry, with a MAC, so `audit verify` can tell that
entries are missing from the end. It is replaced atomically (a temporary file, fsync, rename,
fsync of the folder) after every append, under an exclusive lock on the folder, since the server
and a `chatserver` command may append at the same time; it only ever moves forward.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ANCHOR_FILE = "audit.anchor"
FORMAT = "chatserver.audit-anchor/1"


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str


class AnchorInvalid(Exception):
    """The file is there but unreadable, or its MAC does not match (altered, or another key)."""


def _mac(key: bytes, head: Head) -> str:
    return hmac.new(key, f"{FORMAT}\n{head.seq}\n{head.hash}".encode(), hashlib.sha256).hexdigest()


def encode(key: bytes, head: Head) -> str:
    return json.dumps({"format": FORMAT, "seq": head.seq, "hash": head.hash,
                       "mac": _mac(key, head)}) + "\n"


class AnchorFile:
    def __init__(self, data_dir: Path, key: bytes) -> None:
        self.folder = data_dir
        self.path = data_dir / ANCHOR_FILE
        self._key = key

    def read(self) -> Head | None:
        """The anchored head; None when there is no anchor file."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeError) as exc:
            raise AnchorInvalid(f"the anchor file cannot be read ({type(exc).__name__})") from None
        try:
            data = json.loads(raw)
            head = Head(int(data["seq"]), str(data["hash"]))
            mac = str(data["mac"])
        except (ValueError, KeyError, TypeError):
            raise AnchorInvalid("the anchor file is not an anchor") from None
        if data.get("format") != FORMAT or not hmac.compare_digest(mac, _mac(self._key, head)):
            raise AnchorInvalid("the anchor file's MAC does not match: it was altered, or the "
                                "secret key changed")
        return head

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive among processes that anchor this folder (a lock on the folder itself, so
        no lock file is left behind)."""
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def write(self, head: Head) -> None:
        """Replace the anchor atomically and durably. Call it holding `locked()`."""
        tmp = self.folder / (ANCHOR_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, encode(self._key, head).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
