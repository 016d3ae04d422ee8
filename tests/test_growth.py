"""What a client that never signs in can make the server store is bounded: consents per address,
sessions that never give details, the visitor cookie's lifetime, and a disk running low."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from itsdangerous import URLSafeTimedSerializer

from .support import Server, Visitor, cookie_header, open_socket


def _count(server: Server, table: str) -> int:
    return int(server.query(f"SELECT COUNT(*) FROM {table}")[0][0])


async def test_consents_are_rate_limited_per_address(make_server: Callable[..., Server]) -> None:
    """Past CHATSERVER_CONSENTS_PER_IP_HOUR consents from one address, POST /api/consent gets a
    429 `rate_limited` and stores nothing more; an exempt address is not limited."""
    server = make_server(CHATSERVER_CONSENTS_PER_IP_HOUR="5")
    async with httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(5):
            http.cookies.clear()
            ok = await http.post("/api/consent", json={"policy_version": "1.01"})
            assert ok.status_code == 200, ok.text
        sessions, consents = _count(server, "visitor_sessions"), _count(server, "consents")
        for _ in range(20):
            http.cookies.clear()
            refused = await http.post("/api/consent", json={"policy_version": "1.01"})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "rate_limited" and refused.json()["message"]
            assert "set-cookie" not in refused.headers
    assert (_count(server, "visitor_sessions"), _count(server, "consents")) == (sessions,
                                                                                consents)
    exempt = make_server(CHATSERVER_CONSENTS_PER_IP_HOUR="1", CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    async with httpx.AsyncClient(base_url=exempt.url) as http:
        for _ in range(5):
            http.cookies.clear()
            assert (await http.post("/api/consent",
                                    json={"policy_version": "1.01"})).status_code == 200


async def test_sessions_that_never_give_details_are_purged_within_hours(
        make_server: Callable[..., Server]) -> None:
    """A session that consented but never filled in the pre-chat form is gone at the next purge
    after CHATSERVER_UNFINISHED_SESSION_HOURS (0 here: at once), with its consents; a visitor who
    gave details keeps theirs."""
    server = make_server(CHATSERVER_UNFINISHED_SESSION_HOURS="0",
                         CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    bare = Visitor(server)
    assert (await bare.consent()).status_code == 200
    await bare.http.get("/api/session")  # the cookie comes back: the session is recorded
    chatting = await Visitor(server).start(name="Kept Customer", email="kept@example.com")
    done = server.cli("purge")
    assert done.returncode == 0, done.stderr
    assert "1 sessions without details" in done.stdout
    assert (await bare.http.get("/api/me")).status_code == 401
    assert (await chatting.http.get("/api/me")).status_code == 200
    assert _count(server, "visitor_sessions") == 1 and _count(server, "consents") == 1
    await bare.aclose()
    await chatting.aclose()


async def test_a_visitor_cookie_past_its_max_age_is_no_session(server: Server) -> None:
    """The server enforces the visitor cookie's 30 days itself: the same signed session id with a
    signature 31 days old is refused everywhere, as if there were no cookie."""
    visitor = await Visitor(server).start(name="Old Cookie", email="old@example.com")
    cookie = next(c.value for c in visitor.http.cookies.jar if c.name == "chat_session")
    secret = (server.data_dir / "secret.key").read_text().strip()
    serializer = URLSafeTimedSerializer(secret, salt="chatserver.chat_session")
    raw = serializer.loads(cookie)
    signer = serializer.make_signer("chatserver.chat_session")
    signer.get_timestamp = lambda: int(time.time()) - 31 * 24 * 3600  # type: ignore[method-assign]
    stale = signer.sign(serializer.dump_payload(raw)).decode()
    assert serializer.loads(stale) == raw  # the same session, validly signed, only older
    async with httpx.AsyncClient(base_url=server.url,
                                 headers={"Cookie": f"chat_session={stale}"}) as http:
        assert (await http.get("/api/me")).status_code == 401
        assert (await http.get("/api/me/export")).status_code == 401
    socket = await open_socket(server, "/ws/visitor", f"chat_session={stale}")
    assert await socket.closed_code() == 4401
    assert (await visitor.http.get("/api/me")).status_code == 200  # the genuine cookie works
    await visitor.aclose()


async def test_low_disk_refuses_new_visitors_while_chats_go_on(
        make_server: Callable[..., Server]) -> None:
    """Below CHATSERVER_MIN_FREE_BYTES free (set absurdly high here), a new consent or pre-chat
    form gets a clear 503 `storage_low` and stores nothing, while a customer already chatting
    keeps sending and receiving."""
    first = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    chatting = await Visitor(first).start(name="Early Bird", email="early@example.com")
    half = Visitor(first)
    assert (await half.consent()).status_code == 200  # consented, form not yet filled in
    await half.http.get("/api/session")  # the cookie comes back: the session is recorded
    cookies, half_cookies = cookie_header(chatting.http), cookie_header(half.http)
    first.stop()

    server = Server(first.data_dir, env={"CHATSERVER_LIMITS_EXEMPT": "127.0.0.1",
                                         "CHATSERVER_MIN_FREE_BYTES": str(10**18)},
                    port=first.port)
    server.start()
    try:
        sessions = _count(server, "visitor_sessions")
        async with httpx.AsyncClient(base_url=server.url) as http:
            refused = await http.post("/api/consent", json={"policy_version": "1.01"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "storage_low" and refused.json()["message"]
            assert "set-cookie" not in refused.headers
        async with httpx.AsyncClient(base_url=server.url,
                                     headers={"Cookie": half_cookies}) as http:
            form = await http.post("/api/visitor", json={"name": "Late", "email": "l@example.com"})
            assert form.status_code == 503 and form.json()["error"] == "storage_low"
        assert _count(server, "visitor_sessions") == sessions
        assert _count(server, "customers") == 1

        socket = await open_socket(server, "/ws/visitor", cookies)
        await socket.wait_type("welcome")
        await socket.send({"type": "message", "body": "still chatting", "client_msg_id": "a"})
        assert (await socket.wait_type("ack", client_msg_id="a"))["seq"] >= 1
        await socket.close()
        assert "disk space low" in server.log()
    finally:
        server.stop()
        await chatting.aclose()
        await half.aclose()
