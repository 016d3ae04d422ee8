"""The mailer: a durable outbox in the database and the background tasks that empty it.

Requests only queue a row (one short write) and return; a sender task takes due rows one at a
time, renders them from the database as it is then, and hands them to the SMTP server, so no chat
ever waits on mail. A failure the server calls temporary, or no answer at all, is retried with
growing waits; a permanent refusal (5xx) or too many attempts marks the mail failed. A row holds
no address (the customer's on file is read when sending) except a farewell's, which is wiped once
sent. Erasing a customer deletes their unsent rows in the same transaction, so such mail is
dropped unsent. Another task queues the agent replies a customer has not seen in time.

Logs and the admins' list name a mail by id and kind only: never an address or a word of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
from jinja2 import Environment

from .. import jobs
from ..sessions import Signer
from ..storage.base import Message, OutboxMail, Store, iso
from . import links
from .compose import AddressRefused, Outgoing, compose
from .config import MailConfig

log = logging.getLogger("chatserver.mail")
MAX_ATTEMPTS = 8
MAX_RETRY_WAIT = timedelta(hours=6)
SEND_TIMEOUT_SECONDS = 30.0
LEASE = timedelta(minutes=2)  # a sender that died leaves its mail to another after this
POLL_SECONDS = 5.0  # mail queued by another process is found within this
REPLY_HORIZON = timedelta(days=3)  # older unseen replies are not emailed any more
PRUNE_EVERY_SECONDS = 3600.0
TRANSCRIPT_MAX_MESSAGES = 5000
CHAT_SENDERS = {"visitor", "agent", "system"}  # staff notes never go out


class Dropped(Exception):
    """Nothing to send any more: the customer or conversation is gone."""


def _error_code(exc: BaseException) -> tuple[str, bool]:
    """A short description without the server's words (they may quote the address), and
    whether the failure is permanent."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        code = min(codes) if codes else 550
        return f"SMTPRecipientsRefused {code}", code >= 500
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{type(exc).__name__} {exc.code}", exc.code >= 500
    return type(exc).__name__, False


