"""Staff names: the sign-in name, half of the credentials and shown to staff only, and the display
name, the only name customers ever see (in `status`, `message` and `typing` frames, system
messages and their export).

A display name may not be any staff member's sign-in name (compared without case), nor may a new
sign-in name be a name customers already see: either way customers would learn a sign-in name.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from .errors import ValidationFailed
from .storage.base import DEFAULT_DISPLAY_NAME, Staff

MAX_DISPLAY_NAME = 60

__all__ = ["DEFAULT_DISPLAY_NAME", "MAX_DISPLAY_NAME", "check_display_name",
           "check_sign_in_name"]


def check_display_name(value: object, sign_in_name: str, staff: Iterable[Staff]) -> str:
    """The display name with its spaces tidied, or ValidationFailed naming `display_name`.

    `sign_in_name` is the named account's own; `staff` is every account (its own included, or
    not yet, for a new one)."""
    if not isinstance(value, str):
        raise ValidationFailed("Give the display name as text.", field="display_name")
    name = " ".join(value.split())
    if not 1 <= len(name) <= MAX_DISPLAY_NAME:
        raise ValidationFailed(f"A display name has 1-{MAX_DISPLAY_NAME} characters.",
                               field="display_name")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ValidationFailed("A display name holds no control characters.",
                               field="display_name")
    sign_in_names = {sign_in_name.casefold(), *(s.name.casefold() for s in staff)}
    if name.casefold() in sign_in_names:
        raise ValidationFailed(
            "Customers see the display name: it must not be a sign-in name. Choose another, "
            f'such as "{DEFAULT_DISPLAY_NAME}" or a first name.',
            field="display_name", code="display_name_is_sign_in_name",
        )
    return name


def check_sign_in_name(name: str, staff: Iterable[Staff]) -> None:
    """A new sign-in name must not be what customers already see of someone."""
    if any(s.display_name.casefold() == name.casefold() for s in staff):
        raise ValidationFailed(
            "Customers see that name as a staff member's display name; choose another sign-in "
            "name.", field="name", code="sign_in_name_is_display_name",
        )
