"""The Store interface: every read and write of durable state goes through it.

Implementations: `sqlite/` (embedded default) and `postgres/`, each one module per aggregate
behind the protocols below. Callers never see SQL.
Times are ISO 8601 UTC strings produced by the store's injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def iso_now() -> str:
    """iso(utc_now()), formatting the date and time of day once a second: every message is
    stamped, and datetime's way cost 5% of the event loop's time flat out."""
    global _second
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second  # read once: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{micros:06d}Z"


def stamp(clock: Clock) -> str:
    """Now by `clock`, as stored; the real clock's by the cheap way."""
    return iso_now() if clock is utc_now else iso(clock())


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    version: str
    effective_date: str
    summary: str
    text: str
    sha256: str
    published_at: str = ""


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    email: str
    company: str
    created_at: str
    updated_at: str
    last_active_at: str
    legal_hold: bool = False

    def public(self) -> dict[str, str]:
        return {"name": self.name, "email": self.email, "company": self.company}


@dataclass(frozen=True, slots=True)
class VisitorSession:
    id: str
    customer_id: str | None
    consent_version: str | None  # the newest consent not withdrawn, if any


# What customers see of a staff member until an admin names them otherwise.
DEFAULT_DISPLAY_NAME = "Support agent"


@dataclass(frozen=True, slots=True)
class Staff:
    id: int
    name: str  # the sign-in name: shown to staff only, never to customers
    role: str
    state: str
    created_at: str
    password_hash: str = ""
    failed_logins: int = 0
    last_failed_at: str | None = None
    display_name: str = DEFAULT_DISPLAY_NAME  # what customers see

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "display_name": self.display_name,
                "role": self.role, "state": self.state}


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    customer_id: str
    status: str
    agent_id: int | None
    agent_name: str | None
    created_at: str
    claimed_at: str | None
    closed_at: str | None
    last_seq: int
    last_message_at: str | None
    agent_display_name: str | None = None  # what the customer sees of the agent


@dataclass(frozen=True, slots=True)
class Message:
    conversation_id: str
    seq: int
    sender: str
    sender_id: str
    author: str
    body: str
    client_msg_id: str | None
    sent_at: str

    def frame(self) -> dict[str, Any]:
        return {
            "type": "message",
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sender": self.sender,
            "author": self.author,
            "body": self.body,
            "sent_at": self.sent_at,
            "client_msg_id": self.client_msg_id,
        }


@dataclass(frozen=True, slots=True)
class Note:
    """A staff-only note inside a conversation. It takes no seq (the customer's seqs stay
    gapless): `after_seq` is the conversation's last seq when it was written, which places it
    in the staff's timeline."""

    id: int
    conversation_id: str
    after_seq: int
    staff_id: int
    author: str  # the writer's display name, read at display time
    body: str
    client_msg_id: str
    created_at: str

    def public(self) -> dict[str, Any]:
        return {"note_id": self.id, "after_seq": self.after_seq, "author": self.author,
                "body": self.body, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Rating:
    """The customer's satisfaction rating of a closed conversation: one per conversation."""

    conversation_id: str
    score: int
    comment: str
    rated_at: str

    def public(self) -> dict[str, Any]:
        return {"score": self.score, "comment": self.comment, "rated_at": self.rated_at}


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """A conversation with what lists and queues show of it."""

    conversation: Conversation
    customer: dict[str, str]
    policy_version: str | None
    message_count: int
    last_message: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self.conversation)
        data["customer"] = self.customer
        data["policy_version"] = self.policy_version
        data["message_count"] = self.message_count
        data["last_message"] = self.last_message
        return data


AuditHasher = Callable[[str, dict[str, Any]], str]


@dataclass(frozen=True, slots=True)
class ConversationSearch:
    """Filters for the admin's conversation list; every one is optional and they combine."""

    status: str | None = None
    query: str | None = None  # customer name, email, company or id, or words in messages
    email: str | None = None  # the customer's exact email
    agent_id: int | None = None
    created_from: str | None = None  # ISO times, inclusive
    created_before: str | None = None  # exclusive


