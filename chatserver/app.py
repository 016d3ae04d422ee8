"""create_app(settings): routes, middleware, error mapping and lifespan. No chat logic here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import traceback
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import audit, logformat, mail, openapi, privacy
from . import broadcast as broadcast_backends
from .consent import Policies, bundled_policy
from .errors import ChatError, ForeignOrigin, HostNotAllowed, TooLarge
from .hosts import AllowedHosts
from .hub import POLICY_CHANNEL, Hub
from .limits import Limits, SharedCounter
from .mail.compose import environment as mail_environment
from .mail.throttle import MailThrottle
from .proxies import TrustedProxies
from .sessions import Signer, hash_id, new_id
from .settings import Settings
from .sockets import agent_socket, visitor_socket
from .storage import Clock, open_store, utc_now
from .storage.base import iso
from .web import (
    account,
    admin,
    admin_privacy,
    admin_staff,
    agent,
    blocks,
    canned,
    history,
    reports,
    staff_profile,
    widget,
)
from .web import mail as mail_routes
from .web import metrics as metrics_routes
from .web.common import MAX_BODY_BYTES, AppState, app_state, asset_dir, error_response
from .web.pending_consent import PendingConsentMiddleware

log = logging.getLogger("chatserver")
access_log = logging.getLogger("chatserver.access")
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Pages the widget shows inside its frame on allowed sites; every other page refuses framing.
FRAMABLE = {"/widget", "/account"}


async def healthz(request: Request) -> Response:
    """ok, or 503 naming each part that does not answer (`database`, `broadcast`)."""
    state = app_state(request)
    failing = []
    for part, ping in (("database", state.store.ping), ("broadcast", state.broadcast.ping)):
        try:
            await ping()
        except Exception as exc:  # a monitor polls this: one line, no trace, per failure
            log.warning("health check: the %s does not answer (%s)", part, type(exc).__name__)
            failing.append(part)
    if failing:
        return JSONResponse(
            {"status": "unavailable", "failing": failing,
             "message": f"The {' and the '.join(failing)} does not answer."},
            status_code=503,
        )
    return JSONResponse({"status": "ok"})


def _csp(path: str, frame_ancestors: str) -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        f"form-action 'self'; frame-src 'self'; frame-ancestors {frame_ancestors}"
    )


def loggable_path(path: str) -> str:
    """The path as one line of log text: a decoded %0A would otherwise start a forged log line.

    Percent-encodes control characters, blanks and everything beyond ASCII (U+2028 and U+0085
    break lines in some viewers), and keeps the characters a path is usually made of."""
    return quote(path, safe="/:@!$&'()*+,;=-._~%")


def allowed_hosts(settings: Settings) -> AllowedHosts:
    """CHATSERVER_ALLOWED_HOSTS, or the default: loopback, the public URL, the allowed origins."""
    if settings.allowed_hosts:
        return AllowedHosts.parse(settings.allowed_hosts)
    urls = [settings.extra.get("public_url", ""), getattr(settings, "public_url", ""),
            *settings.allowed_origins]
    return AllowedHosts.default(u for u in urls if isinstance(u, str) and u)


# Health checks from load balancers and orchestrators often name the address they dialled; the
# answer reflects nothing of the request.
HOST_CHECK_EXEMPT = {"/healthz"}


def _relative(location: bytes) -> bytes:
    """A Location on this server, without scheme and host: a redirect never repeats a Host."""
    parts = urlsplit(location.decode("latin-1"))
    if not parts.scheme and not parts.netloc:
        return location
    local = urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))
    return local.encode("latin-1")


class EdgeMiddleware:
    """Allowed hosts, body size limit, security headers on every response, relative redirects,
    and a PII-free access log.

    The access log records method, path without its query string, status and duration: query
    strings can hold search terms or one-time tokens.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.allowed_origins = set(settings.allowed_origins)
        self.hosts = allowed_hosts(settings)
        ancestors = " ".join(["'self'", *settings.allowed_origins])
        self.widget_csp = _csp("/widget", ancestors)
        self.default_csp = _csp("/", "'none'")

    def _host_allowed(self, scope: Scope) -> bool:
        if scope["path"] in HOST_CHECK_EXEMPT:
            return True
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        return self.hosts.allows(host.decode("latin-1") if host is not None else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self._host_allowed(scope):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # the handshake gets 403
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        shown = loggable_path(path)
        started = time.perf_counter()
        status = 0
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise TooLarge("Request bodies may be at most 64 KiB.")
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, _relative(v) if k == b"location" else v)
                           for k, v in message.get("headers", []) if k != b"server"]
                present = {k.lower() for k, _ in headers}
                framable = path in FRAMABLE
                csp = self.widget_csp if framable else self.default_csp
                extra = [
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                ]
                if not framable:
                    extra.append((b"x-frame-options", b"DENY"))
                if scope.get("scheme") == "https":
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        if not self._host_allowed(scope):
            await self._refuse(scope, receive, send_with_headers, HostNotAllowed(), started)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > MAX_BODY_BYTES
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(scope, receive, send_with_headers,
                                       TooLarge("Request bodies may be at most 64 KiB."), started)
                    return
        if scope["method"] in UNSAFE_METHODS and not self._same_or_allowed(scope):
            await self._refuse(scope, receive, send_with_headers, ForeignOrigin(), started)
            return
        try:
            await self.app(scope, limited_receive, send_with_headers)
        except ClientDisconnect:
            # The client went, or was dropped for sending its body too slowly: nobody to answer,
            # nothing that went wrong here. The access line below records it (status 0).
            pass
        except Exception as exc:
            # Here rather than in Starlette's outermost handler, so the 500 carries our headers.
            # Where it happened, not the exception's text: that could quote what a user sent.
            where = "; ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                              for f in traceback.extract_tb(exc.__traceback__)[-4:])
            log.error("unhandled %s on %s %s at %s", type(exc).__name__, scope["method"], shown,
                      where)
            if status == 0:
                await JSONResponse(
                    {"error": "internal_error", "message": "Something went wrong on our side; "
                     "nothing you sent was lost."}, status_code=500,
                )(scope, receive, send_with_headers)
        finally:
            access_log.info("%s %s %s %.1fms", scope["method"], shown, status,
                            (time.perf_counter() - started) * 1000)

    def _same_or_allowed(self, scope: Scope) -> bool:
        """CSRF defence for every state-changing request: a browser names where it comes from
        (Origin, Sec-Fetch-Site); scripts that send neither are judged by their cookies."""
        headers: dict[bytes, bytes] = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1").lower()
        if not origin:
            return headers.get(b"sec-fetch-site", b"") != b"cross-site"
        scheme = "https" if scope.get("scheme") == "https" else "http"
        own = f"{scheme}://{headers.get(b'host', b'').decode('latin-1')}".lower()
        return origin == own or origin in self.allowed_origins

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: ChatError,
                      started: float) -> None:
        await JSONResponse(error.to_dict(), status_code=error.status)(scope, receive, send)
        access_log.info("%s %s %s %.1fms", scope["method"], loggable_path(scope["path"]),
                        error.status,
                        (time.perf_counter() - started) * 1000)


