"""The nginx example in docs/deploy.md, run by a real nginx with TLS on a non-default port."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from chatserver import broadcast

from .proxy import Nginx, client_tls
from .support import STAFF_PASSWORD, Server, Socket

# What docs/deploy.md tells operators to set beside the nginx example.
DOCUMENTED = {"CHATSERVER_TRUSTED_PROXIES": "127.0.0.1"}
SHARED_SECRET = "one-secret-for-both-processes-behind-nginx-0123456789"
REDIS_URL = "redis://127.0.0.1:6379/14"


def _redis_broadcast_available() -> bool:
    try:
        broadcast.create(REDIS_URL)
    except (ValueError, ImportError):
        return False
    return True


@pytest.fixture(params=[
    "one process",
    pytest.param("two processes", marks=pytest.mark.skipif(
        not _redis_broadcast_available(),
        reason="a chat across two processes needs the Redis broadcast (issue 10, step 1)")),
])
def proxied(request: pytest.FixtureRequest, make_server: Callable[..., Server], tmp_path: Path
            ) -> Iterator[tuple[Server, Nginx]]:
    """The documented nginx in front of one process, or of two on one database sharing the
    Redis broadcast (the visitor's and the agent's sockets then land on different processes)."""
    shared = {"CHATSERVER_SECRET_KEY": SHARED_SECRET, "CHATSERVER_BROADCAST_URL": REDIS_URL}
    server = make_server(**DOCUMENTED, **(shared if request.param == "two processes" else {}))
    server.add_staff("agent", "agent")
    more = []
    if request.param == "two processes":
        more.append(make_server(**DOCUMENTED, **shared,
                                CHATSERVER_DATABASE_URL=server.database_url).port)
    nginx = Nginx(tmp_path / "nginx", upstream_port=server.port, more_upstream_ports=more).start()
    yield server, nginx
    nginx.stop()


@pytest.fixture
def two_behind_nginx(make_server: Callable[..., Server], tmp_path: Path
                     ) -> Iterator[tuple[list[Server], Nginx]]:
    """Two server processes on one database behind the documented upstream."""
    first = make_server(**DOCUMENTED, CHATSERVER_SECRET_KEY=SHARED_SECRET)
    second = make_server(**DOCUMENTED, CHATSERVER_SECRET_KEY=SHARED_SECRET,
                         CHATSERVER_DATABASE_URL=first.database_url)
    nginx = Nginx(tmp_path / "nginx", upstream_port=first.port,
                  more_upstream_ports=[second.port]).start()
    yield [first, second], nginx
    nginx.stop()


def _cookies(client: httpx.AsyncClient) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)


async def _socket(nginx: Nginx, path: str, client: httpx.AsyncClient, origin: str) -> Socket:
    assert nginx.cert is not None
    ws = await connect(f"wss://localhost:{nginx.port}{path}", ssl=client_tls(nginx.cert),
                       origin=origin, additional_headers={"Cookie": _cookies(client)},  # type: ignore[arg-type]
                       open_timeout=5)
    return Socket(ws)


async def test_documented_nginx_example_carries_a_whole_chat(
    proxied: tuple[Server, Nginx],
) -> None:
    """Behind the documented nginx (TLS, port not 443) consent, form, both sockets, a reply,
    export and erasure all work as a browser on the server's own origin sends them."""
    _, nginx = proxied
    assert nginx.cert is not None and nginx.port != 443
    base = f"https://localhost:{nginx.port}"
    # What a browser sends from a page of the chat server itself (the widget's frame).
    browser = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
    tls = client_tls(nginx.cert)
    async with (
        httpx.AsyncClient(base_url=base, verify=tls, headers=browser, timeout=10) as visitor,
        httpx.AsyncClient(base_url=base, verify=tls, headers=browser, timeout=10) as staff,
    ):
        page = await visitor.get("/widget", headers={"Accept": "text/html"})
        assert page.status_code == 200
        # X-Forwarded-Proto reached the server: it knows it is served over HTTPS.
        assert "strict-transport-security" in page.headers

        consent = await visitor.post("/api/consent", json={"policy_version": "1.01"})
        assert consent.status_code == 200, consent.text  # `Host $host` made this 403
        cookie = consent.headers["set-cookie"].lower()
        for attribute in ("secure", "samesite=none", "partitioned", "httponly"):
            assert attribute in cookie, attribute
        form = await visitor.post("/api/visitor", json={"name": "Ada Proxy",
                                                        "email": "ada.proxy@example.com",
                                                        "company": ""})
        assert form.status_code == 200, form.text
        me = await visitor.get("/api/me")
        assert me.status_code == 200 and me.json()["customer"]["name"] == "Ada Proxy"

        foreign = await visitor.patch("/api/me", json={"company": "x"},
                                      headers={"Origin": "https://evil.example",
                                               "Sec-Fetch-Site": "cross-site"})
        assert foreign.status_code == 403 and foreign.json()["error"] == "origin_not_allowed"

        login = await staff.post("/api/staff/login",
                                 json={"username": "agent", "password": STAFF_PASSWORD})
        assert login.status_code == 200, login.text
        assert "__Host-chat_staff" in {c.name for c in staff.cookies.jar}  # HTTPS detected

        vs = await _socket(nginx, "/ws/visitor", visitor, base)
        welcome = await vs.wait_type("welcome")
        conversation_id = welcome["conversation_id"]
        hello = uuid.uuid4().hex
        await vs.send({"type": "message", "body": "Hello through the proxy",
                       "client_msg_id": hello})
        assert (await vs.wait_type("ack", client_msg_id=hello))["seq"] == 1

        ags = await _socket(nginx, "/ws/agent", staff, base)
        await ags.wait_for(lambda f: f["type"] == "queue" and any(
            c["conversation_id"] == conversation_id for c in f["conversations"]))
        await ags.send({"type": "claim", "conversation_id": conversation_id})
        await ags.wait_type("status", conversation_id=conversation_id, status="active")
        await ags.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
        first = await ags.wait_type("message", seq=1)
        assert first["body"] == "Hello through the proxy"
        reply = uuid.uuid4().hex
        await ags.send({"type": "message", "conversation_id": conversation_id,
                        "body": "Answered through the proxy", "client_msg_id": reply})
        got = await vs.wait_for(lambda f: f["type"] == "message" and f["sender"] == "agent")
        assert got["body"] == "Answered through the proxy"
        await ags.close()

        export = await visitor.get("/api/me/export")
        assert export.status_code == 200
        bodies = [m["body"] for c in export.json()["conversations"] for m in c["messages"]]
        assert "Answered through the proxy" in bodies

        erased = await visitor.delete("/api/me")
        assert erased.status_code == 200, erased.text
        assert await vs.closed_code() == 4401
    assert "[error]" not in nginx.log()


