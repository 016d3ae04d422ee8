"""Settings: the only module that reads the environment.

Every setting has a default and a help text; `docs/deploy.md` lists them and a test checks it does.
Precedence: command-line flags, then environment variables, then defaults.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


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
    "log_level": Setting(
        "CHATSERVER_LOG_LEVEL",
        "info",
        "Log level: debug, info, warning or error. Logs never carry names, emails or messages.",
    ),
}

TRUTHY = {"1", "on", "true", "yes"}
FALSY = {"0", "off", "false", "no"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    database_pool_size: int
    broadcast_url: str
    secret_key: str
    allowed_origins: tuple[str, ...]
    retention_days: int
    access_retention_days: int
    conversation_retention_days: int
    purge_interval_seconds: int
    contact_email: str
    subprocessors_file: str
    secure_cookies: bool | None  # None: decided per request by its scheme
    limits_exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    rate_messages: int
    rate_window_seconds: float
    staff_rate_messages: int
    ip_rate_messages: int
    max_sockets_per_session: int
    max_sockets_per_ip: int
    new_conversations_per_ip_hour: int
    socket_idle_seconds: float
    staff_idle_minutes: float
    send_queue_size: int
    staff_session_hours: float
    log_level: str
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


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(f"CHATSERVER_LIMITS_EXEMPT: {part!r} is no IP or network") from None
    return tuple(nets)


def _origins(value: str) -> tuple[str, ...]:
    origins = []
    for part in filter(None, (p.strip().rstrip("/").lower() for p in value.split(","))):
        if not part.startswith(("http://", "https://")) or part.count("/") != 2:
            raise SettingsError(
                f"CHATSERVER_ALLOWED_ORIGINS: {part!r} is not an origin like https://example.com"
            )
        origins.append(part)
    return tuple(origins)


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


def load_secret(data_dir: Path) -> str:
    """Read the secret key from the data folder, creating it (mode 0600) on first start."""
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def load(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build settings from flags (overrides), the environment and defaults.

    Creates the data folder and the secret key when they are missing.
    """
    overrides = overrides or {}
    env = dict(os.environ if environ is None else environ)
    data_dir = Path(_raw("data_dir", overrides, env)).expanduser().resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    database_url = _database_url(
        _raw("database_url", overrides, env) or f"sqlite:///{data_dir / 'chat.db'}")
    secret = _raw("secret_key", overrides, env) or load_secret(data_dir)
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
        retention_days=_int("retention_days", _raw("retention_days", overrides, env)),
        access_retention_days=_int(
            "access_retention_days", _raw("access_retention_days", overrides, env)
        ),
        conversation_retention_days=_int(
            "conversation_retention_days", _raw("conversation_retention_days", overrides, env)
        ),
        purge_interval_seconds=_int(
            "purge_interval_seconds", _raw("purge_interval_seconds", overrides, env)
        ),
        contact_email=_raw("contact_email", overrides, env).strip(),
        subprocessors_file=_raw("subprocessors_file", overrides, env).strip(),
        secure_cookies=_secure(_raw("secure_cookies", overrides, env)),
        limits_exempt=_networks(_raw("limits_exempt", overrides, env)),
        rate_messages=_int("rate_messages", _raw("rate_messages", overrides, env), 1),
        rate_window_seconds=_float("rate_window_seconds", _raw("rate_window_seconds", overrides, env)),
        staff_rate_messages=_int(
            "staff_rate_messages", _raw("staff_rate_messages", overrides, env), 1
        ),
        ip_rate_messages=_int("ip_rate_messages", _raw("ip_rate_messages", overrides, env), 1),
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
        staff_idle_minutes=_float("staff_idle_minutes", _raw("staff_idle_minutes", overrides, env)),
        send_queue_size=_int("send_queue_size", _raw("send_queue_size", overrides, env), 8),
        staff_session_hours=_float("staff_session_hours", _raw("staff_session_hours", overrides, env)),
        log_level=level,
    )
