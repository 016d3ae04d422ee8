"""One-time links sent by mail: signed, expiring, single-use, and void once a newer one is sent.

A link carries a random id signed by itsdangerous with a salt per purpose, so a link made for one
purpose, signed with another key or altered in any way is refused before the database is asked.
The database keeps only the SHA-256 of the id, and a row that marks the link's use.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from ..sessions import Signer, hash_id, new_id
from ..storage.base import MailStore, MailToken, iso

# purpose: (lifetime, the path the link opens)
LINKS: dict[str, tuple[timedelta, str]] = {
    "signin": (timedelta(minutes=15), "/account/link"),
    "terminate": (timedelta(minutes=15), "/account/terminate"),
    "reply": (timedelta(hours=72), "/chat"),
}


def _salt(purpose: str) -> str:
    return f"mail-link.{purpose}"


async def issue(store: MailStore, signer: Signer, base_url: str, purpose: str,
                customer_id: str, conversation_id: str | None = None) -> str:
    """A new link for the customer (older unused ones of this purpose die); its full URL."""
    lifetime, path = LINKS[purpose]
    raw = new_id()
    await store.create_mail_token(hash_id(raw), customer_id, purpose,
                                  iso(store.clock() + lifetime), conversation_id)
    return f"{base_url}{path}?token={quote(signer.sign(_salt(purpose), raw), safe='')}"


def _hash(signer: Signer, purpose: str, token: str | None) -> str | None:
    lifetime, _ = LINKS[purpose]
    raw = signer.unsign(_salt(purpose), token, int(lifetime.total_seconds()))
    return hash_id(raw) if raw else None


async def check(store: MailStore, signer: Signer, purpose: str, token: str | None
                ) -> MailToken | None:
    """What a link would open, without spending it; None for any bad, used or old link."""
    token_hash = _hash(signer, purpose, token)
    return await store.check_mail_token(token_hash, purpose) if token_hash else None


async def spend(store: MailStore, signer: Signer, purpose: str, token: str | None
                ) -> MailToken | None:
    """Use a link up: what it opens, once; None for any bad, used or old link."""
    token_hash = _hash(signer, purpose, token)
    return await store.use_mail_token(token_hash, purpose) if token_hash else None
