"""The PostgreSQL store: the `Store` interface as a thin async front over the aggregate modules.

Each method is one transaction on a pooled connection (engine.py); the SQL lives in policies.py,
visitors.py, conversations.py, search.py, privacy.py, staff.py and audit.py. Times come from the
injected clock as ISO strings, as on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from ...errors import ChatError, NotFound
from ..base import (
    DEFAULT_DISPLAY_NAME,
    READ_MARKS,
    AuditHasher,
    CannedResponse,
    Clock,
    Conversation,
    ConversationSearch,
    ConversationSummary,
    Customer,
    MailToken,
    Message,
    Note,
    OutboxMail,
    PolicyVersion,
    Rating,
    Staff,
    VisitorSession,
    iso,
    stamp,
    utc_now,
)
from . import (
    audit,
    blocks,
    canned,
    conversations,
    history,
    jobs,
    mail,
    notes,
    policies,
    privacy,
    reports,
    staff,
    visitors,
)
from . import search as full_text
from .appends import Append, AppendQueue
from .engine import Engine, open_error
from .migrate import migrate

log = logging.getLogger("chatserver.storage")
DEFAULT_POOL_SIZE = 10
# How long an erasure or purge waits for its compaction before leaving it to finish in the
# background (it waits for readers holding an old snapshot, a long export or dump).
COMPACT_WAIT_SECONDS = 1.0
COMPACT_CLOSE_GRACE_SECONDS = 5.0
P = ParamSpec("P")
R = TypeVar("R")


def nothing_for_nul(empty: Callable[[], Any]) -> Callable[
        [Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """PostgreSQL text cannot hold NUL, so nothing stored has one: a look-up by a text with NUL
    finds nothing, as it would on SQLite, without asking the database (which would refuse it)."""

    def wrap(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(method)
        async def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            if any(isinstance(a, str) and "\x00" in a for a in (*args, *kwargs.values())):
                result: R = empty()
                return result
            return await method(*args, **kwargs)

        return inner

    return wrap


def _none() -> None:
    return None


def _list() -> list[Any]:
    return []


class PostgresStore:
    def __init__(self, url: str, clock: Clock = utc_now, *, pool_size: int = DEFAULT_POOL_SIZE
                 ) -> None:
        self.url = url
        self.clock = clock
        self.pool_size = pool_size
        self._engine: Engine | None = None
        self._appends: AppendQueue | None = None
        self._compaction: asyncio.Task[None] | None = None
        self._compact_again = False

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> PostgresStore:
        engine = await Engine.connect(self.url, self.pool_size)
        try:
            async with engine.pool.acquire() as conn:
                await migrate(conn, self._now())
        except ChatError:
            await engine.close()
            raise
        except Exception as exc:
            await engine.close()
            raise open_error(self.url, exc) from exc
        self._engine = engine
        self._appends = AppendQueue(engine)
        return self

    async def close(self) -> None:
        if self._appends is not None:
            await self._appends.drain()
        await self._stop_compaction()
        if self._engine is not None:
            await self._engine.close()
            self._engine = None

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "store is closed"
        return self._engine

    def _now(self) -> str:
        return stamp(self.clock)

    async def ping(self) -> None:
        await self.engine.read(lambda c: c.fetchval("SELECT 1"))

    async def claim_job(self, name: str, next_due: str) -> bool:
        now = self._now()
        return await self.engine.write(lambda c: jobs.claim(c, name, next_due, now))

    # -- policy -----------------------------------------------------------------------------

    async def publish_policy(self, policy: PolicyVersion) -> PolicyVersion:
        now = self._now()
        return await self.engine.write(lambda c: policies.publish(c, policy, now))

    async def current_policy(self) -> PolicyVersion | None:
        return await self.engine.read(policies.current)

    @nothing_for_nul(_none)
    async def get_policy(self, version: str) -> PolicyVersion | None:
        return await self.engine.read(lambda c: policies.get(c, version))

    async def list_policies(self) -> list[PolicyVersion]:
        return await self.engine.read(policies.list_all)

    # -- visitors ---------------------------------------------------------------------------

    async def create_visitor_session(self, session_id: str) -> None:
        now = self._now()
        await self.engine.write(lambda c: visitors.create_session(c, session_id, now))

    async def start_visitor_session(
        self, session_id: str, *, policy_version: str, policy_sha256: str, ip: str | None,
        user_agent: str | None, method: str, on_behalf: bool,
    ) -> bool:
        now = self._now()
        return await self.engine.write(lambda c: visitors.start_session(
            c, session_id, policy_version=policy_version, policy_sha256=policy_sha256, ip=ip,
            user_agent=user_agent, method=method, on_behalf=on_behalf, now=now))

    @nothing_for_nul(_none)
    async def get_visitor_session(self, session_id: str) -> VisitorSession | None:
        return await self.engine.read(lambda c: visitors.get_session(c, session_id))

    async def add_consent(
        self, session_id: str, *, policy_version: str, policy_sha256: str, ip: str | None,
        user_agent: str | None, method: str, on_behalf: bool,
    ) -> dict[str, Any]:
        now = self._now()
        return await self.engine.write(lambda c: visitors.add_consent(
            c, session_id, policy_version=policy_version, policy_sha256=policy_sha256, ip=ip,
            user_agent=user_agent, method=method, on_behalf=on_behalf, now=now))

    async def save_customer(
        self, session_id: str, *, name: str, email: str, company: str
    ) -> Customer:
        now = self._now()
        return await self.engine.write(lambda c: visitors.save_customer(
            c, session_id, name=name, email=email, company=company, now=now))

    async def rotate_visitor_session(self, session_id: str, new_session_id: str) -> None:
        if "\x00" in session_id:
            raise NotFound("That session has ended.")  # no stored id has a NUL
        await self.engine.write(
            lambda c: visitors.rotate_session(c, session_id, new_session_id))

    @nothing_for_nul(_none)
    async def get_customer(self, customer_id: str) -> Customer | None:
        return await self.engine.read(lambda c: visitors.get_customer(c, customer_id))

    async def record_access(
        self, session_id: str, kind: str, ip: str | None, user_agent: str | None
    ) -> None:
        now = self._now()
        await self.engine.write(
            lambda c: visitors.record_access(c, session_id, kind, ip, user_agent, now))

    # -- conversations ----------------------------------------------------------------------

    async def open_conversation(
        self, customer_id: str, *, create: bool = True
    ) -> tuple[Conversation, bool]:
        now = self._now()
        if not create:  # the common case (every visitor socket): a read, no lock
            return await self.engine.read(lambda c: conversations.open_conversation(
                c, customer_id, create=False, now=now))
        return await self.engine.write(lambda c: conversations.open_conversation(
            c, customer_id, create=True, now=now))

    @nothing_for_nul(_none)
    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return await self.engine.read(lambda c: conversations.get(c, conversation_id))

    async def customer_conversations(self, customer_id: str) -> list[Conversation]:
        return await self.engine.read(lambda c: conversations.of_customer(c, customer_id))

    async def claim_conversation(
        self, conversation_id: str, staff_id: int
    ) -> tuple[Conversation, bool]:
        now = self._now()
        return await self.engine.write(
            lambda c: conversations.claim(c, conversation_id, staff_id, now))

    async def close_conversation(self, conversation_id: str) -> Conversation | None:
        now = self._now()
        return await self.engine.write(lambda c: conversations.close(c, conversation_id, now))

    async def move_conversation(self, conversation_id: str, *, expect_agent_id: int | None,
                                to_agent_id: int | None) -> tuple[Conversation, bool]:
        if "\x00" in conversation_id:
            raise NotFound("No such conversation.")  # no stored id has a NUL
        now = self._now()
        return await self.engine.write(lambda c: conversations.move(
            c, conversation_id, expect_agent_id=expect_agent_id, to_agent_id=to_agent_id,
            now=now))

    async def paused_conversations(self) -> set[str]:
        return await self.engine.read(conversations.paused)

    async def conversation_paused(self, conversation_id: str) -> bool:
        if "\x00" in conversation_id:
            return False
        return await self.engine.read(lambda c: conversations.is_paused(c, conversation_id))

    async def append_message(
        self, conversation_id: str, *, sender: str, sender_id: str, author: str, body: str,
        client_msg_id: str | None, unless_paused: bool = False,
    ) -> tuple[Message, bool, str]:
        assert self._appends is not None, "store is closed"
        return await self._appends.add(Append(conversation_id, sender, sender_id, author, body,
                                              client_msg_id, self._now(), unless_paused))

    @nothing_for_nul(_list)
    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int = 1000
    ) -> list[Message]:
        return await self.engine.read(
            lambda c: conversations.messages_after(c, conversation_id, after_seq, limit))

    async def open_conversations(self) -> list[ConversationSummary]:
        return await self.engine.read(conversations.open_conversations)

    @nothing_for_nul(_none)
    async def conversation_summary(self, conversation_id: str) -> ConversationSummary | None:
        return await self.engine.read(lambda c: conversations.summary(c, conversation_id))

    async def flush_search_index(self) -> None:
        """Nothing to do: each message's search column is written with it."""

    async def search_conversations(
        self, search: ConversationSearch, *, limit: int = 50, offset: int = 0,
    ) -> tuple[list[ConversationSummary], int]:
        return await self.engine.read(
            lambda c: full_text.search_conversations(c, search, limit=limit, offset=offset),
            snapshot=True)

    async def messages_between(
        self, created_from: str | None, created_before: str | None, after_id: int, limit: int
    ) -> tuple[list[Message], int]:
        if "\x00" in (created_from or "") + (created_before or ""):
            return [], after_id  # no stored time has a NUL: nothing is in such a range
        return await self.engine.read(lambda c: conversations.messages_between(
            c, created_from, created_before, after_id, limit))

    # -- notes and ratings ------------------------------------------------------------------

    async def add_note(self, conversation_id: str, *, staff_id: int, body: str,
                       client_msg_id: str) -> tuple[Note, bool]:
        now = self._now()
        return await self.engine.write(lambda c: notes.add_note(
            c, conversation_id, staff_id, body, client_msg_id, now))

    @nothing_for_nul(_list)
    async def notes_after(self, conversation_id: str, after_seq: int) -> list[Note]:
        return await self.engine.read(lambda c: notes.notes_after(c, conversation_id, after_seq))

    async def rate_conversation(self, conversation_id: str, *, score: int,
                                comment: str) -> Rating:
        now = self._now()
        return await self.engine.write(
            lambda c: notes.rate(c, conversation_id, score, comment, now))

    @nothing_for_nul(_none)
    async def get_rating(self, conversation_id: str) -> Rating | None:
        return await self.engine.read(lambda c: notes.get_rating(c, conversation_id))

    @nothing_for_nul(_list)
    async def customer_history(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: history.customer_history(c, customer_id))

    async def report_rows(self, created_from: str, created_before: str
                          ) -> list[dict[str, Any]]:
        return await self.engine.read(
            lambda c: reports.report_rows(c, created_from, created_before), snapshot=True)

    async def add_block(self, customer_id: str, *, conversation_id: str | None, ip: str | None,
                        reason: str, staff_id: int, expires_at: str) -> dict[str, Any]:
        now = self._now()
        return await self.engine.write(lambda c: blocks.add(
            c, customer_id, conversation_id, ip, reason, staff_id, now, expires_at))

    @nothing_for_nul(_none)
    async def active_block(self, customer_id: str | None, ip: str | None
                           ) -> dict[str, Any] | None:
        now = self._now()
        return await self.engine.read(lambda c: blocks.active(c, customer_id, ip, now))

    @nothing_for_nul(_list)
    async def customer_blocks(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: blocks.of_customer(c, customer_id))

    @nothing_for_nul(_none)
    async def customer_last_ip(self, customer_id: str) -> str | None:
        return await self.engine.read(lambda c: blocks.last_ip(c, customer_id))

    async def purge_blocks(self, *, dry_run: bool) -> int:
        now = self._now()
        if dry_run:
            return await self.engine.read(lambda c: blocks.purge(c, now, True))
        return await self.engine.write(lambda c: blocks.purge(c, now, False))

    async def list_canned(self) -> list[CannedResponse]:
        return await self.engine.read(canned.list_all)

    async def add_canned(self, shortcut: str, body: str) -> CannedResponse:
        now = self._now()
        return await self.engine.write(lambda c: canned.add(c, shortcut, body, now))

    async def update_canned(self, canned_id: int, *, shortcut: str | None = None,
                            body: str | None = None) -> CannedResponse:
        now = self._now()
        return await self.engine.write(
            lambda c: canned.update(c, canned_id, shortcut, body, now))

    async def delete_canned(self, canned_id: int) -> None:
        await self.engine.write(lambda c: canned.delete(c, canned_id))

    # -- privacy rights ---------------------------------------------------------------------

    async def update_customer(self, customer_id: str, fields: dict[str, str]) -> Customer:
        now = self._now()
        return await self.engine.write(
            lambda c: visitors.update_customer(c, customer_id, fields, now))

    @nothing_for_nul(_list)
    async def customers_by_email(self, email: str) -> list[Customer]:
        return await self.engine.read(lambda c: visitors.customers_by_email(c, email))

    @nothing_for_nul(_list)
    async def list_consents(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.list_consents(c, customer_id))

    @nothing_for_nul(_list)
    async def session_consents(self, session_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.session_consents(c, session_id))

    async def withdraw_consents(self, session_id: str) -> int:
        now = self._now()
        return await self.engine.write(lambda c: visitors.withdraw_consents(c, session_id, now))

    @nothing_for_nul(_list)
    async def customer_sessions(self, customer_id: str) -> list[str]:
        return await self.engine.read(lambda c: visitors.customer_sessions(c, customer_id))

    async def export_customer(self, customer_id: str) -> dict[str, Any]:
        return await self.engine.read(
            lambda c: privacy.export_customer(c, customer_id), snapshot=True)

    async def export_session(self, session_id: str) -> dict[str, Any]:
        return await self.engine.read(
            lambda c: privacy.export_session(c, session_id), snapshot=True)

    async def erase_customer(self, customer_id: str, *, reason: str) -> dict[str, Any]:
        now = self._now()
        result = await self.engine.write(lambda c: privacy.erase(c, customer_id, reason, now))
        await self._compact_after("erasure")
        return result

    async def erase_session(self, session_id: str, *, reason: str) -> dict[str, Any]:
        now = self._now()
        result = await self.engine.write(
            lambda c: privacy.erase_session(c, session_id, reason, now))
        await self._compact_after("erasure")
        return result

    async def purge(
        self, *, account_cutoff: str, access_cutoff: str, conversation_cutoff: str,
        session_cutoff: str, dry_run: bool,
    ) -> dict[str, Any]:
        """Apply the retention rules in batches of privacy.PURGE_BATCH, each its own short
        transaction, so a large purge never holds chat writes up; a run cut short leaves a
        partial purge that the next run completes. A dry run only counts, in one snapshot."""
        if dry_run:
            counts = await self.engine.read(lambda c: privacy.purge_counts(
                c, account_cutoff=account_cutoff, access_cutoff=access_cutoff,
                conversation_cutoff=conversation_cutoff, session_cutoff=session_cutoff),
                snapshot=True)
            return {"counts": counts, "session_ids": [], "conversation_ids": [], "dry_run": True}
        now = self._now()
        steps: list[Callable[[Any], Coroutine[Any, Any, privacy.Step]]] = [
            lambda c: privacy.purge_access(c, access_cutoff),
            lambda c: privacy.purge_conversations(c, conversation_cutoff),
            lambda c: privacy.purge_accounts(c, account_cutoff, now),
            lambda c: privacy.purge_unfinished(c, session_cutoff),
            lambda c: privacy.purge_logins(c, access_cutoff),
        ]
        counts = dict.fromkeys(privacy.PURGE_COUNTS, 0)
        session_ids: list[str] = []
        conversation_ids: list[str] = []
        for step in steps:
            while True:
                done, delta, sessions, convs = await self.engine.write(step)
                for key, value in delta.items():
                    counts[key] += value
                session_ids += sessions
                conversation_ids += convs
                if done < privacy.PURGE_BATCH:
                    break
        await self._compact_after("purge")
        return {"counts": counts, "session_ids": session_ids,
                "conversation_ids": conversation_ids, "dry_run": False}

    async def _compact_after(self, what: str) -> None:
        """The erasure is committed: a compaction that fails (the database gone a moment, a
        user that does not own the tables) must not report it as failed. Autovacuum removes the
        row versions later; the log says so."""
        try:
            await self.compact()
        except Exception as exc:
            log.warning("VACUUM or REINDEX after an %s failed (%s): the deleted rows' versions "
                        "stay until autovacuum removes them", what, type(exc).__name__)

    async def compact(self) -> None:
        """After an erasure or purge: VACUUM the tables it deleted from, so no row version of
        the deleted content remains (dead tuples would otherwise wait for autovacuum), with
        index cleanup forced (VACUUM may skip it when few rows died: the entries, an email among
        them, would stay). Then rebuild the search index without blocking writes: GIN keeps a
        word as a key after its last row is gone (SQLite's FTS index is merged for the same
        reason). What can remain elsewhere is in docs/privacy.md.

        Neither blocks chat writes, but REINDEX CONCURRENTLY waits for every transaction holding
        an older snapshot (a long export, a pg_dump), and VACUUM cannot remove what such a
        snapshot still sees. So the work runs as a task: this waits COMPACT_WAIT_SECONDS for it,
        then returns and lets it finish once readers let go (it VACUUMs again after a wait).
        One task at a time; a call meanwhile makes it do one more pass."""
        task = self._compaction
        if task is None or task.done():
            self._compact_again = False
            task = self._compaction = asyncio.get_running_loop().create_task(self._compact())
            task.add_done_callback(_log_late_failure)
        else:
            self._compact_again = True  # what was deleted now may predate the running pass
        done, _ = await asyncio.wait({task}, timeout=COMPACT_WAIT_SECONDS)
        if task in done:
            task.result()  # its failure is this call's
        else:
            log.info("compaction waits for a reader holding an old snapshot; it finishes in "
                     "the background")

    async def _compact(self) -> None:
        while True:
            self._compact_again = False
            await self.engine.outside_transaction(
                "VACUUM (INDEX_CLEANUP ON) " + ", ".join(privacy.TOUCHED))
            started = time.monotonic()
            await self.engine.outside_transaction("REINDEX INDEX CONCURRENTLY messages_search")
            if time.monotonic() - started > COMPACT_WAIT_SECONDS:
                # It waited for old snapshots, which may have kept VACUUM from removing rows.
                await self.engine.outside_transaction(
                    "VACUUM (INDEX_CLEANUP ON) " + ", ".join(privacy.TOUCHED))
            if not self._compact_again:
                return

    async def _stop_compaction(self) -> None:
        """Before closing: give a running compaction a little longer, then stop it."""
        task, self._compaction = self._compaction, None
        if task is None or task.done():
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), COMPACT_CLOSE_GRACE_SECONDS)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            log.warning("compaction stopped by closing: a reader still held an old snapshot; "
                        "autovacuum or the next erasure or purge finishes it")

    async def set_legal_hold(self, customer_id: str, hold: bool) -> Customer:
        return await self.engine.write(lambda c: visitors.set_legal_hold(c, customer_id, hold))

    @nothing_for_nul(lambda: ([], 0))
    async def list_customers(
        self, *, query: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        return await self.engine.read(
            lambda c: visitors.list_customers(c, query=query, limit=limit, offset=offset),
            snapshot=True)

    @nothing_for_nul(_list)
    async def customer_access(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.customer_access(c, customer_id))

    # -- staff ------------------------------------------------------------------------------

    async def add_staff(self, name: str, role: str, password_hash: str,
                        display_name: str = DEFAULT_DISPLAY_NAME) -> Staff:
        now = self._now()
        return await self.engine.write(
            lambda c: staff.add(c, name, role, password_hash, now, display_name))

    async def get_staff(self, staff_id: int) -> Staff | None:
        return await self.engine.read(lambda c: staff.get(c, staff_id))

    @nothing_for_nul(_none)
    async def get_staff_by_name(self, name: str) -> Staff | None:
        return await self.engine.read(lambda c: staff.get_by_name(c, name))

    async def list_staff(self) -> list[Staff]:
        return await self.engine.read(staff.list_all)

    async def count_admins(self) -> int:
        return await self.engine.read(staff.count_admins)

    async def set_password(self, staff_id: int, password_hash: str) -> None:
        await self.engine.write(lambda c: staff.set_password(c, staff_id, password_hash))

    async def update_staff(
        self, staff_id: int, *, role: str | None = None, state: str | None = None,
        display_name: str | None = None,
    ) -> Staff:
        return await self.engine.write(lambda c: staff.update(
            c, staff_id, role=role, state=state, display_name=display_name))

    async def set_staff_away(self, staff_id: int, away: bool) -> None:
        await self.engine.write(lambda c: staff.set_away(c, staff_id, away))

    async def away_staff(self) -> set[int]:
        return await self.engine.read(staff.away_ids)

    async def revoke_staff_sessions(self, staff_id: int) -> list[str]:
        now = self._now()
        return await self.engine.write(lambda c: staff.revoke_sessions(c, staff_id, now))

    async def note_login(self, staff_id: int, ok: bool) -> None:
        now = self._now()
        await self.engine.write(lambda c: staff.note_login(c, staff_id, ok, now))

    async def last_logins(self) -> dict[int, str]:
        return await self.engine.read(staff.last_logins)

    async def create_staff_session(self, session_id: str, staff_id: int, expires_at: str) -> None:
        now = self._now()
        await self.engine.write(
            lambda c: staff.create_session(c, session_id, staff_id, expires_at, now))

    @nothing_for_nul(_none)
    async def get_staff_session(self, session_id: str, idle_cutoff: str | None = None
                                ) -> Staff | None:
        now = self._now()
        found = await self.engine.read(
            lambda c: staff.session_staff(c, session_id, idle_cutoff or "", now))
        if found is None:
            return None
        member, last_seen = found
        if last_seen < iso(self.clock() - timedelta(minutes=1)):
            # Refresh the idle clock at most once a minute: a write per request is waste.
            await self.engine.write(lambda c: staff.touch_session(c, session_id, now))
        return member

    async def revoke_staff_session(self, session_id: str) -> None:
        now = self._now()
        await self.engine.write(lambda c: staff.revoke_session(c, session_id, now))

    async def record_login(
        self, staff_id: int | None, ip: str | None, user_agent: str | None, outcome: str
    ) -> None:
        now = self._now()
        await self.engine.write(
            lambda c: staff.record_login(c, staff_id, ip, user_agent, outcome, now))

    async def login_events(
        self, staff_id: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: staff.login_events(c, staff_id, limit))

    # -- setup tokens -----------------------------------------------------------------------

    async def create_setup_token(self, token_hash: str, expires_at: str) -> None:
        now = self._now()
        await self.engine.write(
            lambda c: staff.create_setup_token(c, token_hash, expires_at, now))

    async def create_first_admin(
        self, token_hash: str, name: str, password_hash: str
    ) -> Staff | None:
        now = self._now()
        return await self.engine.write(
            lambda c: staff.create_first_admin(c, token_hash, name, password_hash, now))

    @nothing_for_nul(lambda: False)
    async def setup_token_valid(self, token_hash: str) -> bool:
        now = self._now()
        return await self.engine.read(lambda c: staff.setup_token_valid(c, token_hash, now))

    # -- audit ------------------------------------------------------------------------------

    async def append_audit(self, entry: dict[str, Any], hasher: AuditHasher) -> dict[str, Any]:
        now = self._now()
        return await self.engine.write(lambda c: audit.append(c, entry, hasher, now))

    async def cut_audit(self, before: str, entry: dict[str, Any], hasher: AuditHasher, *,
                        dry_run: bool = False) -> dict[str, Any] | None:
        if dry_run:
            return await self.engine.read(lambda c: audit.count_cut(c, before))
        now = self._now()
        return await self.engine.write(lambda c: audit.cut(c, before, entry, hasher, now))

    @nothing_for_nul(_list)
    async def list_audit(
        self, limit: int = 100, offset: int = 0, *, actor: str | None = None,
        action: str | None = None, target: str | None = None, since: str | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: audit.list_entries(
            c, limit, offset, actor=actor, action=action, target=target, since=since,
            before=before))

    async def all_audit(self) -> list[dict[str, Any]]:
        return await self.engine.read(audit.all_entries)

    # -- mail -------------------------------------------------------------------------------

    @nothing_for_nul(_none)
    async def queue_account_mail(self, kind: str, email: str) -> None:
        now = self._now()
        await self.engine.write(lambda c: mail.queue_account_mail(c, kind, email, now))

    async def queue_mail(
        self, kind: str, *, customer_id: str | None = None, conversation_id: str | None = None,
        address: str | None = None, params: dict[str, Any] | None = None,
    ) -> int:
        now = self._now()
        return await self.engine.write(lambda c: mail.insert(
            c, now, kind, customer_id, conversation_id, address, params))

    async def queue_reply_mails(self, *, cutoff: str, horizon: str) -> int:
        # A read first: most rounds find nothing, and a read takes no lock.
        if not await self.engine.read(lambda c: mail.any_unseen_replies(c, cutoff, horizon)):
            return 0
        now = self._now()
        return await self.engine.write(
            lambda c: mail.queue_reply_mails(c, cutoff, horizon, now))

    async def claim_mail(self, lease_until: str) -> OutboxMail | None:
        now = self._now()
        return await self.engine.write(lambda c: mail.claim(c, lease_until, now))

    async def finish_mail(self, mail_id: int, *, status: str, error: str | None = None,
                          retry_at: str | None = None) -> None:
        now = self._now()
        await self.engine.write(
            lambda c: mail.finish(c, mail_id, status, error, retry_at, now))

    async def list_mail(self, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        return await self.engine.read(lambda c: mail.list_mail(c, limit, offset), snapshot=True)

    async def prune_mail(self, before: str) -> int:
        return await self.engine.write(lambda c: mail.prune(c, before))

    async def create_mail_token(
        self, token_hash: str, customer_id: str, purpose: str, expires_at: str,
        conversation_id: str | None = None,
    ) -> None:
        now = self._now()
        day_ago = iso(self.clock() - timedelta(days=1))
        await self.engine.write(lambda c: mail.create_token(
            c, token_hash, customer_id, purpose, expires_at, conversation_id, now, day_ago))

    @nothing_for_nul(_none)
    async def check_mail_token(self, token_hash: str, purpose: str) -> MailToken | None:
        now = self._now()
        return await self.engine.read(lambda c: mail.check_token(c, token_hash, purpose, now))

    @nothing_for_nul(_none)
    async def use_mail_token(self, token_hash: str, purpose: str) -> MailToken | None:
        now = self._now()
        return await self.engine.write(lambda c: mail.use_token(c, token_hash, purpose, now))

    async def create_linked_session(
        self, session_id: str, customer_id: str, *, ip: str | None, user_agent: str | None,
    ) -> VisitorSession:
        now = self._now()
        return await self.engine.write(lambda c: mail.create_linked_session(
            c, session_id, customer_id, ip, user_agent, now))

    async def mark_seen(self, conversation_id: str, seq: int, *, read: bool) -> int:
        if "\x00" in conversation_id:
            raise NotFound("No such conversation.")  # no stored id has a NUL
        return await self.engine.write(
            lambda c: mail.mark_seen(c, conversation_id, seq, read))

    async def read_state(self, conversation_id: str) -> dict[str, int]:
        if "\x00" in conversation_id:
            return dict.fromkeys(READ_MARKS, 0)
        return await self.engine.read(lambda c: mail.read_state(c, conversation_id))

    async def mark_emailed(self, conversation_id: str, seq: int) -> None:
        await self.engine.write(lambda c: mail.mark_emailed(c, conversation_id, seq))


def _log_late_failure(task: asyncio.Task[None]) -> None:
    """A compaction that failed after its caller stopped waiting: logged, not raised."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("VACUUM or REINDEX failed (%s): the deleted rows' versions stay until "
                    "autovacuum removes them", type(exc).__name__)
