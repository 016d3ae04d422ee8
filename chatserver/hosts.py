"""Which `Host` names this server answers for.

The `Host` header is the client's to choose. Anything built from it (an absolute redirect, the
server's own origin that origin checks compare with, a link) would otherwise say what an
attacker wants: a forged Host in a password-reset link or a cached redirect sends people to
their site. So a request names one of the allowed hosts or gets 400, and redirects never carry a
host at all (see app.EdgeMiddleware).

Allowed: CHATSERVER_ALLOWED_HOSTS when set; otherwise the loopback names a default install is
reached by, the host of the public URL and the hosts of CHATSERVER_ALLOWED_ORIGINS. Ports are
not compared: a proxy on another port forwards the same name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# A DNS name (letters, digits, dashes, dots; an underscore is tolerated, some internal names
# use one) or an IPv4 address; IPv6 comes in brackets.
_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_\-]{0,62})(\.[a-z0-9_]([a-z0-9_\-]{0,62}))*\.?$")


def host_name(header: str) -> str | None:
    """The host of a `Host` header, lower case, without port or brackets; None when malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1:] and not re.fullmatch(r":\d{1,5}", value[end + 1:])):
            return None
        try:
            return str(ipaddress.IPv6Address(value[1:end]))
        except ValueError:
            return None
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    if len(name) > 253 or not _NAME.match(name):
        return None
    return name.rstrip(".")


@dataclass(frozen=True)
class AllowedHosts:
    """Exact names, `.example.com` for a domain and all its subdomains, or `*` for any."""

    names: frozenset[str]
    domains: tuple[str, ...] = ()
    any_host: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        names: set[str] = set()
        domains: list[str] = []
        any_host = False
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                any_host = True
            elif entry.startswith("."):
                domains.append(entry)
            else:
                bare_ipv6 = entry.count(":") > 1 and not entry.startswith("[")
                name = host_name(f"[{entry}]" if bare_ipv6 else entry)
                if name is None:
                    raise ValueError(entry)
                names.add(name)
        return cls(frozenset(names), tuple(domains), any_host)

    @classmethod
    def default(cls, urls: Iterable[str]) -> AllowedHosts:
        """Loopback names, and the hosts of the given URLs (the public URL, allowed origins)."""
        names = set(LOCAL_HOSTS)
        for url in urls:
            host = urlsplit(url).hostname
            if host:
                names.add(host.lower())
        return cls(frozenset(names))

    def allows(self, header: str | None) -> bool:
        if self.any_host:
            return True
        if header is None:
            return False
        name = host_name(header)
        if name is None:
            return False
        return name in self.names or any(
            name == domain[1:] or name.endswith(domain) for domain in self.domains)

    def describe(self) -> str:
        if self.any_host:
            return "any host"
        return ", ".join(sorted(self.names) + [f"*{d}" for d in self.domains])
