"""What mail needs from the settings, resolved once: where it goes, from whom, and the base of
every link. Links are never built from a request's Host header, which a client chooses."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import urlsplit

from ..settings import Settings, SmtpTarget

DEFAULT_PUBLIC_URL = "http://localhost:8000"


@dataclass(frozen=True)
class MailConfig:
    smtp: SmtpTarget | None
    sender: str  # the From header: an address, or Name <address>
    public_url: str  # no trailing slash
    reply_delay_seconds: int
    retry_seconds: float
    contact_email: str
    access_retention_days: int

    @property
    def enabled(self) -> bool:
        return self.smtp is not None

    @property
    def sender_address(self) -> str:
        """The bare address of the From header, for the SMTP envelope."""
        return parseaddr(self.sender)[1]

    def link(self, path: str) -> str:
        return self.public_url + path

    def describe(self) -> str:
        """One line for the startup log; never the SMTP password."""
        if self.smtp is None:
            return ("mail: off (no CHATSERVER_SMTP_URL): nothing is sent; sign-in, termination, "
                    "transcript and reply emails are unavailable")
        return (f"mail: on, through {self.smtp.describe()} as {self.sender_address}; links "
                f"start with {self.public_url}")


def public_url(settings: Settings) -> str:
    """CHATSERVER_PUBLIC_URL, else the origin `chatserver serve` was started on."""
    return (settings.public_url or settings.extra.get("public_url") or DEFAULT_PUBLIC_URL
            ).rstrip("/")


def from_settings(settings: Settings) -> MailConfig:
    base = public_url(settings)
    host = urlsplit(base).hostname or "localhost"
    return MailConfig(
        smtp=settings.smtp,
        sender=settings.mail_from or f"chat@{host}",
        public_url=base,
        reply_delay_seconds=settings.reply_email_delay_seconds,
        retry_seconds=settings.mail_retry_seconds,
        contact_email=settings.contact_email,
        access_retention_days=settings.access_retention_days,
    )