# What a customer's export shows of the mail part (never an address or a word of a mail).
READ_MARKS = ("read_seq", "seen_seq", "mailed_seq", "emailed_seq")
EXPORTED_MAIL = ("kind", "status", "conversation_id", "attempts", "created_at",
                 "next_attempt_at", "sent_at")
EXPORTED_LINKS = ("purpose", "created_at", "expires_at", "used_at")


@dataclass(frozen=True, slots=True)
class OutboxMail:
    """One mail taken from the outbox for sending. `address` is set for a farewell only: every
    other mail goes to the customer's address on file when it is sent."""

    id: int
    kind: str
    customer_id: str | None
    conversation_id: str | None
    address: str | None
    params: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class MailToken:
    """What a one-time link, once checked or spent, signs in to."""

    customer_id: str
    conversation_id: str | None


class MailStore(Protocol):
    """The outbox, one-time links and what each customer has seen. Rows that name a customer or
    conversation are deleted with it, in the erasure's (or purge's) own transaction."""

    clock: Clock

    async def queue_account_mail(self, kind: str, email: str) -> None:
        """Queue a `signin` or `terminate` mail for the most recently active customer with this
        address (compared case-insensitively); queue nothing when no customer has it. The same
        work either way: one write transaction with one look-up, so the caller's answer and
        timing say nothing about whether the address is known."""

    async def queue_mail(
        self, kind: str, *, customer_id: str | None = None, conversation_id: str | None = None,
        address: str | None = None, params: dict[str, Any] | None = None,
    ) -> int:
        """Queue one mail; its id. `address` only for a farewell (the customer is gone)."""

    async def queue_reply_mails(self, *, cutoff: str, horizon: str) -> int:
        """For each conversation whose oldest agent reply not yet seen nor mailed was sent after
        `horizon` and at or before `cutoff`: queue one `reply` mail covering every such reply
        (params from_seq, to_seq) and mark them mailed, in one transaction. How many queued."""

    async def claim_mail(self, lease_until: str) -> OutboxMail | None:
        """Take the oldest due mail (pending and due, or sending with its lease run out), mark
        it sending until `lease_until` and count the attempt; None when nothing is due."""

    async def finish_mail(self, mail_id: int, *, status: str, error: str | None = None,
                          retry_at: str | None = None) -> None:
        """Record the outcome: sent, failed or dropped (address and params are cleared), or
        pending again with `retry_at`. `error` is a short code, never an address or text."""

    async def list_mail(self, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Outbox rows newest first, without address or params, and the total."""

    async def prune_mail(self, before: str) -> int:
        """Delete finished mail rows created before `before`; how many."""

    async def create_mail_token(
        self, token_hash: str, customer_id: str, purpose: str, expires_at: str,
        conversation_id: str | None = None,
    ) -> None:
        """Store a new link; older unused links of the customer for the same purpose die."""

    async def check_mail_token(self, token_hash: str, purpose: str) -> MailToken | None:
        """The link's target when it is unused and unexpired, without spending it."""

    async def use_mail_token(self, token_hash: str, purpose: str) -> MailToken | None:
        """Spend the link: its target, or None when unknown, used, voided or expired."""

    async def create_linked_session(
        self, session_id: str, customer_id: str, *, ip: str | None, user_agent: str | None,
    ) -> VisitorSession:
        """A new visitor session bound to the customer (a sign-in by link). The customer's
        newest standing consent is carried into it as a receipt of method `email_link` (this
        browser's time, IP and user agent); an access record `email_link` is kept."""

    async def mark_seen(self, conversation_id: str, seq: int, *, read: bool) -> int:
        """The customer saw (or, with `read`, read) everything up to `seq`, clamped to the
        conversation's last seq, which is returned. NotFound for an unknown conversation."""

    async def read_state(self, conversation_id: str) -> dict[str, int]:
        """READ_MARKS of the conversation (0 when never set)."""

    async def mark_emailed(self, conversation_id: str, seq: int) -> None:
        """Agent replies up to `seq` went to the customer by email (the mail server took the
        mail); nothing when the conversation is gone."""


@dataclass(frozen=True, slots=True)
class CannedResponse:
    """A reply admins prepare; agents insert it by its shortcut."""

    id: int
    shortcut: str
    body: str
    created_at: str
    updated_at: str

    def public(self) -> dict[str, Any]:
        return asdict(self)


class NoteStore(Protocol):
    """What the support team adds to a conversation: staff-only notes and the customer's
    rating. Both go with the conversation: an erasure or purge deletes them in its own
    transaction."""

    async def add_note(self, conversation_id: str, *, staff_id: int, body: str,
                       client_msg_id: str) -> tuple[Note, bool]:
        """Store a note after the conversation's last seq; True when new. A repeated
        client_msg_id (same conversation and staff member) returns the first copy and False.
        NotFound for an unknown conversation."""

    async def notes_after(self, conversation_id: str, after_seq: int) -> list[Note]:
        """The conversation's notes written at or after `after_seq`, oldest first."""

    async def rate_conversation(self, conversation_id: str, *, score: int,
                                comment: str) -> Rating:
        """Store the customer's rating. Conflict `not_closed` while the conversation is open,
        `already_rated` for a second rating; NotFound when unknown."""

    async def get_rating(self, conversation_id: str) -> Rating | None: ...


class HistoryStore(Protocol):
    """A customer's conversations as the agent handling one of them sees them."""

    async def customer_history(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's conversations, newest first: id, status, created_at, closed_at, agent
        (display name), message_count and rating (score or None). No message text."""


class ReportStore(Protocol):
    """The rows the admin reports are computed from."""

    async def report_rows(self, created_from: str, created_before: str
                          ) -> list[dict[str, Any]]:
        """One row per conversation created in [created_from, created_before): id, created_at,
        claimed_at, closed_at, status, agent_id, agent (sign-in name), messages (not counting
        system ones), first_reply_at (the first agent message) and rating. No text."""


class BlockStore(Protocol):
    """Time-limited blocks of abusive visitors (data about the customer: exported, erased,
    purged once expired)."""

    async def add_block(self, customer_id: str, *, conversation_id: str | None, ip: str | None,
                        reason: str, staff_id: int, expires_at: str) -> dict[str, Any]:
        """Block the customer (and `ip`, when given) until `expires_at`: id, conversation_id,
        ip, reason, created_at, expires_at."""

    async def active_block(self, customer_id: str | None, ip: str | None
                           ) -> dict[str, Any] | None:
        """An unexpired block of this customer or of this IP address, if any."""

    async def customer_blocks(self, customer_id: str) -> list[dict[str, Any]]:
        """Every block of the customer, for their export."""

    async def customer_last_ip(self, customer_id: str) -> str | None:
        """The IP address of the customer's latest access record, if any."""

    async def purge_blocks(self, *, dry_run: bool) -> int:
        """Delete (or count) the blocks that have expired."""


class CannedStore(Protocol):
    """Canned responses: no customer data."""

    async def list_canned(self) -> list[CannedResponse]:
        """Every canned response, by shortcut."""

    async def add_canned(self, shortcut: str, body: str) -> CannedResponse:
        """Conflict `shortcut_taken` when another response has the shortcut."""

    async def update_canned(self, canned_id: int, *, shortcut: str | None = None,
                            body: str | None = None) -> CannedResponse:
        """NotFound when unknown, Conflict `shortcut_taken` as for add_canned."""

    async def delete_canned(self, canned_id: int) -> None:
        """NotFound when unknown."""


class UpkeepStore(Protocol):
    """The connection's life and the files' upkeep."""

    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise when the database does not answer."""

    async def claim_job(self, name: str, next_due: str) -> bool:
        """True when the periodic job `name` is due now (or never ran) and this call moved its
        due time to `next_due`; of several processes asking at once, exactly one gets True."""

    async def compact(self) -> None:
        """Make deleted content unrecoverable from the files (SQLite: scrub the search index,
        truncate the WAL). Must not stall other writes: while a reader holds an old snapshot it
        may return before the work is done, which then finishes as soon as readers let go."""


class PolicyStore(Protocol):
    """Privacy-policy versions: published once, never changed; the newest is current."""

    async def publish_policy(self, policy: PolicyVersion) -> PolicyVersion:
        """Add a version; it becomes current. Raises Conflict when the version exists."""

    async def current_policy(self) -> PolicyVersion | None: ...
    async def get_policy(self, version: str) -> PolicyVersion | None: ...
    async def list_policies(self) -> list[PolicyVersion]: ...


class VisitorStore(Protocol):
    """Visitor sessions, their consents and access records, and the customers they become."""

    async def create_visitor_session(self, session_id: str) -> None: ...
    async def get_visitor_session(self, session_id: str) -> VisitorSession | None:
        """The session unless unknown or revoked."""

    async def add_consent(
        self,
        session_id: str,
        *,
        policy_version: str,
        policy_sha256: str,
        ip: str | None,
        user_agent: str | None,
        method: str,
        on_behalf: bool,
    ) -> dict[str, Any]: ...

    async def start_visitor_session(
        self, session_id: str, *, policy_version: str, policy_sha256: str, ip: str | None,
        user_agent: str | None, method: str, on_behalf: bool,
    ) -> bool:
        """Create the session with its `session_start` access record and its consent, in one
        transaction; False, writing nothing, when a session with this id exists already. Of
        several requests (in several processes) recording the same consent, exactly one does."""

    async def save_customer(
        self, session_id: str, *, name: str, email: str, company: str
    ) -> Customer:
        """Create the session's customer, or correct it when the session has one."""

    async def rotate_visitor_session(self, session_id: str, new_session_id: str) -> None:
        """Give the session a new id, keeping its customer, times, consents and access records;
        the old id stops working. NotFound when the session is unknown or revoked."""

    async def get_customer(self, customer_id: str) -> Customer | None: ...
    async def record_access(
        self, session_id: str, kind: str, ip: str | None, user_agent: str | None
    ) -> None: ...

    async def update_customer(self, customer_id: str, fields: dict[str, str]) -> Customer: ...
    async def customers_by_email(self, email: str) -> list[Customer]:
        """Every customer with this email, compared case-insensitively."""

    async def list_consents(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's consent receipts, newest first."""

    async def session_consents(self, session_id: str) -> list[dict[str, Any]]: ...
    async def withdraw_consents(self, session_id: str) -> int:
        """Withdraw every standing consent given in this session (and by its customer)."""

    async def customer_sessions(self, customer_id: str) -> list[str]: ...
    async def set_legal_hold(self, customer_id: str, hold: bool) -> Customer: ...
    async def list_customers(
        self, *, query: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]: ...

    async def customer_access(self, customer_id: str) -> list[dict[str, Any]]: ...


class ConversationStore(Protocol):
    """Conversations and their messages."""

    async def open_conversation(
        self, customer_id: str, *, create: bool = True
    ) -> tuple[Conversation, bool]:
        """The customer's open conversation, or a new queued one; True when it was made now.

        With create=False, NotFound instead of making one."""

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...
    async def customer_conversations(self, customer_id: str) -> list[Conversation]:
        """The customer's conversations, newest first (the account page lists them)."""
    async def claim_conversation(
        self, conversation_id: str, staff_id: int
    ) -> tuple[Conversation, bool]:
        """Make it active for this agent; True when this call claimed it.

        Raises AlreadyClaimed, ConversationClosed or NotFound.
        """

    async def close_conversation(self, conversation_id: str) -> Conversation | None:
        """Close it; None when it was closed already. NotFound when missing."""

    async def append_message(
        self,
        conversation_id: str,
        *,
        sender: str,
        sender_id: str,
        author: str,
        body: str,
        client_msg_id: str | None,
        unless_paused: bool = False,
    ) -> tuple[Message, bool, str]:
        """Store with the next seq; returns the message, whether it is new, and the
        conversation's status. A repeated client_msg_id returns the first copy and False.
        Raises ConversationClosed for a closed conversation (system messages excepted), and
        with `unless_paused` ConsentWithdrawn, before all else, when the customer withdrew
        consent (checked in the same transaction as the write: an agent's message never
        reaches a customer who withdrew a moment before)."""

    async def messages_after(
        self, conversation_id: str, after_seq: int, limit: int = 1000
    ) -> list[Message]: ...

    async def open_conversations(self) -> list[ConversationSummary]:
        """Queued and active conversations, oldest first, for the agents' queue."""

    async def messages_between(
        self, created_from: str | None, created_before: str | None, after_id: int, limit: int
    ) -> tuple[list[Message], int]:
        """Messages sent in the range, in storage order after `after_id` (keyset paging for
        streamed exports), and the id to continue after."""

    async def conversation_summary(self, conversation_id: str) -> ConversationSummary | None: ...

    async def move_conversation(self, conversation_id: str, *, expect_agent_id: int | None,
                                to_agent_id: int | None) -> tuple[Conversation, bool]:
        """Hand an open conversation held by `expect_agent_id` (None: queued) to `to_agent_id`
        (None: back to the queue) in one conditional UPDATE, so of two moves from the same
        state exactly one wins. Returns the conversation as it now is and whether this call
        moved it. NotFound when missing."""

    async def paused_conversations(self) -> set[str]:
        """Open conversations whose customer has withdrawn every consent."""

    async def conversation_paused(self, conversation_id: str) -> bool: ...


class SearchStore(Protocol):
    """The admin's conversation search."""

    async def search_conversations(
        self, search: ConversationSearch, *, limit: int = 50, offset: int = 0,
    ) -> tuple[list[ConversationSummary], int]:
        """A page of conversations, newest first, and the total that match. Finds every
        message stored before the call, even where the index is kept up in the background."""

    async def flush_search_index(self) -> None:
        """Bring the full-text index up to every stored message now (SQLite indexes in the
        background, about a second behind; PostgreSQL indexes in the append: nothing to do)."""


class PrivacyStore(Protocol):
    """The customer's rights: export and erasure, and the retention purge."""

    async def export_customer(self, customer_id: str) -> dict[str, Any]:
        """Everything held about the customer, as plain JSON-ready data."""

    async def export_session(self, session_id: str) -> dict[str, Any]:
        """What is held for a session that never gave its details: consents and access."""

    async def erase_customer(self, customer_id: str, *, reason: str) -> dict[str, Any]:
        """Delete the customer and all their data in one transaction; keep a PII-free tombstone.

        Returns the tombstone with the ids of the sessions and conversations that were removed.
        Raises LegalHold when the customer is on hold, NotFound when unknown.
        """

    async def erase_session(self, session_id: str, *, reason: str) -> dict[str, Any]:
        """Erase the session's customer, or, without one, the session and its consents."""

    async def purge(
        self, *, account_cutoff: str, access_cutoff: str, conversation_cutoff: str,
        session_cutoff: str, dry_run: bool,
    ) -> dict[str, Any]:
        """Apply the retention rules: access records at `access_cutoff`, closed conversations at
        `conversation_cutoff`, idle accounts at `account_cutoff` (erased), sessions that never
        gave details created at or before `session_cutoff`, staff sign-in records at
        `access_cutoff`. In short transactions (a large purge must not hold chat writes up);
        idempotent, so a run cut short is completed by the next. A dry run only counts.
        Returns {"counts", "session_ids", "conversation_ids", "dry_run"}."""


class StaffStore(Protocol):
    """Staff accounts, their sign-ins, and the one-time token that creates the first admin."""

    async def add_staff(self, name: str, role: str, password_hash: str,
                        display_name: str = DEFAULT_DISPLAY_NAME) -> Staff: ...
    async def get_staff(self, staff_id: int) -> Staff | None: ...
    async def get_staff_by_name(self, name: str) -> Staff | None: ...
    async def list_staff(self) -> list[Staff]: ...
    async def count_admins(self) -> int: ...
    async def set_password(self, staff_id: int, password_hash: str) -> None: ...
    async def update_staff(
        self, staff_id: int, *, role: str | None = None, state: str | None = None,
        display_name: str | None = None,
    ) -> Staff:
        """Change role, state or display name; Conflict `last_admin` when the change would take
        away the last active admin. Where there is none already (agents added before any admin),
        the change is not refused: an agent must still be able to set their own name."""

    async def revoke_staff_sessions(self, staff_id: int) -> list[str]:
        """End every session of this staff member; the ids of those that were open."""

    async def note_login(self, staff_id: int, ok: bool) -> None:
        """Count a failed sign-in (for the growing delay), or reset the count on success."""

    async def last_logins(self) -> dict[int, str]:
        """Each staff member's last successful sign-in time."""

    async def create_staff_session(
        self, session_id: str, staff_id: int, expires_at: str
    ) -> None: ...

    async def get_staff_session(self, session_id: str, idle_cutoff: str | None = None
                                ) -> Staff | None:
        """The signed-in staff member unless the session is unknown, revoked, expired or unused
        since `idle_cutoff`; a use refreshes the session's idle clock."""

    async def revoke_staff_session(self, session_id: str) -> None: ...
    async def record_login(
        self, staff_id: int | None, ip: str | None, user_agent: str | None, outcome: str
    ) -> None: ...

    async def login_events(self, staff_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]: ...
    async def create_setup_token(self, token_hash: str, expires_at: str) -> None: ...
    async def create_first_admin(
        self, token_hash: str, name: str, password_hash: str
    ) -> Staff | None:
        """Spend the setup token and create the admin, together or not at all.

        None when the token is unknown, used or expired, or an admin exists; Conflict when the
        name is taken (the token stays usable).
        """

    async def setup_token_valid(self, token_hash: str) -> bool: ...

    async def set_staff_away(self, staff_id: int, away: bool) -> None:
        """Mark an agent away (no transfers to them, not online for customers) or back;
        NotFound for an unknown id."""

    async def away_staff(self) -> set[int]:
        """The ids of the staff members who are away."""


class AuditStore(Protocol):
    """The audit log: append-only and hash-chained."""

    async def append_audit(
        self, entry: dict[str, Any], hasher: AuditHasher
    ) -> dict[str, Any]:
        """Append after the last entry; hasher(prev_hash, entry) gives the new entry's hash."""

    async def list_audit(
        self, limit: int = 100, offset: int = 0, *, actor: str | None = None,
        action: str | None = None, target: str | None = None, since: str | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """Entries newest first, filtered by any of actor, action (or its prefix), target and
        a time range."""

    async def all_audit(self) -> list[dict[str, Any]]:
        """Every entry, oldest first, for verification."""

    async def cut_audit(self, before: str, entry: dict[str, Any], hasher: AuditHasher, *,
                        dry_run: bool = False) -> dict[str, Any] | None:
        """Audit retention, in one transaction: delete the oldest entries, up to the newest one
        whose time is before `before` (always a prefix of the chain), and append `entry` after
        the newest entry, its detail extended with `cut` (how many went), `first_kept` (the id
        of the oldest entry left; the new entry's own id when none is) and
        `first_kept_prev_hash` (that entry's prev_hash), so the chain's new start is vouched
        for by an entry inside it. Returns the appended entry, or None when nothing was old
        enough. A dry run changes nothing and returns {"cut": n}."""


class Store(UpkeepStore, PolicyStore, VisitorStore, ConversationStore, SearchStore,
            PrivacyStore, StaffStore, AuditStore, MailStore, NoteStore, HistoryStore,
            ReportStore, BlockStore, CannedStore, Protocol):
    """Durable state: the union of the aggregates' protocols (code that needs one aggregate can
    be typed with its small protocol). Each method is one transaction; writes are durable when
    they return."""

    clock: Clock


def chain_entry(prev: tuple[int, str], entry: dict[str, Any], hasher: AuditHasher,
                now: str) -> dict[str, Any]:
    """The audit entry that follows `prev` (id, hash), with its link and hash: both stores
    append exactly this row, so the chain's format has one definition."""
    prev_id, prev_hash = prev
    full = {
        "id": prev_id + 1,
        "at": now,
        "actor": entry["actor"],
        "action": entry["action"],
        "ip": entry.get("ip"),
        "target": entry.get("target"),
        "detail": entry.get("detail") or {},
    }
    return {**full, "prev_hash": prev_hash, "hash": hasher(prev_hash, full)}

