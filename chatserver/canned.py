"""Canned responses: what a shortcut and a body may be. No I/O here.

A body may hold two placeholders, filled in the agent's browser when the response is inserted
(so no customer data is ever stored with it): `{customer_first_name}` and `{agent_name}` (the
agent's display name, the name customers see). Any other `{word}` is refused, so a typo is
caught when the response is saved, not when a customer reads it.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ValidationFailed
from .protocol import MAX_BODY_CHARS

PLACEHOLDERS = ("customer_first_name", "agent_name")
SHORTCUT = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def check_shortcut(value: Any) -> str:
    """The shortcut, lower-cased: 1-32 letters, digits, '-' or '_', starting with a letter or
    digit (what follows the '/' the agent types)."""
    if not isinstance(value, str) or not SHORTCUT.fullmatch(value.strip().lower()):
        raise ValidationFailed("A shortcut is 1-32 letters, digits, '-' or '_', starting with a "
                               "letter or digit.", field="shortcut")
    return value.strip().lower()


def check_body(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("Write the response.", field="body")
    if len(value) > MAX_BODY_CHARS:
        raise ValidationFailed(f"A response may hold at most {MAX_BODY_CHARS} characters.",
                               field="body")
    if "\x00" in value:
        raise ValidationFailed("The response must not contain NUL characters.", field="body")
    unknown = sorted({m for m in _PLACEHOLDER.findall(value) if m not in PLACEHOLDERS})
    if unknown:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise ValidationFailed(f"Unknown placeholder {{{unknown[0][:40]}}}; use {known}.",
                               field="body", code="unknown_placeholder")
    return value.strip()
