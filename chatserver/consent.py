"""Policy versions, consent and what a visitor may do.

The current policy is cached in memory (it changes only by publishing) so the chat hot path reads
it at most once a second; a publish through this process refreshes the cache at once, a publish
announced on the broadcast (another server, `chatserver policy publish`) empties it at once
(`forget`), and one nobody announced is seen within a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from typing import Any

from . import markup
from .errors import Conflict, ConsentRequired, NotFound, ValidationFailed
from .storage.base import PolicyVersion, Store, VisitorSession

BUNDLED_VERSION = "1.01"
BUNDLED_DATE = "2018-02-27"
BUNDLED_SUMMARY = "First published version."
CACHE_SECONDS = 1.0


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bundled_policy() -> PolicyVersion:
    text = (resources.files("chatserver") / "bundled" / "privacy-policy-1.01.md").read_text(
        encoding="utf-8"
    )
    return PolicyVersion(BUNDLED_VERSION, BUNDLED_DATE, BUNDLED_SUMMARY, text, sha256_text(text))


def render(text: str) -> str:
    """Markdown to HTML: a policy file can inject neither markup nor a script link."""
    return markup.render(text)


def public(policy: PolicyVersion) -> dict[str, Any]:
    return {
        "version": policy.version,
        "effective_date": policy.effective_date,
        "summary": policy.summary,
        "sha256": policy.sha256,
        "html": render(policy.text),
    }


# The bounds of a policy's effective date (see Policies._check_effective_date).
EARLIEST_EFFECTIVE_DATE = date(2000, 1, 1)
MAX_DAYS_AHEAD = 366
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,31}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Policies:
    store: Store
    _current: PolicyVersion | None = None
    _loaded_at: float = 0.0
    # One read of the current version at a time: when the cache runs out, every socket's next
    # message asks at once (a hundred reads where one answers them all).
    _loading: asyncio.Task[PolicyVersion] | None = None
    # Bumped by every change of what is known (forget, a publish): a read begun before it may
    # answer its own waiters but must not overwrite the newer state.
    _generation: int = 0

    async def ensure_default(self) -> PolicyVersion:
        """Publish the bundled policy as 1.01 when none is published yet."""
        current = await self.store.current_policy()
        if current is None:
            try:
                current = await self.store.publish_policy(bundled_policy())
            except Conflict:  # another process, starting at the same moment, published it
                current = await self.store.current_policy()
                assert current is not None
        self._set(current)
        return current

    def _set(self, policy: PolicyVersion) -> None:
        self._generation += 1
        self._loading = None
        self._current = policy
        self._loaded_at = time.monotonic()

    def forget(self) -> None:
        """Read the current version afresh next time (another process published one)."""
        self._generation += 1
        self._loading = None  # a read already under way may have been answered before it
        self._loaded_at = 0.0

    async def current(self) -> PolicyVersion:
        if self._current is not None and time.monotonic() - self._loaded_at <= CACHE_SECONDS:
            return self._current
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self._load(self._generation))
        # Shielded: one waiter cancelled (its socket closed) does not cancel the others' read.
        return await asyncio.shield(self._loading)

    async def _load(self, generation: int) -> PolicyVersion:
        found = await self.store.current_policy()
        if found is None:
            return await self.ensure_default()
        if generation == self._generation:
            self._set(found)
        return found

    async def publish(
        self, text: str, *, version: str, summary: str, effective_date: str
    ) -> PolicyVersion:
        if not VERSION_RE.match(version):
            raise ValidationFailed("A version is 1-32 letters, digits, dots or dashes.",
                                   field="version")
        if not DATE_RE.match(effective_date):
            raise ValidationFailed("The effective date must look like 2026-12-31.",
                                   field="effective_date")
        self._check_effective_date(effective_date)
        if not summary.strip() or len(summary) > 2000:
            raise ValidationFailed("A summary of changes (1-2000 characters) is required.",
                                   field="summary")
        if not text.strip():
            raise ValidationFailed("The policy text is empty.", field="text")
        published = await self.store.publish_policy(
            PolicyVersion(version, effective_date, summary.strip(), text, sha256_text(text))
        )
        self._set(published)
        return published

    def _check_effective_date(self, effective_date: str) -> None:
        """A real day, from EARLIEST_EFFECTIVE_DATE to a year from today: a policy that takes
        effect centuries from now (or never existed) is a typing slip, and customers would be
        shown it as the one in force."""
        try:
            day = date.fromisoformat(effective_date)
        except ValueError:
            raise ValidationFailed("The effective date is not a day of the calendar.",
                                   field="effective_date") from None
        latest = self.store.clock().date() + timedelta(days=MAX_DAYS_AHEAD)
        if not EARLIEST_EFFECTIVE_DATE <= day <= latest:
            raise ValidationFailed(
                f"The effective date must be between {EARLIEST_EFFECTIVE_DATE.isoformat()} and "
                f"{latest.isoformat()} (a year from today).", field="effective_date")

    async def get(self, version: str) -> PolicyVersion:
        found = await self.store.get_policy(version)
        if found is None:
            raise NotFound("No policy has that version.")
        return found


def require_chat_consent(session: VisitorSession, current: PolicyVersion) -> str:
    """The session's customer id, when it may chat; ConsentRequired otherwise."""
    if session.consent_version != current.version:
        raise ConsentRequired(
            "Please read and accept the current privacy policy first."
            if session.consent_version
            else "Please read and accept the privacy policy first."
        )
    if session.customer_id is None:
        raise ConsentRequired("Please tell us your name and email first.",
                              code="customer_required")
    return session.customer_id