async def test_two_processes_behind_nginx_record_the_browsers_address(
    two_behind_nginx: tuple[list[Server], Nginx],
) -> None:
    """Behind the documented nginx and its upstream of two processes, requests reach both, the
    recorded client address is the browser's (not nginx's, not one the browser wrote into
    X-Forwarded-For itself), nginx's request id reaches the server's log, and /metrics is not
    served through the proxy."""
    servers, nginx = two_behind_nginx
    assert nginx.cert is not None
    base = f"https://localhost:{nginx.port}"
    browser_address = "127.0.0.2"  # another loopback address than nginx's own, 127.0.0.1
    transport = httpx.AsyncHTTPTransport(local_address=browser_address,
                                         verify=client_tls(nginx.cert))
    headers = {"Origin": base, "Sec-Fetch-Site": "same-origin",
               "X-Forwarded-For": "203.0.113.99", "X-Real-IP": "203.0.113.98"}
    async with httpx.AsyncClient(base_url=base, transport=transport, headers=headers,
                                 timeout=10) as visitor:
        assert (await visitor.post("/api/consent", json={"policy_version": "1.01"})
                ).status_code == 200
        form = await visitor.post("/api/visitor", json={"name": "Nora Nginx",
                                                        "email": "nora@example.com",
                                                        "company": ""})
        assert form.status_code == 200, form.text
        answers = [await visitor.get("/api/me") for _ in range(6)]
        assert all(a.status_code == 200 for a in answers)
        request_id = answers[-1].headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id, kept
        export = (await visitor.get("/api/me/export")).json()
        assert {r["ip"] for r in export["access_records"]} == {browser_address}
        assert {c["ip"] for c in export["consents"]} == {browser_address}
        assert (await visitor.get("/metrics")).status_code == 404
    for server in servers:  # the upstream spread the requests over both processes
        assert "GET /api/me 200" in server.log(), server.log()[-2000:]
    assert any(f"request={request_id}" in server.log() for server in servers)
    assert "[error]" not in nginx.log()
