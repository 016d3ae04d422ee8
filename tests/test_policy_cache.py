"""The current policy as the chat path reads it: cached, read once however many sockets ask at
the moment the cache runs out, and never put back to an older version by a read that began before
a newer one was announced. On both stores."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from chatserver.consent import Policies, bundled_policy, sha256_text
from chatserver.storage.base import PolicyVersion, Store


class CountedReads:
    """The store, with its reads of the current policy counted."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0

    async def current_policy(self) -> PolicyVersion | None:
        self.reads += 1
        return await self.store.current_policy()

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def _next_version(text: str) -> PolicyVersion:
    return dataclasses.replace(bundled_policy(), version="1.02", summary="Second.", text=text,
                               sha256=sha256_text(text), effective_date="2026-01-01")


async def test_many_asking_at_once_make_one_read(store: Store) -> None:
    counted = CountedReads(store)
    policies = Policies(counted)  # type: ignore[arg-type]
    assert (await policies.current()).version == "1.01"
    assert counted.reads == 1
    assert (await policies.current()).version == "1.01"  # cached
    assert counted.reads == 1
    policies.forget()
    answers = await asyncio.gather(*(policies.current() for _ in range(50)))
    assert {a.version for a in answers} == {"1.01"}
    assert counted.reads == 2


async def test_a_read_begun_before_a_new_version_does_not_bring_back_the_old(
    store: Store,
) -> None:
    policies = Policies(store)
    await policies.current()
    policies.forget()
    early = asyncio.ensure_future(policies.current())  # reads 1.01 while 1.02 is published
    await asyncio.sleep(0)
    policies.forget()  # as the broadcast announcing 1.02 would
    await store.publish_policy(_next_version("The second version."))
    await early
    assert (await policies.current()).version == "1.02"
    assert (await policies.current()).version == "1.02"


async def test_one_waiter_cancelled_does_not_cancel_the_others_read(store: Store) -> None:
    policies = Policies(store)
    first = asyncio.ensure_future(policies.current())
    second = asyncio.ensure_future(policies.current())
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).version == "1.01"
    with pytest.raises(asyncio.CancelledError):
        await first
