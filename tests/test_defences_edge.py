"""The HTTP edge, in-process: security headers on every answer (errors too), framing only
where the widget needs it, no CORS, body size and media type limits, formula and search
injection, and silent sockets closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from chatserver import transcripts

from .inprocess import ALLOWED, App, receive, running_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running_app(tmp_path) as running:
        yield running


def answers(app: App) -> dict[str, object]:
    """One answer of each kind: pages, API, static, 401, 404, 405, 413, 415."""
    client = app.client()
    return {
        "page": client.get("/"),
        "policy": client.get("/policy"),
        "api": client.get("/api/policy"),
        "static": client.get("/static/widget.css"),
        "401": client.get("/api/me"),
        "404": client.get("/no/such/page"),
        "405": client.put("/api/policy"),
        "413": client.post("/api/consent", content=b"x" * (64 * 1024 + 1),
                           headers={"Content-Type": "application/json"}),
        "415": client.post("/api/consent", content=b"{}", headers={"Content-Type": "text/plain"}),
        "widget": client.get("/widget"),
        "account": client.get("/account"),
    }


def test_security_headers_on_every_answer(app: App) -> None:
    """CSP without inline code, nosniff, referrer and opener policies, permissions, and no
    server header, on pages, API, static files and errors alike."""
    for name, response in answers(app).items():
        headers = response.headers  # type: ignore[attr-defined]
        csp = headers["content-security-policy"]
        for part in ("default-src 'self'", "script-src 'self';", "style-src 'self';",
                     "object-src 'none'", "base-uri 'none'", "form-action 'self'"):
            assert part in csp, (name, part)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, name
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["referrer-policy"] == "same-origin", name
        assert headers["cross-origin-opener-policy"] == "same-origin", name
        assert headers["permissions-policy"] == "camera=(), microphone=(), geolocation=()"
        assert "server" not in headers, name
        assert "access-control-allow-origin" not in headers, name
        assert "strict-transport-security" not in headers, name  # plain HTTP here


def test_only_the_widget_and_account_pages_may_be_framed(app: App) -> None:
    """Everything refuses framing (frame-ancestors 'none' and X-Frame-Options DENY) except
    /widget and /account, which allowed origins (and we) may frame."""
    for name, response in answers(app).items():
        headers = response.headers  # type: ignore[attr-defined]
        csp = headers["content-security-policy"]
        if name in {"widget", "account"}:
            assert csp.endswith(f"frame-ancestors 'self' {ALLOWED}"), csp
            assert "x-frame-options" not in headers
        else:
            assert csp.endswith("frame-ancestors 'none'"), (name, csp)
            assert headers["x-frame-options"] == "DENY", name


def test_no_cors_even_for_an_allowed_origin(app: App) -> None:
    """A preflight or a read from an allowed embedding origin gets no CORS grant: the widget
    talks to its own origin from its frame."""
    client = app.client()
    read = client.get("/api/policy", headers={"Origin": ALLOWED})
    preflight = client.options("/api/consent", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST"})
    for response in (read, preflight):
        assert not [k for k in response.headers if k.startswith("access-control-")]


def test_body_limits(app: App) -> None:
    """Over 64 KiB is 413, whether announced by Content-Length or streamed without it;
    64 KiB itself is read."""
    client = app.client()
    exact = b'{"policy_version": "1.01", "method": "widget"}'
    exact = exact[:-1] + b" " * (64 * 1024 - len(exact)) + b"}"
    assert len(exact) == 64 * 1024
    assert client.post("/api/consent", content=exact,
                       headers={"Content-Type": "application/json"}).status_code == 200

    def chunks() -> Iterator[bytes]:
        yield b'{"policy_version": "1.01", "x": "'
        for _ in range(70):
            yield b"a" * 1024
        yield b'"}'

    streamed = client.post("/api/consent", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"] == "too_large"
    announced = client.post("/api/consent", content=b"{}", headers={
        "Content-Type": "application/json", "Content-Length": str(64 * 1024 + 1)})
    assert announced.status_code == 413
    for bad in ("-1x", "lots"):
        refused = client.post("/api/consent", content=b"{}", headers={
            "Content-Type": "application/json", "Content-Length": bad})
        assert refused.status_code in {400, 413}


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "", "application/jsonx"])
def test_json_routes_take_only_json(app: App, media: str) -> None:
    """A simple-request media type (what a cross-site form can send) is 415."""
    client = app.client()
    headers = {"Content-Type": media} if media else {}
    response = client.post("/api/consent", content=b'{"policy_version": "1.01"}',
                           headers=headers)
    assert response.status_code == 415 and "set-cookie" not in response.headers
    ok = client.post("/api/consent", content=b'{"policy_version": "1.01"}',
                     headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert ok.status_code == 200


@pytest.mark.parametrize("body", [b"{", b'{"policy_version": "\\ud800"}', b"[" * 60_000],
                         ids=["broken", "surrogate", "nested"])
def test_bad_json_is_a_clear_400(app: App, body: bytes) -> None:
    """Broken JSON, a lone surrogate or pathological nesting: 400 invalid_json, never a 500."""
    response = app.client().post("/api/consent", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_neutralised(cell: str) -> None:
    """A cell a spreadsheet would run as a formula is prefixed with an apostrophe."""
    assert transcripts.neutralise(cell) == "'" + cell
    assert transcripts.neutralise("plain " + cell) == "plain " + cell


def test_search_words_are_not_query_syntax(app: App) -> None:
    """FTS operators, quotes and wildcards in a search are plain words: every word must be
    in the conversation, none widens the match, and none is an error."""
    visitor = app.visitor_client()
    with visitor.websocket_connect("/ws/visitor") as ws:
        receive(ws)
        ws.send_json({"type": "message", "body": "my invoice is late", "client_msg_id": "m"})
        while receive(ws)["type"] != "ack":
            pass
    boss = app.staff_client("boss", "admin")
    found = boss.get("/api/admin/conversations", params={"q": "invoice"}).json()
    assert len(found["conversations"]) == 1
    quoted = boss.get("/api/admin/conversations", params={"q": '"invoice'}).json()
    assert len(quoted["conversations"]) == 1  # a stray quote is no syntax error
    for query in ('invoice OR x', "NEAR(invoice late)", "body:invoice",
                  "x OR invoice", "* ", "'; DROP TABLE messages; --"):
        response = boss.get("/api/admin/conversations", params={"q": query})
        assert response.status_code in {200, 422}, query
        if response.status_code == 200:
            assert [c for c in response.json()["conversations"]] == [], query


def test_a_silent_socket_is_closed_1001(tmp_path: Path) -> None:
    """A socket that sends nothing past CHATSERVER_SOCKET_IDLE_SECONDS is closed with 1001;
    one that pings stays."""
    with running_app(tmp_path, CHATSERVER_SOCKET_IDLE_SECONDS="0.5") as app:
        visitor = app.visitor_client()
        with visitor.websocket_connect("/ws/visitor") as ws:
            receive(ws)
            with pytest.raises(WebSocketDisconnect) as closed:
                receive(ws, timeout=5)
            assert closed.value.code == 1001