class Mailer:
    def __init__(self, config: MailConfig, store: Store, signer: Signer, env: Environment
                 ) -> None:
        self.config = config
        self.store = store
        self.signer = signer
        self.env = env
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._retry_at: float | None = None  # loop time of the soonest retry this process set
        # Told (conversation id, last seq) once a mail of replies is sent: the hub marks them
        # emailed for the staff (set by the app; the mailer knows nothing of sockets).
        self.on_replies_sent: Callable[[str, int], Awaitable[None]] | None = None

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # -- queueing (called from requests; each is one short write) ------------------------------

    async def queue_account_mail(self, kind: str, email: str) -> None:
        """A sign-in or termination link, for a known address only; the same work either way."""
        await self.store.queue_account_mail(kind, email)
        self._wake.set()

    async def queue(self, kind: str, **fields: Any) -> int:
        mail_id = await self.store.queue_mail(kind, **fields)
        self._wake.set()
        return mail_id

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sender()), loop.create_task(self._replies())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- the sender ---------------------------------------------------------------------------

    async def _sender(self) -> None:
        while True:
            try:
                mail = await self.store.claim_mail(iso(self.store.clock() + LEASE))
            except Exception as exc:
                log.error("mail outbox unreadable (%s); trying again", type(exc).__name__)
                await asyncio.sleep(POLL_SECONDS)
                continue
            if mail is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_wait())
                self._wake.clear()
                continue
            try:
                await self.deliver(mail)
            except Exception as exc:  # the lease runs out and another round tries again
                log.error("mail %s (%s) could not be finished: %s at %s", mail.id, mail.kind,
                          type(exc).__name__, _where(exc))

    def _idle_wait(self) -> float:
        """Until the soonest retry this process set, else the poll interval."""
        if self._retry_at is None:
            return POLL_SECONDS
        left = self._retry_at - asyncio.get_running_loop().time()
        if left <= 0:
            self._retry_at = None  # due now: one more round claims it
            return 0.0
        return min(left, POLL_SECONDS)

    async def deliver(self, mail: OutboxMail) -> str:
        """Render and send one claimed mail, and record the outcome; the status it got."""
        try:
            outgoing = await self.render(mail)
        except Dropped:
            await self.store.finish_mail(mail.id, status="dropped")
            log.info("mail %s (%s) dropped: nothing left to send", mail.id, mail.kind)
            return "dropped"
        except AddressRefused:
            return await self._finish(mail, "failed", "address_refused")
        except Exception as exc:  # a template or header error: the text could quote a value
            log.error("mail %s (%s) could not be rendered: %s at %s", mail.id, mail.kind,
                      type(exc).__name__, _where(exc))
            return await self._finish(mail, "failed", f"render_error {type(exc).__name__}")
        smtp = self.config.smtp
        assert smtp is not None
        try:
            await aiosmtplib.send(
                outgoing.message, sender=outgoing.sender, recipients=[outgoing.recipient],
                hostname=smtp.host, port=smtp.port, username=smtp.username,
                password=smtp.password, use_tls=smtp.tls == "implicit",
                start_tls=smtp.tls == "starttls", timeout=SEND_TIMEOUT_SECONDS,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            code, permanent = _error_code(exc)
            if permanent or mail.attempts >= MAX_ATTEMPTS:
                return await self._finish(mail, "failed", code)
            wait = min(timedelta(seconds=self.config.retry_seconds * 2 ** (mail.attempts - 1)),
                       MAX_RETRY_WAIT)
            await self.store.finish_mail(mail.id, status="pending", error=code,
                                         retry_at=iso(self.store.clock() + wait))
            due = asyncio.get_running_loop().time() + wait.total_seconds() + 0.05
            self._retry_at = due if self._retry_at is None else min(self._retry_at, due)
            log.warning("mail %s (%s) attempt %s failed (%s); retrying in %ss", mail.id,
                        mail.kind, mail.attempts, code, int(wait.total_seconds()))
            return "pending"
        status = await self._finish(mail, "sent", None)
        if mail.kind == "reply" and mail.conversation_id and self.on_replies_sent is not None:
            try:
                await self.on_replies_sent(mail.conversation_id, int(mail.params["to_seq"]))
            except Exception as exc:  # the mail went; only the staff's "Emailed" mark is missing
                log.warning("mail %s (%s) sent, but not marked emailed: %s at %s", mail.id,
                            mail.kind, type(exc).__name__, _where(exc))
        return status

    async def _finish(self, mail: OutboxMail, status: str, error: str | None) -> str:
        await self.store.finish_mail(mail.id, status=status, error=error)
        if mail.address is not None:
            await self.store.compact()  # the farewell's address leaves no copy in the files
        if status == "sent":
            log.info("mail %s (%s) sent", mail.id, mail.kind)
        else:
            log.warning("mail %s (%s) failed for good (%s)", mail.id, mail.kind, error)
        return status

    # -- rendering ----------------------------------------------------------------------------

    async def render(self, mail: OutboxMail) -> Outgoing:
        """The mail as it would go now, read from the database; Dropped when it cannot."""
        now = self.store.clock()
        if mail.kind == "farewell":
            if not mail.address:
                raise Dropped()
            return compose(self.env, self.config, "farewell", mail.address,
                           {"deleted_at": _when(iso(now))}, now)
        customer = (await self.store.get_customer(mail.customer_id)
                    if mail.customer_id else None)
        if customer is None:
            raise Dropped()
        context: dict[str, Any] = {"name": customer.name}
        if mail.kind in {"signin", "terminate"}:
            context["link"] = await links.issue(self.store, self.signer, self.config.public_url,
                                                mail.kind, customer.id)
        elif mail.kind == "reply":
            context.update(await self._reply(mail, customer.id))
        elif mail.kind == "transcript":
            context.update(await self._transcript(mail, customer.id))
        else:
            raise Dropped()
        return compose(self.env, self.config, mail.kind, customer.email, context, now)

    async def _conversation(self, mail: OutboxMail, customer_id: str) -> str:
        conversation = (await self.store.get_conversation(mail.conversation_id)
                        if mail.conversation_id else None)
        if conversation is None or conversation.customer_id != customer_id:
            raise Dropped()
        return conversation.id

    async def _reply(self, mail: OutboxMail, customer_id: str) -> dict[str, Any]:
        conversation_id = await self._conversation(mail, customer_id)
        first = int(mail.params.get("from_seq", 1))
        last = int(mail.params.get("to_seq", first))
        seen = (await self.store.read_state(conversation_id))["seen_seq"]
        found = await self.store.messages_after(conversation_id, max(first - 1, seen),
                                                max(last - first + 1, 0))
        replies = [_shown(m) for m in found if m.sender == "agent" and m.seq <= last]
        if not replies:  # seen since it was queued
            raise Dropped()
        link = await links.issue(self.store, self.signer, self.config.public_url, "reply",
                                 customer_id, conversation_id)
        return {"replies": replies, "link": link}

    async def _transcript(self, mail: OutboxMail, customer_id: str) -> dict[str, Any]:
        conversation_id = await self._conversation(mail, customer_id)
        messages: list[Message] = []
        after = 0
        while len(messages) < TRANSCRIPT_MAX_MESSAGES:
            chunk = await self.store.messages_after(conversation_id, after, 500)
            messages += chunk
            if len(chunk) < 500:
                break
            after = chunk[-1].seq
        shown = [_shown(m) for m in messages if m.sender in CHAT_SENDERS]
        return {"messages": shown, "conversation_id": conversation_id,
                "account_link": self.config.link("/account")}

    # -- replies nobody saw -------------------------------------------------------------------

    async def _replies(self) -> None:
        delay = self.config.reply_delay_seconds
        every = min(max(delay / 4, 0.25), 15.0)
        while True:
            await asyncio.sleep(every)
            # Once per round across all the server's processes (jobs.py), not once per process.
            try:
                now = self.store.clock()
                if await jobs.claim(self.store, "mail.replies", every):
                    queued = await self.store.queue_reply_mails(
                        cutoff=iso(now - timedelta(seconds=delay)),
                        horizon=iso(now - REPLY_HORIZON))
                    if queued:
                        self._wake.set()
                if await jobs.claim(self.store, "mail.prune", PRUNE_EVERY_SECONDS):
                    await self.store.prune_mail(
                        iso(now - timedelta(days=self.config.access_retention_days)))
            except Exception as exc:  # the next round tries again
                log.error("queueing reply mail failed: %s at %s", type(exc).__name__,
                          _where(exc))


def _where(exc: BaseException) -> str:
    """Where an exception happened, not its text: that could quote an address or a message."""
    return "; ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                     for f in traceback.extract_tb(exc.__traceback__)[-3:])


def _when(moment: str) -> str:
    """2026-03-01T10:15:00.000000Z -> 2026-03-01 10:15 UTC"""
    return moment[:16].replace("T", " ") + " UTC"


def _shown(message: Message) -> dict[str, str]:
    author = {"system": "Notice"}.get(message.sender, message.author or message.sender)
    return {"author": author, "body": message.body, "sent_at": _when(message.sent_at),
            "sender": message.sender}
