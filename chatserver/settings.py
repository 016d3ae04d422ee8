"""Settings: the only module that reads the environment.

Every setting has a default and a help text; `docs/deploy.md` lists them and a test checks it does.
Precedence: command-line flags, then environment variables, then defaults.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field, replace
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .consent import EMAIL_RE
from .hosts import AllowedHosts


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    help: str


SETTINGS: dict[str, Setting] = {
    "data_dir": Setting(
        "CHATSERVER_DATA_DIR",
        "./chatserver-data",
        "Where the SQLite database and the secret key live (nothing else is written there).",
    ),
    "database_url": Setting(
        "CHATSERVER_DATABASE_URL",
        "",
        "Database URL; empty means sqlite:///<data dir>/chat.db. postgresql://... selects "
        "PostgreSQL.",
    ),
    "database_pool_size": Setting(
        "CHATSERVER_DATABASE_POOL_SIZE",
        "10",
        "PostgreSQL only: connections each server process keeps at most (mind the database's "
        "max_connections across processes).",
    ),
    "broadcast_url": Setting(
        "CHATSERVER_BROADCAST_URL",
        "memory://",
        "Fan-out backend: memory:// (one process) or redis://... (across processes and hosts).",
    ),
    "secret_key": Setting(
        "CHATSERVER_SECRET_KEY",
        "",
        "Signs cookies and tokens; empty means generated once into <data dir>/secret.key (0600).",
    ),
    "allowed_origins": Setting(
        "CHATSERVER_ALLOWED_ORIGINS",
        "",
        "Comma-separated origins allowed to embed the widget and open its WebSocket, besides the "
        "server's own origin.",
    ),
    "allowed_hosts": Setting(
        "CHATSERVER_ALLOWED_HOSTS",
        "",
        "Comma-separated host names this server answers for (the Host header; ports ignored): "
        "chat.example.com, .example.com for a domain and its subdomains, * for any. Empty: "
        "localhost, 127.0.0.1 and ::1, the host serve was told to listen on, and the hosts of "
        "CHATSERVER_ALLOWED_ORIGINS. Any other Host gets 400.",
    ),
    "retention_days": Setting(
        "CHATSERVER_RETENTION_DAYS",
        "365",
        "Days of inactivity after which an account with nothing open is wiped; 0 wipes at once.",
    ),
    "access_retention_days": Setting(
        "CHATSERVER_ACCESS_RETENTION_DAYS",
        "30",
        "Days after which access records (IP address and user agent of each visit) are deleted.",
    ),
    "conversation_retention_days": Setting(
        "CHATSERVER_CONVERSATION_RETENTION_DAYS",
        "365",
        "Days after closing at which a conversation and its messages are deleted; 0 deletes "
        "closed conversations at the next purge.",
    ),
    "unfinished_session_hours": Setting(
        "CHATSERVER_UNFINISHED_SESSION_HOURS",
        "4",
        "Hours after which a visitor session that accepted the policy but never filled in the "
        "pre-chat form is deleted with its consents and access records (at the next purge).",
    ),
    "audit_retention_days": Setting(
        "CHATSERVER_AUDIT_RETENTION_DAYS",
        "365",
        "Days after which audit entries are deleted by the purge; an entry recording the cut "
        "keeps the rest of the chain verifiable.",
    ),
    "audit_repeat_window_seconds": Setting(
        "CHATSERVER_AUDIT_REPEAT_WINDOW_SECONDS",
        "300",
        "Repeats of the same failed sign-in or self-service export within this window are "
        "written as one audit entry with a count, after the first one.",
    ),
    "consents_per_ip_hour": Setting(
        "CHATSERVER_CONSENTS_PER_IP_HOUR",
        "60",
        "Consents (POST /api/consent) one IP address may give in an hour; more get 429.",
    ),
    "min_free_bytes": Setting(
        "CHATSERVER_MIN_FREE_BYTES",
        "104857600",
        "Free space the disk holding the data folder must keep: below it new visitor sessions "
        "and customers are refused with 503 storage_low while existing chats go on.",
    ),
    "purge_interval_seconds": Setting(
        "CHATSERVER_PURGE_INTERVAL_SECONDS",
        "3600",
        "How often the server applies the retention rules; 0 turns the periodic purge off "
        "(run `chatserver purge` instead).",
    ),
    "contact_email": Setting(
        "CHATSERVER_CONTACT_EMAIL",
        "",
        "Where customers write about privacy or when chat cannot work (cookies blocked); shown "
        "on the policy and account pages and in the widget.",
    ),
    "organisation": Setting(
        "CHATSERVER_ORGANISATION",
        "EmergencySupport",
        "Who runs this chat service, as customers should read it: named on the demo page, in the "
        "widget's consent screen and on the policy page. The default is the organisation the "
        "bundled privacy policy names; change both before going live.",
    ),
    "on_behalf_consent": Setting(
        "CHATSERVER_ON_BEHALF_CONSENT",
        "on",
        "on or off: beside the consent, offer the optional box \"I am writing on behalf of my own "
        "customers and confirm this policy was conveyed to them\" (for support of businesses "
        "whose own customers' data reaches you; the bundled policy asks for it). off hides it.",
    ),
    "subprocessors_file": Setting(
        "CHATSERVER_SUBPROCESSORS_FILE",
        "",
        "A JSON file listing the sub-processors (trusted support tools) shown on the policy "
        "page: [{\"name\", \"purpose\", \"data\", \"country\"}]. Empty: none are used.",
    ),
    "secure_cookies": Setting(
        "CHATSERVER_SECURE_COOKIES",
        "auto",
        "on, off or auto: auto sets the Secure cookie attribute when the request came over HTTPS.",
    ),
    "limits_exempt": Setting(
        "CHATSERVER_LIMITS_EXEMPT",
        "",
        "Comma-separated IPs or networks exempt from rate and count limits (size limits apply).",
    ),
    "trusted_proxies": Setting(
        "CHATSERVER_TRUSTED_PROXIES",
        "",
        "Comma-separated IPs or networks of the reverse proxies in front of the server. Only a "
        "connection from one of them has its client address taken from X-Forwarded-For (or "
        "X-Real-IP) and its scheme from X-Forwarded-Proto; from anyone else these headers are "
        "ignored. Empty: no proxy is trusted.",
    ),
    "metrics_allow": Setting(
        "CHATSERVER_METRICS_ALLOW",
        "127.0.0.1,::1",
        "Comma-separated IPs or networks that may read GET /metrics; anyone else gets 404. "
        "Empty: nobody.",
    ),
    "log_format": Setting(
        "CHATSERVER_LOG_FORMAT",
        "text",
        "text, or json: one JSON object per line with time, level, logger, message, process id "
        "and request id.",
    ),
    "rate_messages": Setting(
        "CHATSERVER_RATE_MESSAGES",
        "30",
        "Messages a socket may send per rate window before it is warned, then closed with 4429.",
    ),
    "rate_window_seconds": Setting(
        "CHATSERVER_RATE_WINDOW_SECONDS",
        "10",
        "Length of the message rate window, in seconds.",
    ),
    "staff_rate_messages": Setting(
        "CHATSERVER_STAFF_RATE_MESSAGES",
        "120",
        "Messages one agent socket may send per rate window (agents answer many conversations "
        "at once; they are signed in, so no per-IP limit applies to them).",
    ),
    "ip_rate_messages": Setting(
        "CHATSERVER_IP_RATE_MESSAGES",
        "120",
        "Messages all sockets of one IP address may send per rate window together.",
    ),
    "staff_sign_ins_per_ip": Setting(
        "CHATSERVER_STAFF_SIGN_INS_PER_IP",
        "20",
        "Staff sign-in attempts one IP address may make per 5 minutes from browsers that have "
        "not signed in to that account before; more get 429 at once.",
    ),
    "staff_sign_ins_per_second": Setting(
        "CHATSERVER_STAFF_SIGN_INS_PER_SECOND",
        "10",
        "Staff sign-in attempts per second from all such browsers together (bursts of twice "
        "as many); more get 429 at once, so a flood cannot queue in front of real sign-ins.",
    ),
    "max_sockets_per_session": Setting(
        "CHATSERVER_MAX_SOCKETS_PER_SESSION",
        "8",
        "Open sockets one visitor or staff session may hold (tabs, windows).",
    ),
    "max_sockets_per_ip": Setting(
        "CHATSERVER_MAX_SOCKETS_PER_IP",
        "64",
        "Open sockets one IP address may hold.",
    ),
    "new_conversations_per_ip_hour": Setting(
        "CHATSERVER_NEW_CONVERSATIONS_PER_IP_HOUR",
        "30",
        "New conversations one IP address may start in an hour.",
    ),
    "socket_idle_seconds": Setting(
        "CHATSERVER_SOCKET_IDLE_SECONDS",
        "120",
        "A socket that sends nothing (not even the clients' 25-second ping) for this long is "
        "closed with 1001; clients reconnect and resume.",
    ),
    "header_timeout_seconds": Setting(
        "CHATSERVER_HEADER_TIMEOUT_SECONDS",
        "10",
        "Seconds a connection has to send a request's headers, from opening or from the previous "
        "response; then it is closed (slowloris).",
    ),
    "body_timeout_seconds": Setting(
        "CHATSERVER_BODY_TIMEOUT_SECONDS",
        "30",
        "Seconds a request has to send its body once its headers are in; then it is closed.",
    ),
    "keepalive_seconds": Setting(
        "CHATSERVER_KEEPALIVE_SECONDS",
        "5",
        "An idle keep-alive connection is closed after this many seconds without a request.",
    ),
    "max_connections": Setting(
        "CHATSERVER_MAX_CONNECTIONS",
        "4096",
        "Open connections (HTTP and WebSocket) one server process holds; more get 503. Lowered "
        "at start to fit the open-file limit.",
    ),
    "max_connections_per_ip": Setting(
        "CHATSERVER_MAX_CONNECTIONS_PER_IP",
        "128",
        "Open connections one address may hold (trusted proxies and CHATSERVER_LIMITS_EXEMPT "
        "excepted); more get 503.",
    ),
    "staff_idle_minutes": Setting(
        "CHATSERVER_STAFF_IDLE_MINUTES",
        "60",
        "A staff sign-in unused for this long ends; an open dashboard counts as use.",
    ),
    "send_queue_size": Setting(
        "CHATSERVER_SEND_QUEUE_SIZE",
        "256",
        "Frames waiting for one slow socket before it is disconnected (it resumes on reconnect).",
    ),
    "staff_session_hours": Setting(
        "CHATSERVER_STAFF_SESSION_HOURS",
        "12",
        "Absolute lifetime of a staff sign-in, in hours.",
    ),
    "smtp_url": Setting(
        "CHATSERVER_SMTP_URL",
        "",
        "Where mail goes: smtp://[user:pass@]host:port, smtp+starttls://... (STARTTLS required) "
        "or smtps://... (TLS from the start). Empty: no mail is sent, and the widget promises "
        "no email replies.",
    ),
    "mail_from": Setting(
        "CHATSERVER_MAIL_FROM",
        "",
        "The From address of every mail (an address, or Name <address>); empty means "
        "chat@<host of the public URL>.",
    ),
    "public_url": Setting(
        "CHATSERVER_PUBLIC_URL",
        "",
        "The base of every link in a mail, such as https://chat.example.com; empty means the "
        "server's own origin as started (http://localhost:<port>). Set it in production: "
        "links are never built from a request's Host header.",
    ),
    "reply_email_delay_seconds": Setting(
        "CHATSERVER_REPLY_EMAIL_DELAY_SECONDS",
        "120",
        "An agent reply the customer has not seen after this many seconds is emailed to the "
        "customer's own address (replies are batched per conversation).",
    ),
    "mail_retry_seconds": Setting(
        "CHATSERVER_MAIL_RETRY_SECONDS",
        "30",
        "Wait before the first retry of a mail the SMTP server did not take; it doubles with "
        "each attempt (at most 6 hours), and after 8 attempts the mail is marked failed.",
    ),
    "log_level": Setting(
        "CHATSERVER_LOG_LEVEL",
        "info",
        "Log level: debug, info, warning or error. Logs never carry names, emails or messages.",
    ),
}

TRUTHY = {"1", "on", "true", "yes"}
FALSY = {"0", "off", "false", "no"}


@dataclass(frozen=True)
class SmtpTarget:
    """Where mail goes, from CHATSERVER_SMTP_URL. `tls` is none, starttls or implicit."""

    host: str
    port: int
    tls: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """For the startup log: never the password."""
        return f"{self.host}:{self.port} ({self.tls})"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    database_pool_size: int
    broadcast_url: str
    secret_key: str
    allowed_origins: tuple[str, ...]
    allowed_hosts: tuple[str, ...]  # empty: derived (hosts.AllowedHosts.default)
    retention_days: int
    access_retention_days: int
    conversation_retention_days: int
    unfinished_session_hours: int
    audit_retention_days: int
    audit_repeat_window_seconds: float
    consents_per_ip_hour: int
    min_free_bytes: int
    purge_interval_seconds: int
    contact_email: str
    organisation: str
    on_behalf_consent: bool
    subprocessors_file: str
    secure_cookies: bool | None  # None: decided per request by its scheme
    limits_exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    metrics_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    log_format: str
    rate_messages: int
    rate_window_seconds: float
    staff_rate_messages: int
    ip_rate_messages: int
    staff_sign_ins_per_ip: int
    staff_sign_ins_per_second: float
    max_sockets_per_session: int
    max_sockets_per_ip: int
    new_conversations_per_ip_hour: int
    socket_idle_seconds: float
    header_timeout_seconds: float
    body_timeout_seconds: float
    keepalive_seconds: float
    max_connections: int
    max_connections_per_ip: int
    staff_idle_minutes: float
    send_queue_size: int
    staff_session_hours: float
    log_level: str
    smtp: SmtpTarget | None = None  # None: no mail is sent
    mail_from: str = ""  # empty: chat@<host of the public URL>
    public_url: str = ""  # empty: the server's own origin as started
    reply_email_delay_seconds: int = 120
    mail_retry_seconds: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def is_exempt(self, ip: str | None) -> bool:
        if not ip or not self.limits_exempt:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.limits_exempt)


class SettingsError(ValueError):
    pass


def _raw(name: str, overrides: dict[str, Any], environ: dict[str, str]) -> str:
    if overrides.get(name) is not None:
        return str(overrides[name])
    spec = SETTINGS[name]
    return environ.get(spec.env, spec.default)


def _int(name: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{SETTINGS[name].env} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise SettingsError(f"{SETTINGS[name].env} must be at least {minimum}")
    return number


def _float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{SETTINGS[name].env} must be a number, not {value!r}") from None
    if number <= 0:
        raise SettingsError(f"{SETTINGS[name].env} must be above zero")
    return number


def _networks(value: str, name: str = "limits_exempt"
              ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(f"{SETTINGS[name].env}: {part!r} is no IP or network") from None
    return tuple(nets)


def _log_format(value: str) -> str:
    lowered = value.strip().lower() or "text"
    if lowered not in {"text", "json"}:
        raise SettingsError("CHATSERVER_LOG_FORMAT must be text or json")
    return lowered


def _origins(value: str) -> tuple[str, ...]:
    origins = []
    for part in filter(None, (p.strip().rstrip("/").lower() for p in value.split(","))):
        if not part.startswith(("http://", "https://")) or part.count("/") != 2:
            raise SettingsError(
                f"CHATSERVER_ALLOWED_ORIGINS: {part!r} is not an origin like https://example.com"
            )
        origins.append(part)
    return tuple(origins)


def _switch(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUTHY:
        return True
    if lowered in FALSY:
        return False
    raise SettingsError(f"{SETTINGS[name].env} must be on or off")


def _organisation(value: str) -> str:
    name = " ".join(value.split())
    if not 1 <= len(name) <= 100:
        raise SettingsError("CHATSERVER_ORGANISATION must be 1-100 characters")
    return name


def _hosts(value: str) -> tuple[str, ...]:
    entries = tuple(filter(None, (p.strip().lower() for p in value.split(","))))
    try:
        AllowedHosts.parse(entries)
    except ValueError as exc:
        raise SettingsError(f"CHATSERVER_ALLOWED_HOSTS: {exc} is not a host name") from None
    return entries


DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def _database_url(value: str) -> str:
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in DATABASE_SCHEMES:
        raise SettingsError(
            "CHATSERVER_DATABASE_URL must start with sqlite:/// or postgresql:// (or postgres://)"
            + (f", not {scheme}://" if scheme else "")
        )
    return value


def _secure(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in TRUTHY:
        return True
    if lowered in FALSY:
        return False
    if lowered in {"", "auto"}:
        return None
    raise SettingsError("CHATSERVER_SECURE_COOKIES must be on, off or auto")


_SMTP_SCHEMES = {"smtp": ("none", 25), "smtp+starttls": ("starttls", 587),
                 "smtps": ("implicit", 465)}


def _smtp(value: str) -> SmtpTarget | None:
    """smtp://[user:pass@]host[:port], smtp+starttls://... or smtps://...; empty: no mail."""
    value = value.strip()
    if not value:
        return None
    name = "CHATSERVER_SMTP_URL"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise SettingsError(f"{name}: the port is not a number from 1 to 65535") from None
    if parts.scheme not in _SMTP_SCHEMES:
        raise SettingsError(f"{name} must start with smtp://, smtp+starttls:// or smtps://")
    if not parts.hostname:
        raise SettingsError(f"{name} names no host, as in smtp://mail.example.com:25")
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise SettingsError(f"{name} takes no path, query or fragment")
    if (parts.username is None) != (parts.password is None):
        raise SettingsError(f"{name}: give both user and password (user:pass@host), or neither")
    tls, default_port = _SMTP_SCHEMES[parts.scheme]
    return SmtpTarget(
        host=parts.hostname, port=port or default_port, tls=tls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _public_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value:
        return ""
    name = "CHATSERVER_PUBLIC_URL"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise SettingsError(f"{name}: {value!r} has a bad port") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(f"{name} must be an http:// or https:// URL, not {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(f"{name} takes no user, query or fragment")
    return value


def _mail_from(value: str) -> str:
    """An address, or Name <address>, on one line."""
    value = value.strip()
    if not value:
        return ""
    name = "CHATSERVER_MAIL_FROM"
    if any(ch in value for ch in "\r\n\x00"):
        raise SettingsError(f"{name} must be on one line")
    display, address = parseaddr(value)
    if not EMAIL_RE.match(address) or "," in value:
        raise SettingsError(f"{name}: {value!r} is not one email address")
    return formataddr((display, address)) if display else address


def _missing(what: str, data_dir: Path) -> SettingsError:
    return SettingsError(
        f"No {what} in {data_dir}. Only `chatserver serve` creates a data folder: run this "
        "command from the folder you started the server in, or point CHATSERVER_DATA_DIR (or "
        "--data-dir) at the server's data folder."
    )


def sqlite_file(database_url: str) -> Path | None:
    """The file a sqlite:// URL names (as the SQLite store reads it), else None."""
    if not database_url.startswith("sqlite://"):
        return None
    path = database_url[len("sqlite://"):]
    if path.startswith("/") and path[1:2] == "/":
        path = path[1:]
    return Path(path)


def load_secret(data_dir: Path, create: bool = True) -> str:
    """Read the secret key from the data folder, creating it (mode 0600) on first start."""
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    if not create:
        raise _missing("secret key (secret.key) and no CHATSERVER_SECRET_KEY", data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def load(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
         *, create: bool = True) -> Settings:
    """Build settings from flags (overrides), the environment and defaults.

    With `create` (the server) the data folder and the secret key are made when missing.
    Without it (every other command) a missing SQLite database or secret key is an error that
    names CHATSERVER_DATA_DIR: a command run from the wrong folder must not quietly start a
    second, empty data folder that the server never reads.
    """
    overrides = overrides or {}
    env = dict(os.environ if environ is None else environ)
    data_dir = Path(_raw("data_dir", overrides, env)).expanduser().resolve()
    if create:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    database_url = _database_url(
        _raw("database_url", overrides, env) or f"sqlite:///{data_dir / 'chat.db'}")
    database_file = sqlite_file(database_url)
    if not create and database_file is not None and not database_file.is_file():
        if database_file.parent == data_dir:
            raise _missing(f"chat database ({database_file.name})", data_dir)
        raise SettingsError(f"No chat database at {database_file} (CHATSERVER_DATABASE_URL); "
                            "only `chatserver serve` creates one.")
    secret = _raw("secret_key", overrides, env) or load_secret(data_dir, create)
    level = _raw("log_level", overrides, env).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise SettingsError("CHATSERVER_LOG_LEVEL must be debug, info, warning or error")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        database_pool_size=_int(
            "database_pool_size", _raw("database_pool_size", overrides, env), 1
        ),
        broadcast_url=_raw("broadcast_url", overrides, env),
        secret_key=secret,
        allowed_origins=_origins(_raw("allowed_origins", overrides, env)),
        allowed_hosts=_hosts(_raw("allowed_hosts", overrides, env)),
        retention_days=_int("retention_days", _raw("retention_days", overrides, env)),
        access_retention_days=_int(
            "access_retention_days", _raw("access_retention_days", overrides, env)
        ),
        conversation_retention_days=_int(
            "conversation_retention_days", _raw("conversation_retention_days", overrides, env)
        ),
        unfinished_session_hours=_int(
            "unfinished_session_hours", _raw("unfinished_session_hours", overrides, env)
        ),
        audit_retention_days=_int(
            "audit_retention_days", _raw("audit_retention_days", overrides, env), 1
        ),
        audit_repeat_window_seconds=_float(
            "audit_repeat_window_seconds", _raw("audit_repeat_window_seconds", overrides, env)
        ),
        consents_per_ip_hour=_int(
            "consents_per_ip_hour", _raw("consents_per_ip_hour", overrides, env), 1
        ),
        min_free_bytes=_int("min_free_bytes", _raw("min_free_bytes", overrides, env)),
        purge_interval_seconds=_int(
            "purge_interval_seconds", _raw("purge_interval_seconds", overrides, env)
        ),
        contact_email=_raw("contact_email", overrides, env).strip(),
        organisation=_organisation(_raw("organisation", overrides, env)),
        on_behalf_consent=_switch("on_behalf_consent", _raw("on_behalf_consent", overrides, env)),
        subprocessors_file=_raw("subprocessors_file", overrides, env).strip(),
        secure_cookies=_secure(_raw("secure_cookies", overrides, env)),
        limits_exempt=_networks(_raw("limits_exempt", overrides, env)),
        trusted_proxies=_networks(_raw("trusted_proxies", overrides, env), "trusted_proxies"),
        metrics_allow=_networks(_raw("metrics_allow", overrides, env), "metrics_allow"),
        log_format=_log_format(_raw("log_format", overrides, env)),
        rate_messages=_int("rate_messages", _raw("rate_messages", overrides, env), 1),
        rate_window_seconds=_float("rate_window_seconds", _raw("rate_window_seconds", overrides, env)),
        staff_rate_messages=_int(
            "staff_rate_messages", _raw("staff_rate_messages", overrides, env), 1
        ),
        ip_rate_messages=_int("ip_rate_messages", _raw("ip_rate_messages", overrides, env), 1),
        staff_sign_ins_per_ip=_int(
            "staff_sign_ins_per_ip", _raw("staff_sign_ins_per_ip", overrides, env), 1
        ),
        staff_sign_ins_per_second=_float(
            "staff_sign_ins_per_second", _raw("staff_sign_ins_per_second", overrides, env)
        ),
        max_sockets_per_session=_int(
            "max_sockets_per_session", _raw("max_sockets_per_session", overrides, env), 1
        ),
        max_sockets_per_ip=_int("max_sockets_per_ip", _raw("max_sockets_per_ip", overrides, env), 1),
        new_conversations_per_ip_hour=_int(
            "new_conversations_per_ip_hour",
            _raw("new_conversations_per_ip_hour", overrides, env), 1,
        ),
        socket_idle_seconds=_float(
            "socket_idle_seconds", _raw("socket_idle_seconds", overrides, env)
        ),
        header_timeout_seconds=_float(
            "header_timeout_seconds", _raw("header_timeout_seconds", overrides, env)),
        body_timeout_seconds=_float(
            "body_timeout_seconds", _raw("body_timeout_seconds", overrides, env)),
        keepalive_seconds=_float("keepalive_seconds", _raw("keepalive_seconds", overrides, env)),
        max_connections=_int("max_connections", _raw("max_connections", overrides, env), 1),
        max_connections_per_ip=_int(
            "max_connections_per_ip", _raw("max_connections_per_ip", overrides, env), 1),
        staff_idle_minutes=_float("staff_idle_minutes", _raw("staff_idle_minutes", overrides, env)),
        send_queue_size=_int("send_queue_size", _raw("send_queue_size", overrides, env), 8),
        staff_session_hours=_float("staff_session_hours", _raw("staff_session_hours", overrides, env)),
        log_level=level,
        smtp=_smtp(_raw("smtp_url", overrides, env)),
        mail_from=_mail_from(_raw("mail_from", overrides, env)),
        public_url=_public_url(_raw("public_url", overrides, env)),
        reply_email_delay_seconds=_int(
            "reply_email_delay_seconds", _raw("reply_email_delay_seconds", overrides, env)
        ),
        mail_retry_seconds=_float("mail_retry_seconds", _raw("mail_retry_seconds", overrides, env)),
    )
