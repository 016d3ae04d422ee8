"""Room left on the disk that holds the data folder.

When the disk fills, SQLite fails writes half way through a request and every chat breaks at
once. Before that happens, while CHATSERVER_MIN_FREE_BYTES are still free, new visitor sessions
and customers are refused with a clear 503 (`storage_low`), so the room left serves the chats
already going on.
"""

from __future__ import annotations

import logging
import shutil
import time

from .errors import Unavailable
from .settings import Settings

log = logging.getLogger("chatserver.capacity")
_WARN_EVERY = 60.0
_last_warning = 0.0


def free_bytes(settings: Settings) -> int:
    return shutil.disk_usage(settings.data_dir).free


def refuse_new_visitors_when_low(settings: Settings) -> None:
    """Raise `storage_low` when the data folder's disk is below the minimum free space."""
    global _last_warning
    if not settings.min_free_bytes or free_bytes(settings) >= settings.min_free_bytes:
        return
    now = time.monotonic()
    if now - _last_warning > _WARN_EVERY:  # one line a minute, not one per refused visitor
        _last_warning = now
        log.warning("disk space low for the data folder: refusing new visitor sessions "
                    "(CHATSERVER_MIN_FREE_BYTES=%d)", settings.min_free_bytes)
    raise Unavailable("The chat cannot take new visitors right now; please try again later.",
                      code="storage_low")