# -- the pre-chat form --------------------------------------------------------------------------

# One address, pragmatic rather than RFC 5322 complete: what a support team can reply to.
EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                      r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
CC_FIELDS = {"cc", "bcc"}
VISITOR_FIELDS = {"name", "email", "company"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(data: dict[str, Any], key: str, low: int, high: int, label: str) -> str:
    value = data.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationFailed(f"{label} must be text.", field=key)
    value = " ".join(value.split())
    if _CONTROL.search(value):
        raise ValidationFailed(f"{label} contains characters that are not allowed.", field=key)
    if not low <= len(value) <= high:
        if low:
            raise ValidationFailed(f"{label} must be {low} to {high} characters.", field=key)
        raise ValidationFailed(f"{label} may have at most {high} characters.", field=key)
    return value


def validate_customer(data: Any, *, partial: bool = False) -> dict[str, str]:
    """Check the pre-chat form: name, one email, company.

    With `partial` (an account correction) only the fields present are checked and returned.
    """
    if not isinstance(data, dict):
        raise ValidationFailed("Send a JSON object with name, email and company.")
    lowered = {str(k).lower() for k in data}
    if lowered & CC_FIELDS or any(k.endswith(("_cc", "_bcc")) for k in lowered):
        raise ValidationFailed(
            "Copies to other people (CC/BCC) are not allowed: we only take the address of the "
            "person writing, with their consent.",
            field="email", code="cc_not_allowed",
        )
    unknown = set(data) - VISITOR_FIELDS
    if unknown:
        name = sorted(str(k)[:40] for k in unknown)[0]
        raise ValidationFailed(f"Unknown field {name!r}.", field=name, code="unknown_field")
    if partial and not data:
        raise ValidationFailed("Send at least one of name, email and company.")
    checked: dict[str, str] = {}
    if not partial or "name" in data:
        checked["name"] = _text(data, "name", 1, 100, "Name")
    if not partial or "email" in data:
        checked["email"] = _email(data.get("email"))
    if not partial or "company" in data:
        checked["company"] = _text(data, "company", 0, 200, "Company")
    return checked


def _email(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValidationFailed("Email must be text.", field="email")
    email = raw.strip()
    if re.search(r"[,;\s]", email) or email.count("@") > 1:
        raise ValidationFailed(
            "Give one email address only: copies to other people are not allowed.",
            field="email", code="cc_not_allowed",
        )
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise ValidationFailed("That does not look like an email address.", field="email")
    return email


def validate_email(raw: Any) -> str:
    """One email address, as the pre-chat form takes it (422 cc_not_allowed for a second)."""
    return _email(raw)
