"""The SQLite side of TeamStore: notes, ratings and canned responses, thin methods over
notes_sql.py and canned_sql.py.

A mixin of SQLiteStore (like sqlite_mail.py): it uses the store's writer queue and readers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import blocks_sql, canned_sql, history_sql, notes_sql, reports_sql
from .base import CannedResponse, Note, Rating

T = TypeVar("T")


class SQLiteTeamStore:
    if TYPE_CHECKING:
        async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T: ...
        async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T: ...
        def _now(self) -> str: ...

    async def add_note(self, conversation_id: str, *, staff_id: int, body: str,
                       client_msg_id: str) -> tuple[Note, bool]:
        now = self._now()
        return await self._write(lambda c: notes_sql.add_note(
            c, conversation_id, staff_id, body, client_msg_id, now))

    async def notes_after(self, conversation_id: str, after_seq: int) -> list[Note]:
        return await self._read(lambda c: notes_sql.notes_after(c, conversation_id, after_seq))

    async def rate_conversation(self, conversation_id: str, *, score: int,
                                comment: str) -> Rating:
        now = self._now()
        return await self._write(lambda c: notes_sql.rate(c, conversation_id, score, comment,
                                                          now))

    async def get_rating(self, conversation_id: str) -> Rating | None:
        return await self._read(lambda c: notes_sql.get_rating(c, conversation_id))

    async def customer_history(self, customer_id: str) -> list[dict[str, Any]]:
        return await self._read(lambda c: history_sql.customer_history(c, customer_id))

    async def report_rows(self, created_from: str, created_before: str
                          ) -> list[dict[str, Any]]:
        return await self._read(
            lambda c: reports_sql.report_rows(c, created_from, created_before))

    # -- blocks -----------------------------------------------------------------------------

    async def add_block(self, customer_id: str, *, conversation_id: str | None, ip: str | None,
                        reason: str, staff_id: int, expires_at: str) -> dict[str, Any]:
        now = self._now()
        return await self._write(lambda c: blocks_sql.add(
            c, customer_id, conversation_id, ip, reason, staff_id, now, expires_at))

    async def active_block(self, customer_id: str | None, ip: str | None
                           ) -> dict[str, Any] | None:
        now = self._now()
        return await self._read(lambda c: blocks_sql.active(c, customer_id, ip, now))

    async def customer_blocks(self, customer_id: str) -> list[dict[str, Any]]:
        return await self._read(lambda c: blocks_sql.of_customer(c, customer_id))

    async def customer_last_ip(self, customer_id: str) -> str | None:
        return await self._read(lambda c: blocks_sql.last_ip(c, customer_id))

    async def purge_blocks(self, *, dry_run: bool) -> int:
        now = self._now()
        if dry_run:
            return await self._read(lambda c: blocks_sql.purge(c, now, True))
        return await self._write(lambda c: blocks_sql.purge(c, now, False))

    # -- canned responses -------------------------------------------------------------------

    async def list_canned(self) -> list[CannedResponse]:
        return await self._read(canned_sql.list_all)

    async def add_canned(self, shortcut: str, body: str) -> CannedResponse:
        now = self._now()
        return await self._write(lambda c: canned_sql.add(c, shortcut, body, now))

    async def update_canned(self, canned_id: int, *, shortcut: str | None = None,
                            body: str | None = None) -> CannedResponse:
        now = self._now()
        return await self._write(lambda c: canned_sql.update(c, canned_id, shortcut, body, now))

    async def delete_canned(self, canned_id: int) -> None:
        await self._write(lambda c: canned_sql.delete(c, canned_id))
