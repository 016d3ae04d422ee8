"""Every route of the app, as anonymous, customer, agent and admin: the expected answer for each.

The routes come from the app's own route table, so a route added without a rule here fails."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route, WebSocketRoute

from chatserver.app import create_app
from chatserver.settings import load

from .support import Agent, Server, Visitor

ANY_OK = {200, 303}
ADMIN_OK = {200, 404, 409, 415, 422}  # admitted: the answer is about the request, not the role
ANON = "anonymous"
ROLES = (ANON, "customer", "agent", "admin")

# (method, path) -> expected statuses for (anonymous, customer, agent, admin)
RULES: dict[tuple[str, str], tuple[set[int], set[int], set[int], set[int]]] = {
    ("GET", "/"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/widget.js"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/widget"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/policy"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/policy/{version}"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/api/policy"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/api/openapi.json"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/cookies"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/healthz"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/account"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("POST", "/api/consent"): ({200}, {200}, {200}, {200}),
    ("POST", "/api/visitor"): ({403}, {200}, {403}, {403}),
    ("GET", "/api/session"): ({200}, {200}, {200}, {200}),  # never 401: {"session": false}
    ("GET", "/api/me"): ({401}, {200}, {401}, {401}),
    ("PATCH", "/api/me"): ({401}, {200}, {401}, {401}),
    ("DELETE", "/api/me"): ({401}, {200}, {401}, {401}),
    ("GET", "/api/me/export"): ({401}, {200}, {401}, {401}),
    ("POST", "/api/consent/withdraw"): ({401}, {200}, {401}, {401}),
    ("GET", "/agent"): ({200}, {200}, {200}, {200}),  # a sign-in page when signed out
    ("GET", "/admin"): ({200}, {200}, {403}, {200}),
    ("GET", "/login"): ({200}, {200}, {303}, {303}),  # the form; signed in, on to /agent
    ("GET", "/staff/login"): ({200}, {200}, {303}, {303}),
    ("POST", "/staff/login"): ({403}, {403}, {403}, {403}),  # no CSRF token
    ("POST", "/staff/logout"): ({403}, {403}, {403}, {403}),
    ("POST", "/api/staff/login"): ({422}, {422}, {422}, {422}),  # empty body
    ("POST", "/api/staff/logout"): ({200}, {200}, {200}, {200}),
    ("GET", "/api/staff/me"): ({401}, {401}, {200}, {200}),
    ("PATCH", "/api/staff/me"): ({401}, {401}, {422}, {422}),  # empty body: nothing to change
    ("GET", "/api/staff/colleagues"): ({401}, {401}, {200}, {200}),
    ("GET", "/setup"): ({404}, {404}, {404}, {404}),  # no valid token
    ("POST", "/setup"): ({403}, {403}, {403}, {403}),
    # Mail: this server has no SMTP, so asking for mail answers 404 mail_disabled.
    ("POST", "/api/account/link"): ({404}, {404}, {404}, {404}),
    ("POST", "/api/account/terminate-link"): ({404}, {404}, {404}, {404}),
    ("POST", "/api/me/transcript-email"): ({401}, {404}, {401}, {401}),
    ("GET", "/account/link"): ({400}, {400}, {400}, {400}),  # no token
    ("POST", "/account/link"): ({403}, {403}, {403}, {403}),  # no CSRF token
    ("GET", "/chat/link"): ({400}, {400}, {400}, {400}),  # no held link
    ("POST", "/chat/link"): ({403}, {403}, {403}, {403}),  # no CSRF token
    ("GET", "/account/terminate"): ({400}, {400}, {400}, {400}),
    ("POST", "/account/terminate"): ({403}, {403}, {403}, {403}),  # no CSRF token
    ("GET", "/chat"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    ("GET", "/api/mail"): (ANY_OK, ANY_OK, ANY_OK, ANY_OK),
    # Gated by network (CHATSERVER_METRICS_ALLOW, loopback here), not by role.
    ("GET", "/metrics"): ({200}, {200}, {200}, {200}),
    # Team tools: staff only; a conversation that does not exist is 404 to every agent.
    ("GET", "/api/agent/canned"): ({401}, {401}, {200}, {200}),
    ("GET", "/api/agent/conversations/{conversation_id}/history"): ({401}, {401}, {404}, {404}),
    ("GET", "/api/agent/conversations/{conversation_id}/history/{earlier_id}"):
        ({401}, {401}, {404}, {404}),
    ("POST", "/api/agent/conversations/{conversation_id}/block"): ({401}, {401}, {404, 422},
                                                                   {404, 422}),
}
ADMIN_ONLY = ({401}, {401}, {403}, ADMIN_OK)
SKIPPED = {"/ws/visitor", "/ws/agent"}  # sockets: tests/test_socket_abuse.py and friends
DESTRUCTIVE = {("DELETE", "/api/me"), ("POST", "/api/consent/withdraw"),
               ("POST", "/api/staff/logout")}


def _routes(tmp_path: Path) -> list[tuple[str, str]]:
    app = create_app(load({"data_dir": str(tmp_path / "routes")}))
    found = []
    for route in app.routes:
        if isinstance(route, (Mount, WebSocketRoute)):
            continue
        assert isinstance(route, Route)
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD":
                found.append((method, route.path))
    return found


def _expected(method: str, path: str) -> tuple[set[int], ...]:
    if (method, path) in RULES:
        return RULES[(method, path)]
    if path.startswith("/api/admin/"):
        return ADMIN_ONLY
    raise AssertionError(f"no access rule for {method} {path}: add one to RULES")


def _concrete(path: str) -> str:
    values = {"version": "1.01", "conversation_id": "cv_missing", "customer_id": "cu_missing",
              "staff_id": "999999", "earlier_id": "cv_missing2", "canned_id": "999999",
              "kind": "per-day"}
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


def test_every_route_has_a_rule(tmp_path: Path) -> None:
    """A new route without an access rule fails here."""
    for method, path in _routes(tmp_path):
        if path not in SKIPPED:
            _expected(method, path)


@pytest.fixture
async def clients(server: Server) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    customer = await Visitor(server).start()
    agent = await Agent(server, "agent").login()
    admin = await Agent(server, "admin").login()
    anonymous = httpx.AsyncClient(base_url=server.url, timeout=10)
    yield {ANON: anonymous, "customer": customer.http, "agent": agent.http,
           "admin": admin.http}
    for c in (anonymous, customer.http, agent.http, admin.http):
        await c.aclose()


async def _fresh(server: Server, role: str) -> httpx.AsyncClient:
    if role == "customer":
        return (await Visitor(server).start()).http
    if role in {"agent", "admin"}:
        return (await Agent(server, role).login()).http
    return httpx.AsyncClient(base_url=server.url, timeout=10)


async def test_role_matrix(server: Server, clients: dict[str, httpx.AsyncClient],
                           tmp_path: Path) -> None:
    """Each route answers each kind of user as its rule says; nothing answers 500."""
    bodies = {"/api/visitor": {"name": "Matrix", "email": "matrix@example.com", "company": ""},
              "/api/me": {"company": "Matrix Inc"}, "/api/consent": {"policy_version": "1.01"}}
    failures = []
    for method, path in _routes(tmp_path):
        if path in SKIPPED:
            continue
        expected = _expected(method, path)
        for role, allowed in zip(ROLES, expected, strict=True):
            fresh = (method, path) in DESTRUCTIVE
            client = await _fresh(server, role) if fresh else clients[role]
            kwargs = {}
            if method in {"POST", "PATCH", "PUT"}:
                kwargs["json"] = bodies.get(path, {})
            saved = httpx.Cookies(client.cookies)
            response = await client.request(method, _concrete(path), **kwargs)
            client.cookies = saved  # a request must not change who the next one is
            if fresh:
                await client.aclose()
            if response.status_code not in allowed:
                failures.append(f"{role} {method} {path}: {response.status_code} "
                                f"(expected {sorted(allowed)})")
    assert failures == []