async def _chat_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatError)
    return error_response(request, exc)


def allowed_methods(app: Starlette, path: str) -> list[str]:
    """Every method some route serves at `path`. Starlette answers 405 with the methods of the
    first route whose path matched, though a path's methods may be spread over several routes."""
    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    error = ChatError(exc.detail if isinstance(exc.detail, str) else "Request refused.",
                      code=codes.get(exc.status_code, "http_error"))
    error.status = exc.status_code
    response = error_response(request, error)
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        methods = allowed_methods(request.app, request.url.path)
        if methods:
            response.headers["Allow"] = ", ".join(methods)
    return response


async def _print_setup_link(store: Any, settings: Settings) -> None:
    if await store.count_admins() > 0:
        return
    raw = new_id()
    expires = store.clock() + timedelta(hours=1)
    await store.create_setup_token(hash_id(raw), iso(expires))
    base = mail.config.public_url(settings)
    # Printed, not logged: the link is a one-time secret for whoever started the server.
    print(f"No admin yet. Create the first admin within an hour at:\n  {base}/setup?token={raw}",
          file=sys.stdout, flush=True)


def create_app(settings: Settings, *, clock: Clock = utc_now) -> Starlette:
    env = Environment(
        loader=FileSystemLoader(str(asset_dir("templates"))),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    templates = Jinja2Templates(env=env)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await open_store(settings.database_url, clock,
                                 pool_size=settings.database_pool_size)
        await audit.attach(store, settings)
        fanout = broadcast_backends.create(settings.broadcast_url)
        await fanout.connect()
        policies = Policies(store)
        current = await policies.ensure_default()
        if current.sha256 == bundled_policy().sha256 and settings.extra.get("worker", 0) == 0:
            # Printed like the setup link: a note for whoever runs the server, at every start.
            print(f"The privacy policy in force is the bundled sample ({current.version}). Publish "
                  "your own before going live: see README.md, 'Before going live'.", flush=True)
        hub = Hub(store, fanout)
        limits = Limits(settings, SharedCounter(fanout, settings.secret_key)
                        if fanout.shared else None)
        hub.start()
        # A version published by another process (or the CLI) counts here at once.
        fanout.subscribe(POLICY_CHANNEL, lambda _version: policies.forget())
        signer = Signer(settings.secret_key)
        mail_config = mail.from_settings(settings)
        mailer = mail.Mailer(mail_config, store, signer,
                             mail_environment(str(asset_dir("templates"))))
        mailer.on_replies_sent = hub.emailed
        app.state.chat = AppState(
            settings=settings, store=store, broadcast=fanout, limits=limits, hub=hub,
            policies=policies,
            signer=signer, templates=templates,
            mailer=mailer, mail_throttle=MailThrottle(settings),
        )
        log.info("%s", mail_config.describe())
        if mailer.enabled and not settings.public_url:
            log.warning("mail: CHATSERVER_PUBLIC_URL is not set; links in mails start with %s",
                        mail_config.public_url)
        mailer.start()
        if settings.extra.get("worker", 0) == 0:  # with --workers, one of them prints it
            await _print_setup_link(store, settings)
        purger = (
            asyncio.get_running_loop().create_task(privacy.purge_forever(store, hub, settings))
            if settings.purge_interval_seconds > 0
            else None
        )
        try:
            yield
        finally:
            await mailer.stop()
            if purger is not None:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger
            await hub.shutdown()
            await limits.stop()
            await fanout.disconnect()
            await audit.detach(store)
            await store.close()

    routes = [
        *widget.routes,
        *account.routes,
        *agent.routes,
        *admin.routes,
        *admin_privacy.routes,
        *admin_staff.routes,
        *staff_profile.routes,
        *canned.routes,
        *history.routes,
        *blocks.routes,
        *reports.routes,
        *mail_routes.routes,
        *openapi.routes,
        *metrics_routes.routes,
        Route("/healthz", healthz),
        WebSocketRoute("/ws/visitor", visitor_socket),
        WebSocketRoute("/ws/agent", agent_socket),
        Mount("/static", StaticFiles(directory=str(asset_dir("static"))), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ChatError: _chat_error,
            HTTPException: _http_error,
        },
    )
    app.add_middleware(PendingConsentMiddleware)  # inside the edge: its checks come first
    app.add_middleware(EdgeMiddleware, settings=settings)
    app.add_middleware(logformat.RequestIds)
    # Outermost: everything inside sees the client's address and scheme, not the proxy's.
    app.add_middleware(TrustedProxies, trusted=settings.trusted_proxies)
    return app
