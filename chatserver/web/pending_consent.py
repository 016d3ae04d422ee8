"""A consent is stored only once the browser has shown that it keeps the session cookie.

`POST /api/consent` from a browser without a session stores nothing. It sets `chat_session` (a new
random id) and `chat_consent` (what was accepted: policy version and hash, the "on behalf" box,
the method; signed, bound to that id, valid for ten minutes). The first request that brings both
back records the session, its access record and the consent (with that request's IP address and
user agent), and clears `chat_consent`. A browser that blocks cookies never brings them back, so
nothing about it is stored: no row it could never see nor delete.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..sessions import PENDING_CONSENT_COOKIE, PENDING_CONSENT_MAX_AGE, Signer
from .common import app_state, client_ip, set_visitor_cookie, user_agent, visitor_session_hash

log = logging.getLogger("chatserver.web")
PURPOSE = "pending-consent"


@dataclass(frozen=True)
class PendingConsent:
    session_hash: str
    policy_version: str
    policy_sha256: str
    on_behalf: bool
    method: str

    def encode(self, signer: Signer) -> str:
        data = {"s": self.session_hash, "v": self.policy_version, "h": self.policy_sha256,
                "b": self.on_behalf, "m": self.method}
        return signer.sign(PURPOSE, json.dumps(data, separators=(",", ":")))

    @classmethod
    def decode(cls, signer: Signer, token: str | None) -> PendingConsent | None:
        """The pending consent, or None for anything forged, expired or malformed."""
        raw = signer.unsign(PURPOSE, token, max_age=PENDING_CONSENT_MAX_AGE)
        if raw is None:
            return None
        try:
            data: Any = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        session, version, digest = data.get("s"), data.get("v"), data.get("h")
        on_behalf, method = data.get("b"), data.get("m")
        if not (isinstance(session, str) and isinstance(version, str)
                and isinstance(digest, str) and isinstance(on_behalf, bool)
                and method in {"widget", "account"}):
            return None
        return cls(session, version, digest, on_behalf, str(method))


def set_pending_cookie(response: Response, conn: HTTPConnection, pending: PendingConsent) -> None:
    set_visitor_cookie(response, conn, pending.encode(app_state(conn).signer),
                       PENDING_CONSENT_MAX_AGE, name=PENDING_CONSENT_COOKIE)


class PendingConsentMiddleware:
    """Records a pending consent at the first request that carries its session cookie back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        token = conn.cookies.get(PENDING_CONSENT_COOKIE)
        if token is None:
            await self.app(scope, receive, send)
            return
        await self._record(conn, token)
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # a socket handshake cannot clear a cookie
            return

        async def clearing_send(message: Message) -> None:
            # Spent, or worthless: either way the browser should not keep sending it. Unless
            # this very response sets a new one (a consent given again).
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                prefix = PENDING_CONSENT_COOKIE.encode() + b"="
                if not any(k == b"set-cookie" and v.startswith(prefix) for k, v in headers):
                    expired = Response()
                    set_visitor_cookie(expired, conn, "", 0, name=PENDING_CONSENT_COOKIE)
                    headers += [(k, v) for k, v in expired.raw_headers if k == b"set-cookie"]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, clearing_send)

    async def _record(self, conn: HTTPConnection, token: str) -> None:
        state = app_state(conn)
        pending = PendingConsent.decode(state.signer, token)
        session_hash = visitor_session_hash(conn)
        if pending is None or session_hash is None or pending.session_hash != session_hash:
            return
        # One browser's first requests may arrive together, at several processes: the store
        # records the session only if it does not exist yet, in one transaction, so exactly one
        # of them records it. A policy published in between does not change what the visitor
        # accepted: the consent is recorded as given, and the chat then asks for the new one.
        ip, agent = client_ip(conn), user_agent(conn)
        recorded = await state.store.start_visitor_session(
            session_hash, policy_version=pending.policy_version,
            policy_sha256=pending.policy_sha256, ip=ip, user_agent=agent,
            method=pending.method, on_behalf=pending.on_behalf,
        )
        if not recorded:
            return  # recorded already, by an earlier request
        log.info("visitor session started session=%s", session_hash[:12])
