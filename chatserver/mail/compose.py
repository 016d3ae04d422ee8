"""Mail as it leaves: a plain-text and an HTML part from Jinja2 templates, and headers that no
value from a user can bend.

Only fixed text goes into headers: the subject is chosen by the mail's kind, the From address
comes from the settings, and the To header is the customer's bare address, checked again here;
no name (a customer's or an agent's) ever goes into a header. The HTML has no images, no remote
resources and no tracking: only text and links that start with the public URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..consent import EMAIL_RE
from .config import MailConfig

SUBJECTS = {
    "signin": "Your sign-in link",
    "terminate": "Confirm the deletion of your account",
    "reply": "New reply to your conversation",
    "transcript": "The transcript of your conversation",
    "farewell": "Your account has been deleted",
}
_LINE_BREAKS = re.compile(r"[\r\n\x00]")


class AddressRefused(ValueError):
    """The address on file cannot be a single, safe recipient."""


@dataclass(frozen=True)
class Outgoing:
    """A composed mail and the one envelope recipient it may go to."""

    message: EmailMessage
    sender: str
    recipient: str


def environment(template_dir: str) -> Environment:
    # Autoescape the HTML templates only; the plain-text part is text, not markup.
    return Environment(
        loader=FileSystemLoader(template_dir),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def recipient(address: str) -> str:
    """The address as one safe recipient, or AddressRefused."""
    address = address.strip()
    if (len(address) > 254 or _LINE_BREAKS.search(address) or not EMAIL_RE.match(address)
            or address.count("@") != 1):
        raise AddressRefused("not a single email address")
    return address


def compose(env: Environment, config: MailConfig, kind: str, to: str, context: dict[str, Any],
            now: datetime) -> Outgoing:
    """Render `kind` for one recipient. The subject is fixed per kind."""
    address = recipient(to)
    values = {**context, "public_url": config.public_url, "contact_email": config.contact_email}
    text = env.get_template(f"mail/{kind}.txt").render(values)
    html = env.get_template(f"mail/{kind}.html").render(values)
    message = EmailMessage(policy=SMTP)
    message["From"] = config.sender
    message["To"] = Address(addr_spec=address)
    message["Subject"] = SUBJECTS[kind]
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=config.sender_address.split("@")[-1])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    try:
        message["Reply-To"] = recipient(config.contact_email)
    except AddressRefused:
        pass  # none set, or not one plain address: answers go to the From address
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return Outgoing(message, config.sender_address, address)
