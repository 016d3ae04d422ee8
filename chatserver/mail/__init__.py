"""Mail: configuration, one-time links, composing and the outbox with its sender.

Mail never sits on a chat's path: requests queue a row and return; background tasks send.
"""

from __future__ import annotations

from .config import MailConfig, from_settings
from .outbox import Mailer

__all__ = ["MailConfig", "Mailer", "from_settings"]
