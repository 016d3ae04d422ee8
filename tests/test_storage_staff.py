"""Staff accounts on both stores: the guard that keeps one active admin."""

from __future__ import annotations

import pytest

from chatserver.errors import Conflict
from chatserver.storage.base import Store


async def test_the_last_active_admin_cannot_be_taken_away(store: Store) -> None:
    chief = await store.add_staff("chief", "admin", "h", "Chief")
    sam = await store.add_staff("sam", "agent", "h", "Sam")
    for change in ({"role": "agent"}, {"state": "disabled"}):
        with pytest.raises(Conflict) as refused:
            await store.update_staff(chief.id, **change)
        assert refused.value.code == "last_admin"
    assert (await store.update_staff(chief.id, display_name="The Chief")).role == "admin"
    assert (await store.update_staff(sam.id, display_name="Sam S.")).display_name == "Sam S."
    await store.update_staff(sam.id, role="admin")
    assert (await store.update_staff(chief.id, state="disabled")).state == "disabled"


async def test_without_any_admin_agents_still_change_their_own_names(store: Store) -> None:
    """Agents added before any admin: nothing a change does takes an admin away."""
    sam = await store.add_staff("sam", "agent", "h", "Sam from Support")
    assert (await store.update_staff(sam.id, display_name="Sam S.")).display_name == "Sam S."
    assert (await store.update_staff(sam.id, state="disabled")).state == "disabled"
