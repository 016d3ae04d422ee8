"""Origins: only an exact match of the server's own origin or a listed one may write or open a
socket. Each look-alike below passes some loosened check (prefix, suffix, substring, host only,
scheme or port ignored), so weakening the comparison in any of those ways fails a test here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import InvalidStatus

from chatserver.errors import ForeignOrigin
from chatserver.web import common

from .inprocess import ALLOWED, OWN, App, receive, running_app
from .support import Server, Visitor

# Each passes one loosened comparison against https://shop.example or http://testserver.
LOOK_ALIKES = [
    "https://evilshop.example",        # suffix of the allowed host
    "https://shop.example.evil",       # prefix of the allowed origin
    "https://shop.example.evil.com",   # prefix, as a subdomain of another site
    "https://sub.shop.example",        # a subdomain (suffix with a dot)
    "http://shop.example",             # the allowed host over another scheme
    "https://shop.example:8443",       # the allowed host on another port
    "https://xshop.example/",          # contains the allowed host
    "http://testserver.evil",          # prefix of our own origin
    "http://eviltestserver",           # suffix of our own origin
    "http://testserver:81",            # our host on another port
    "https://testserver",              # our host over another scheme
    "null",                            # sandboxed frames and file: pages
    "",                                # an empty header is not "no header"
]
ACCEPTED = [ALLOWED, OWN, "HTTPS://Shop.Example"]  # origins compare without regard to case


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running_app(tmp_path) as running:
        yield running


@pytest.mark.parametrize("origin", LOOK_ALIKES)
def test_look_alike_origins_may_not_write(app: App, origin: str) -> None:
    """A POST from a look-alike origin is refused at the edge, and nothing is stored."""
    client = app.client()
    response = client.post("/api/consent", json={"policy_version": "1.01"},
                           headers={"Origin": origin})
    assert response.status_code == 403, origin
    assert response.json()["error"] == "origin_not_allowed"
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("origin", ACCEPTED)
def test_own_and_allowed_origins_may_write(app: App, origin: str) -> None:
    """The server's own origin and a listed one may write, even when the fetch is cross-site."""
    client = app.client()
    response = client.post("/api/consent", json={"policy_version": "1.01"},
                           headers={"Origin": origin, "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("origin", LOOK_ALIKES)
def test_look_alike_origins_may_not_open_a_socket(app: App, origin: str) -> None:
    """The visitor and agent sockets refuse a look-alike origin before accepting (HTTP 403)."""
    visitor = app.visitor_client()
    agent = app.staff_client("agent")
    for client, path in ((visitor, "/ws/visitor"), (agent, "/ws/agent")):
        with pytest.raises(WebSocketDisconnect) as refused:  # noqa: PT012
            with client.websocket_connect(path, headers={"Origin": origin}) as ws:
                receive(ws)
        assert refused.value.code == 1008, (path, origin)


@pytest.mark.parametrize("origin", ACCEPTED)
def test_own_and_allowed_origins_may_open_a_socket(app: App, origin: str) -> None:
    """The server's own origin and a listed one get the visitor's welcome and the agent's queue."""
    visitor = app.visitor_client()
    with visitor.websocket_connect("/ws/visitor", headers={"Origin": origin}) as ws:
        assert receive(ws)["type"] == "welcome"
    agent = app.staff_client("agent")
    with agent.websocket_connect("/ws/agent", headers={"Origin": origin}) as ws:
        assert receive(ws)["type"] == "queue"


def test_cross_site_fetch_without_origin_may_not_write(app: App) -> None:
    """`Sec-Fetch-Site: cross-site` without an Origin is refused; same-site and none pass."""
    client = app.client()
    refused = client.post("/api/consent", json={"policy_version": "1.01"},
                          headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and refused.json()["error"] == "origin_not_allowed"
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {}):
        assert client.post("/api/consent", json={"policy_version": "1.01"},
                           headers=headers).status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_every_unsafe_method_is_checked_at_the_edge(app: App, method: str) -> None:
    """Any state-changing method from a foreign origin is refused before any route runs,
    even on a path that has no handler for it."""
    client = app.visitor_client()
    for headers in ({"Origin": "https://evilshop.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = client.request(method, "/api/me", json={}, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error"] == "origin_not_allowed"
    assert client.get("/api/me").json()["customer"]["name"] == "Ada"  # nothing changed


def test_reads_are_not_refused_for_their_origin(app: App) -> None:
    """GET is safe: the edge lets it through whatever its Origin (no CSRF on reads)."""
    client = app.visitor_client()
    response = client.get("/api/me", headers={"Origin": "https://evilshop.example"})
    assert response.status_code == 200


def test_handlers_check_the_origin_too(app: App) -> None:
    """Behind the edge, the JSON body reader and the form routes check the origin themselves,
    so a route reached without the edge (or mounted elsewhere) still refuses a look-alike."""
    def conn(headers: dict[str, str]) -> Request:
        return Request({"type": "http", "method": "POST", "scheme": "http", "path": "/",
                        "query_string": b"", "app": app.main.app,
                        "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})

    for origin in LOOK_ALIKES:
        with pytest.raises(ForeignOrigin):
            common.check_origin(conn({"host": "testserver", "origin": origin}))
    with pytest.raises(ForeignOrigin):
        common.check_origin(conn({"host": "testserver", "sec-fetch-site": "cross-site"}))
    for origin in ACCEPTED:
        common.check_origin(conn({"host": "testserver", "origin": origin}))
    common.check_origin(conn({"host": "testserver"}))
    common.check_origin(conn({"host": "testserver", "sec-fetch-site": "same-site"}))


async def test_look_alike_origin_is_refused_by_a_running_server(
    make_server: Callable[..., Server],
) -> None:
    """Through uvicorn too: https://evilshop.example may neither write nor open a socket when
    https://shop.example is allowed, while https://shop.example may do both."""
    server = make_server(CHATSERVER_ALLOWED_ORIGINS=ALLOWED)
    visitor = await Visitor(server).start()
    evil = await visitor.http.post("/api/consent", json={"policy_version": "1.01"},
                                   headers={"Origin": "https://evilshop.example"})
    assert evil.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        await visitor.socket(origin="https://evilshop.example")
    assert refused.value.response.status_code == 403
    ok = await visitor.http.post("/api/consent", json={"policy_version": "1.01"},
                                 headers={"Origin": ALLOWED})
    assert ok.status_code == 200
    socket = await visitor.socket(origin=ALLOWED)
    assert (await socket.wait_type("welcome"))["type"] == "welcome"
    await socket.close()
    await visitor.aclose()


def test_under_https_our_own_origin_is_the_https_one(app: App) -> None:
    """Served over HTTPS, the page's own origin is https://host: the same host over plain HTTP
    (where anyone on the path could inject a script) may neither write nor open a socket."""
    visitor = app.visitor_client(base_url="https://testserver")
    assert visitor.post("/api/consent", json={"policy_version": "1.01"},
                        headers={"Origin": "https://testserver"}).status_code == 200
    refused = visitor.post("/api/consent", json={"policy_version": "1.01"},
                           headers={"Origin": "http://testserver"})
    assert refused.status_code == 403
    wss = "wss://testserver/ws/visitor"
    with visitor.websocket_connect(wss, headers={"Origin": "https://testserver"}) as ws:
        assert receive(ws)["type"] == "welcome"
    with pytest.raises(WebSocketDisconnect) as closed:  # noqa: PT012
        with visitor.websocket_connect(wss, headers={"Origin": "http://testserver"}) as ws:
            receive(ws)
    assert closed.value.code == 1008
