"""The embedded SQLite store: the `Store` interface as a thin async front over the aggregate
modules.

Writes go as jobs to the engine's group-commit writer, reads to its reader pool (engine.py); the
SQL lives in policies.py, visitors.py, conversations.py, appends.py, search.py, privacy.py,
staff.py, audit.py, mail.py, notes.py, history.py, reports.py, blocks.py and canned.py, as plain
functions of a sqlite3 connection. search_index.py keeps the full-text index up in the
background. upkeep.py scrubs the search index and empties the WAL after deletions;
backup.py copies the database online.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..base import (
    DEFAULT_DISPLAY_NAME,
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
    search_index,
    staff,
    visitors,
)
from . import search as full_text
from .appends import Append
from .engine import Engine


class SQLiteStore:
    def __init__(self, path: Path, clock: Clock = utc_now) -> None:
        self.path = path
        self.clock = clock
        self.engine = Engine(path)
        self.indexer = search_index.Indexer(self.engine.write)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> SQLiteStore:
        await self.engine.open(self._now)
        self.indexer.appended()  # messages a crash left unindexed
        return self

    async def close(self) -> None:
        await self.indexer.close()
        await self.engine.close()

    def _now(self) -> str:
        return stamp(self.clock)

    async def ping(self) -> None:
        await self.engine.read(lambda c: c.execute("SELECT 1").fetchone())

    async def claim_job(self, name: str, next_due: str) -> bool:
        now = self._now()
        return await self.engine.write(lambda c: jobs.claim(c, name, next_due, now))

    # -- policy -----------------------------------------------------------------------------

    async def publish_policy(self, policy: PolicyVersion) -> PolicyVersion:
        now = self._now()
        return await self.engine.write(lambda c: policies.publish(c, policy, now))

    async def current_policy(self) -> PolicyVersion | None:
        return await self.engine.read(policies.current)

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
        await self.engine.write(
            lambda c: visitors.rotate_session(c, session_id, new_session_id))

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
        return await self.engine.write(lambda c: conversations.open_conversation(
            c, customer_id, create=create, now=now))

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
        now = self._now()
        return await self.engine.write(lambda c: conversations.move(
            c, conversation_id, expect_agent_id=expect_agent_id, to_agent_id=to_agent_id,
            now=now))

    async def paused_conversations(self) -> set[str]:
        return await self.engine.read(conversations.paused)

    async def conversation_paused(self, conversation_id: str) -> bool:
        return await self.engine.read(lambda c: conversations.is_paused(c, conversation_id))

    async def append_message(
        self, conversation_id: str, *, sender: str, sender_id: str, author: str, body: str,
        client_msg_id: str | None, unless_paused: bool = False,
    ) -> tuple[Message, bool, str]:
        result: tuple[Message, bool, str] = await self.engine.append(Append(
            conversation_id, sender, sender_id, author, body, client_msg_id, self._now(),
            unless_paused))
        self.indexer.appended()
        return result

    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int = 1000
    ) -> list[Message]:
        return await self.engine.read(
            lambda c: conversations.messages_after(c, conversation_id, after_seq, limit))

    async def open_conversations(self) -> list[ConversationSummary]:
        return await self.engine.read(conversations.open_conversations)

    async def conversation_summary(self, conversation_id: str) -> ConversationSummary | None:
        return await self.engine.read(lambda c: conversations.summary(c, conversation_id))

    async def search_conversations(
        self, search: ConversationSearch, *, limit: int = 50, offset: int = 0,
    ) -> tuple[list[ConversationSummary], int]:
        # The index lags the messages by about a second (search_index.py); a search that
        # matches words catches it up first, so it finds every message already acknowledged.
        if search.query:
            lagging: bool = await self.engine.read(search_index.behind)
            if lagging:
                await self.flush_search_index()
        return await self.engine.read(
            lambda c: full_text.search_conversations(c, search, limit=limit, offset=offset))

    async def flush_search_index(self) -> None:
        await self.indexer.flush()

    async def messages_between(
        self, created_from: str | None, created_before: str | None, after_id: int, limit: int
    ) -> tuple[list[Message], int]:
        return await self.engine.read(lambda c: conversations.messages_between(
            c, created_from, created_before, after_id, limit))

    # -- privacy rights ---------------------------------------------------------------------

    async def update_customer(self, customer_id: str, fields: dict[str, str]) -> Customer:
        now = self._now()
        return await self.engine.write(
            lambda c: visitors.update_customer(c, customer_id, fields, now))

    async def customers_by_email(self, email: str) -> list[Customer]:
        return await self.engine.read(lambda c: visitors.customers_by_email(c, email))

    async def list_consents(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.list_consents(c, customer_id))

    async def session_consents(self, session_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.session_consents(c, session_id))

    async def withdraw_consents(self, session_id: str) -> int:
        now = self._now()
        return await self.engine.write(lambda c: visitors.withdraw_consents(c, session_id, now))

    async def customer_sessions(self, customer_id: str) -> list[str]:
        return await self.engine.read(lambda c: visitors.customer_sessions(c, customer_id))

    async def export_customer(self, customer_id: str) -> dict[str, Any]:
        return await self.engine.read(lambda c: privacy.export_customer(c, customer_id))

    async def export_session(self, session_id: str) -> dict[str, Any]:
        return await self.engine.read(lambda c: privacy.export_session(c, session_id))

    async def erase_customer(self, customer_id: str, *, reason: str) -> dict[str, Any]:
        now = self._now()
        result = await self.engine.write(lambda c: privacy.erase(c, customer_id, reason, now))
        await self.compact()
        return result

    async def erase_session(self, session_id: str, *, reason: str) -> dict[str, Any]:
        now = self._now()
        result = await self.engine.write(
            lambda c: privacy.erase_session(c, session_id, reason, now))
        await self.compact()
        return result

    async def purge(
        self, *, account_cutoff: str, access_cutoff: str, conversation_cutoff: str,
        session_cutoff: str, dry_run: bool,
    ) -> dict[str, Any]:
        """Apply the retention rules in batches of PURGE_BATCH, each its own short transaction,
        so a large purge never holds chat writes up; a crash midway leaves a partial purge that
        the next run completes. A dry run only counts, on a reader."""
        if dry_run:
            counts = await self.engine.read(lambda c: privacy.purge_counts(
                c, account_cutoff=account_cutoff, access_cutoff=access_cutoff,
                conversation_cutoff=conversation_cutoff, session_cutoff=session_cutoff))
            return {"counts": counts, "session_ids": [], "conversation_ids": [], "dry_run": True}
        now = self._now()
        steps: tuple[Callable[[sqlite3.Connection], privacy.Step], ...] = (
            lambda c: privacy.purge_access(c, access_cutoff),
            lambda c: privacy.purge_conversations(c, conversation_cutoff, now),
            lambda c: privacy.purge_accounts(c, account_cutoff, now),
            lambda c: privacy.purge_unfinished(c, session_cutoff),
            lambda c: privacy.purge_logins(c, access_cutoff),
        )
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
        await self.compact()
        return {"counts": counts, "session_ids": session_ids,
                "conversation_ids": conversation_ids, "dry_run": False}

    async def compact(self) -> None:
        """Make deleted content unrecoverable from the files: scrub the search index, then empty
        the WAL, without stalling writes (see upkeep.py)."""
        await self.engine.upkeep.scrub_if_needed()
        await self.engine.upkeep.truncate_wal()

    async def set_legal_hold(self, customer_id: str, hold: bool) -> Customer:
        return await self.engine.write(lambda c: visitors.set_legal_hold(c, customer_id, hold))

    async def list_customers(
        self, *, query: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        return await self.engine.read(
            lambda c: visitors.list_customers(c, query=query, limit=limit, offset=offset))

    # -- staff ------------------------------------------------------------------------------

    async def add_staff(self, name: str, role: str, password_hash: str,
                        display_name: str = DEFAULT_DISPLAY_NAME) -> Staff:
        now = self._now()
        return await self.engine.write(
            lambda c: staff.add(c, name, role, password_hash, now, display_name))

    async def get_staff(self, staff_id: int) -> Staff | None:
        return await self.engine.read(lambda c: staff.get(c, staff_id))

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

    async def customer_access(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: visitors.customer_access(c, customer_id))

    async def create_staff_session(self, session_id: str, staff_id: int, expires_at: str) -> None:
        now = self._now()
        await self.engine.write(
            lambda c: staff.create_session(c, session_id, staff_id, expires_at, now))

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
        # A read first: most rounds find nothing, and a read does not queue behind writes.
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
        return await self.engine.read(lambda c: mail.list_mail(c, limit, offset))

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

    async def check_mail_token(self, token_hash: str, purpose: str) -> MailToken | None:
        now = self._now()
        return await self.engine.read(lambda c: mail.check_token(c, token_hash, purpose, now))

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
        return await self.engine.write(
            lambda c: mail.mark_seen(c, conversation_id, seq, read))

    async def read_state(self, conversation_id: str) -> dict[str, int]:
        return await self.engine.read(lambda c: mail.read_state(c, conversation_id))

    async def mark_emailed(self, conversation_id: str, seq: int) -> None:
        await self.engine.write(lambda c: mail.mark_emailed(c, conversation_id, seq))

    # -- notes and ratings ------------------------------------------------------------------

    async def add_note(self, conversation_id: str, *, staff_id: int, body: str,
                       client_msg_id: str) -> tuple[Note, bool]:
        now = self._now()
        return await self.engine.write(lambda c: notes.add(
            c, conversation_id, staff_id, body, client_msg_id, now))

    async def notes_after(self, conversation_id: str, after_seq: int) -> list[Note]:
        return await self.engine.read(lambda c: notes.after(c, conversation_id, after_seq))

    async def rate_conversation(self, conversation_id: str, *, score: int,
                                comment: str) -> Rating:
        now = self._now()
        return await self.engine.write(
            lambda c: notes.rate(c, conversation_id, score, comment, now))

    async def get_rating(self, conversation_id: str) -> Rating | None:
        return await self.engine.read(lambda c: notes.get_rating(c, conversation_id))

    # -- customer history and reports -------------------------------------------------------

    async def customer_history(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: history.of_customer(c, customer_id))

    async def report_rows(self, created_from: str, created_before: str
                          ) -> list[dict[str, Any]]:
        return await self.engine.read(
            lambda c: reports.rows(c, created_from, created_before))

    # -- blocks -----------------------------------------------------------------------------

    async def add_block(self, customer_id: str, *, conversation_id: str | None, ip: str | None,
                        reason: str, staff_id: int, expires_at: str) -> dict[str, Any]:
        now = self._now()
        return await self.engine.write(lambda c: blocks.add(
            c, customer_id, conversation_id, ip, reason, staff_id, now, expires_at))

    async def active_block(self, customer_id: str | None, ip: str | None
                           ) -> dict[str, Any] | None:
        now = self._now()
        return await self.engine.read(lambda c: blocks.active(c, customer_id, ip, now))

    async def customer_blocks(self, customer_id: str) -> list[dict[str, Any]]:
        return await self.engine.read(lambda c: privacy.customer_blocks(c, customer_id))

    async def customer_last_ip(self, customer_id: str) -> str | None:
        return await self.engine.read(lambda c: blocks.last_ip(c, customer_id))

    async def purge_blocks(self, *, dry_run: bool) -> int:
        now = self._now()
        if dry_run:
            return await self.engine.read(lambda c: privacy.purge_blocks(c, now, True))
        return await self.engine.write(lambda c: privacy.purge_blocks(c, now, False))

    # -- canned responses -------------------------------------------------------------------

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
