"""Signed cookies, session ids and CSRF tokens.

A cookie holds an itsdangerous-signed random identifier and nothing else. The server keeps only a
SHA-256 of that identifier, so neither the cookie nor the database row says anything about a
person, and a copy of the database cannot be replayed as cookies. Each purpose has its own salt, so
a value signed for one purpose is worthless for another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

VISITOR_COOKIE = "chat_session"
STAFF_COOKIE = "chat_staff"
SECURE_STAFF_COOKIE = "__Host-chat_staff"  # the staff cookie's name under HTTPS
CSRF_COOKIE = "chat_csrf"
PENDING_CONSENT_COOKIE = "chat_consent"
DEVICE_COOKIE = "chat_staff_device"
SECURE_DEVICE_COOKIE = "__Host-chat_staff_device"  # its name under HTTPS
LINK_COOKIE = "chat_link"

VISITOR_MAX_AGE = 30 * 24 * 3600
CSRF_MAX_AGE = 12 * 3600
PENDING_CONSENT_MAX_AGE = 10 * 60
DEVICE_MAX_AGE = 90 * 24 * 3600

# Everything the server may set, shown on /cookies; a test checks every Set-Cookie is listed here.
COOKIES: list[dict[str, str]] = [
    {
        "name": VISITOR_COOKIE,
        "purpose": "Keeps a customer's chat session after they accepted the privacy policy.",
        "lifetime": "30 days from the consent that started the session, or until the account "
        "is terminated.",
        "contents": "A random identifier with a signature. No name, email, company, IP or "
        "message.",
        "attributes": "HttpOnly; Path=/; under HTTPS SameSite=None; Secure; Partitioned (so the "
        "widget works embedded in your site, in that site's partition only), else SameSite=Lax",
    },
    {
        "name": PENDING_CONSENT_COOKIE,
        "purpose": "Holds the consent you just gave until your browser shows it keeps the "
        "chat_session cookie; only then is the consent recorded, so nothing is stored for a "
        "browser that blocks cookies.",
        "lifetime": "Until the next request from the chat, which clears it; at most 10 minutes.",
        "contents": "The policy version and the SHA-256 of its text, your choice of the "
        "\"on behalf\" box, where you consented, and a hash of the chat_session identifier, "
        "with a signature. No name, email, company, IP or message.",
        "attributes": "As chat_session",
    },
    {
        "name": STAFF_COOKIE,
        "purpose": "Keeps an agent or admin signed in.",
        "lifetime": "Until the browser closes, sign-out, or the sign-in expires on the server.",
        "contents": "A random identifier with a signature. Nothing else.",
        "attributes": "HttpOnly; SameSite=Strict; Path=/; under HTTPS named "
        "__Host-chat_staff and Secure",
    },
    {
        "name": DEVICE_COOKIE,
        "purpose": "Remembers that this browser signed in to a staff account before, so that "
        "strangers' failed attempts at that account do not lock its owner out here.",
        "lifetime": "90 days from the last sign-in in this browser.",
        "contents": "The staff account's number and a random identifier, with a signature. "
        "Nothing else.",
        "attributes": "HttpOnly; SameSite=Strict; Path=/; under HTTPS named "
        "__Host-chat_staff_device and Secure",
    },
    {
        "name": CSRF_COOKIE,
        "purpose": "Proves that a staff sign-in or sign-out form, or the button that uses a "
        "link from one of our emails (sign-in, reply, account deletion), was sent from our own "
        "page.",
        "lifetime": "12 hours.",
        "contents": "A random value with a signature. Nothing else.",
        "attributes": "HttpOnly; SameSite=Strict; Path=/; Secure under HTTPS",
    },
    {
        "name": LINK_COOKIE,
        "purpose": "Holds a sign-in, reply or account-deletion link from an email while you "
        "confirm with the button on our page, so the link leaves the address bar (and the "
        "page's address) at once, and programs that only fetch the link cannot use it up.",
        "lifetime": "As long as the link works (15 minutes; 72 hours for a reply link), or "
        "until it is used.",
        "contents": "The signed one-time link itself. Nothing else.",
        "attributes": "HttpOnly; SameSite=Lax (set by following a link from a mail); Path=/; "
        "Secure under HTTPS",
    },
]


def new_id() -> str:
    return secrets.token_urlsafe(32)


def hash_id(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Signer:
    secret: str

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt=f"chatserver.{purpose}")

    def sign(self, purpose: str, value: str) -> str:
        return self._serializer(purpose).dumps(value)

    def unsign(self, purpose: str, token: str | None, max_age: int | None = None) -> str | None:
        """The signed value, or None for anything forged, tampered, expired or malformed."""
        if not token or len(token) > 512:
            return None
        try:
            value = self._serializer(purpose).loads(token, max_age=max_age)
        except (BadSignature, ValueError, TypeError, UnicodeError):
            return None
        return value if isinstance(value, str) else None

    # CSRF: double submit of one signed random value, in a cookie and in the form.
    def new_csrf(self) -> str:
        return self.sign("csrf", new_id())

    def csrf_matches(self, cookie: str | None, form_value: str | None) -> bool:
        a = self.unsign("csrf", cookie, CSRF_MAX_AGE)
        b = self.unsign("csrf", form_value, CSRF_MAX_AGE)
        return a is not None and b is not None and hmac.compare_digest(a, b)
