"""Random input, from hypothesis, on both sockets and on the JSON routes: every bad frame gets an
error frame (or the close its size calls for), nothing crashes, a neighbouring conversation keeps
flowing, and no request gets a 5xx.

Hypothesis cannot run async tests, so each socket test keeps one event loop (an asyncio.Runner)
across its examples and runs every example's coroutine on it. Frames are synchronised with a
`ping` after each one: the server answers frames in order, so once its `pong` is in, whatever the
fuzzed frame earned has arrived too.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from .fuzzing import FOUND_BUGS, FOUND_SOCKET_BUGS, FoundBug, LogWatch, unexplained
from .support import STAFF_PASSWORD, Agent, Server, Socket, Visitor, cookie_header, open_socket

FRAME_LIMIT = 64 * 1024
INT64 = 2**63 - 1
SOCKET_EXAMPLES = 40
HTTP_EXAMPLES = 30
FUZZ_SETTINGS = settings(
    deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
# Codes of the errors that say the frame itself was wrong; a well-formed frame may still get
# others (not_found, not_claimed, conversation_closed...), which are about the state.
PROTOCOL_CODES = {"binary_not_supported", "too_large", "invalid_json", "invalid_frame",
                  "unknown_type", "unknown_field", "invalid_field", "body_too_long"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own, as make_server starts one, exempt from rate limits."""
    srv = Server(tmp_path_factory.mktemp("fuzz") / "data",
                 env={"CHATSERVER_LIMITS_EXEMPT": "127.0.0.1"})
    srv.start()
    try:
        for name, role in (("admin", "admin"), ("agent", "agent"), ("agent2", "agent")):
            srv.add_staff(name, role)
        yield srv
    finally:
        srv.stop()


# -- what the contract says a frame should get ---------------------------------------------------

SHAPES: dict[str, dict[str, set[str]]] = {
    "visitor": {"resume": {"after_seq"}, "message": {"body", "client_msg_id"},
                "typing": {"state"}, "close": set(), "ping": set()},
    "agent": {"resume": {"conversation_id", "after_seq"},
              "message": {"conversation_id", "body", "client_msg_id"},
              "typing": {"conversation_id", "state"}, "close": {"conversation_id"},
              "claim": {"conversation_id"}, "ping": set()},
}


def _field_ok(name: str, value: Any) -> bool:
    if name == "after_seq":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if name == "state":
        return isinstance(value, bool)
    if not isinstance(value, str) or not value.strip():
        return False
    limits = {"conversation_id": 64, "client_msg_id": 100, "body": 4000}
    return len(value) <= limits[name] and not (name == "body" and "\x00" in value)


def expected(payload: str | bytes, audience: str) -> str:
    """'too_large' (close 1009), 'error' (an error frame) or 'accepted' (no protocol error)."""
    if isinstance(payload, bytes):
        return "error"
    if len(payload.encode()) > FRAME_LIMIT:
        return "too_large"
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return "error"
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return "error"
    fields = SHAPES[audience].get(data["type"])
    if fields is None or set(data) != fields | {"type"}:
        return "error"
    return "accepted" if all(_field_ok(name, data[name]) for name in fields) else "error"


# -- strategies ----------------------------------------------------------------------------------

# Integers stay within 64 bits and text free of lone surrogates here; the bugs found beyond them
# (tests/fuzzing.py) are replayed below as regression tests.
TEXT = st.text(max_size=40)
SCALARS = (st.none() | st.booleans() | st.integers(-INT64 - 1, INT64) | st.floats() | TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)
TARGET, NEIGHBOUR = "$TARGET", "$NEIGHBOUR"  # stand-ins for real conversation ids
FIELD_NAMES = ["type", "body", "client_msg_id", "after_seq", "state", "conversation_id", "cc"]
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "body": st.text(min_size=1, max_size=60) | st.just("hello"),
    "client_msg_id": st.text(min_size=1, max_size=30) | st.uuids().map(str),
    "after_seq": st.integers(0, INT64),
    "state": st.booleans(),
    "conversation_id": st.sampled_from([TARGET, NEIGHBOUR]) | st.text(max_size=70),
    "cc": TEXT,
}
FRAME_TYPES = ["resume", "message", "typing", "close", "ping", "claim", "hello", ""]


@st.composite
def shaped(draw: st.DrawFn, audience: str) -> dict[str, Any]:
    """A frame that looks right: a known type and its fields, some of them wrong or missing."""
    kind = draw(st.sampled_from(FRAME_TYPES))
    frame: dict[str, Any] = {"type": kind}
    for name in sorted(SHAPES[audience].get(kind, set())):
        choice = draw(st.sampled_from(["good", "good", "good", "wrong", "missing"]))
        if choice != "missing":
            frame[name] = draw(GOOD[name] if choice == "good" else JSON)
    if draw(st.integers(0, 9)) == 0:
        frame[draw(st.sampled_from(FIELD_NAMES) | TEXT)] = draw(JSON)
    if draw(st.integers(0, 19)) == 0:
        frame["type"] = draw(JSON)
    return frame


def _huge(n: int, ch: str, as_message: bool) -> str:
    if as_message:
        return json.dumps({"type": "message", "body": ch * n, "client_msg_id": "big"},
                          ensure_ascii=False)
    return ch * n


@dataclass(frozen=True)
class Fuzz:
    value: Any  # str or bytes sent as they are, or an object sent as JSON
    raw: bool = False
    ascii: bool = True


def fuzz_frames(audience: str) -> st.SearchStrategy[Fuzz]:
    objects = st.one_of(
        JSON,
        st.dictionaries(st.sampled_from(FIELD_NAMES) | TEXT, JSON, max_size=6),
        shaped(audience), shaped(audience), shaped(audience),
    )
    huge = st.builds(_huge, st.integers(60_000, 70_000), st.sampled_from("xé€😀"), st.booleans())
    return st.one_of(
        st.builds(Fuzz, objects, st.just(False), st.booleans()),
        st.builds(Fuzz, st.text(max_size=200) | st.binary(max_size=200) | huge, st.just(True)),
    )


def render(fuzz: Fuzz, ids: dict[str, str]) -> str | bytes:
    if fuzz.raw:
        assert isinstance(fuzz.value, (str, bytes))
        return fuzz.value

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return ids.get(value, value)
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        return value

    return json.dumps(swap(fuzz.value), ensure_ascii=fuzz.ascii)


# -- the socket harness -------------------------------------------------------------------------


async def new_visitor(server: Server, n: int) -> Visitor:
    visitor = Visitor(server)
    version = (await visitor.http.get("/api/policy")).json()["version"]
    assert (await visitor.consent(version)).status_code == 200
    response = await visitor.register(name=f"Fuzz {n}", email=f"fuzz{n}@example.com")
    assert response.status_code == 200, response.text
    return visitor


class Neighbour:
    """A conversation beside the fuzzing, claimed by `agent`: it must deliver after each example."""

    async def start(self, server: Server) -> Neighbour:
        self.visitor = await new_visitor(server, 0)
        self.visitor_socket = await self.visitor.socket()
        self.conversation_id = (await self.visitor_socket.wait_type("welcome"))["conversation_id"]
        self.agent = await Agent(server, "agent").login()
        self.agent_socket = await self.agent.socket()
        await self.agent_socket.send({"type": "claim", "conversation_id": self.conversation_id})
        await self.agent_socket.wait_type("status", conversation_id=self.conversation_id,
                                          status="active")
        self.sent = 0
        return self

    async def delivers(self) -> None:
        self.sent += 1
        tag = f"neighbour-{self.sent}"
        await self.visitor_socket.send({"type": "message", "body": tag, "client_msg_id": tag})
        await self.agent_socket.wait_type("message", timeout=2, client_msg_id=tag)
        await self.visitor_socket.wait_type("ack", timeout=2, client_msg_id=tag)

    async def close(self) -> None:
        for sock in (self.visitor_socket, self.agent_socket):
            await sock.close()
        await self.visitor.aclose()
        await self.agent.aclose()


class SocketFuzz:
    """One fuzzed socket (reopened when a frame closes it), a neighbour, and the log."""

    def __init__(self, server: Server, audience: str) -> None:
        self.server = server
        self.audience = audience
        self.log = LogWatch(server)
        self.sock: Socket | None = None
        self.ids: dict[str, str] = {}
        self.visitors = 0

    async def start(self) -> SocketFuzz:
        self.neighbour = await Neighbour().start(self.server)
        self.ids[NEIGHBOUR] = self.neighbour.conversation_id
        if self.audience == "agent":
            self.agent = await Agent(self.server, "agent2").login()
            self.target = await self._visitor()
            await self._new_target()
        else:
            self.target = await self._visitor()
        return self

    async def _visitor(self) -> Visitor:
        self.visitors += 1
        return await new_visitor(self.server, self.visitors)

    async def _new_target(self) -> None:
        """A conversation for the fuzzed agent to work on: the visitor's open one, or a new one."""
        sock = await self.target.socket()
        self.ids[TARGET] = (await sock.wait_type("welcome"))["conversation_id"]
        await sock.close()

    async def socket(self) -> Socket:
        if self.sock is None:
            if self.audience == "agent":
                self.sock = await self.agent.socket()
                await self.sock.wait_type("queue")
            else:
                self.sock = await self.target.socket()
                await self.sock.wait_type("welcome")
        return self.sock

    async def drop(self) -> None:
        if self.sock is not None:
            await self.sock.close()
            self.sock = None

    async def example(self, fuzz: Fuzz) -> None:
        payload = render(fuzz, self.ids)
        outcome = expected(payload, self.audience)
        sock = await self.socket()
        start = len(sock.frames)
        await sock.send(payload)
        if outcome == "too_large":
            self.sock = None
            code = await sock.closed_code()
            await sock.close()
            assert code in {1009, 4429}, "a frame over 64 KiB closes 1009"
        else:
            frame = json.loads(payload) if outcome == "accepted" else {}
            try:
                await sock.send({"type": "ping"})
                for _ in range(2 if frame.get("type") == "ping" else 1):
                    await sock.wait_type("pong")
            except ConnectionClosed:
                self.sock = None
                code = sock.ws.close_code
                await sock.close()
                assert code == 4429, f"the socket closed {code} after {payload[:200]!r}"
                return
            errors = [f for f in sock.frames[start:] if f.get("type") == "error"]
            if outcome == "error":
                assert errors, f"no error frame for {payload[:200]!r}"
            else:
                assert not [e for e in errors if e.get("code") in PROTOCOL_CODES], errors
                if frame.get("type") == "close":
                    await self._after_close(frame)
        await self.neighbour.delivers()
        problems = self.log.new_problems()
        assert not problems, problems

    async def _after_close(self, frame: dict[str, Any]) -> None:
        """A closed conversation takes no more messages: work on a fresh one."""
        if self.audience == "visitor":
            await self.drop()
        elif frame.get("conversation_id") == self.ids[TARGET]:
            await self._new_target()

    async def close(self) -> None:
        await self.drop()
        await self.neighbour.close()
        await self.target.aclose()
        if self.audience == "agent":
            await self.agent.aclose()


def _fuzz_socket(server: Server, audience: str) -> None:
    with asyncio.Runner() as runner:
        harness = runner.run(SocketFuzz(server, audience).start())
        try:

            @settings(FUZZ_SETTINGS, max_examples=SOCKET_EXAMPLES)
            @given(fuzz=fuzz_frames(audience))
            def example(fuzz: Fuzz) -> None:
                runner.run(harness.example(fuzz))

            example()
        finally:
            runner.run(harness.close())


def test_visitor_socket_survives_random_frames(fuzz_server: Server) -> None:
    """Random visitor frames: error frame or 1009 for each bad one, no crash, neighbour flows."""
    _fuzz_socket(fuzz_server, "visitor")


def test_agent_socket_survives_random_frames(fuzz_server: Server) -> None:
    """Random agent frames: error frame or 1009 for each bad one, no crash, neighbour flows."""
    _fuzz_socket(fuzz_server, "agent")


def test_oracle_agrees_with_the_contract_on_plain_cases() -> None:
    """The fuzzers' oracle calls well-formed frames accepted and the classic bad ones errors."""
    assert expected('{"type": "message", "body": "hi", "client_msg_id": "a"}', "visitor") == \
        "accepted"
    assert expected('{"type": "claim", "conversation_id": "cv_1"}', "agent") == "accepted"
    assert expected('{"type": "claim", "conversation_id": "cv_1"}', "visitor") == "error"
    assert expected('{"type": "resume", "after_seq": true}', "visitor") == "error"
    assert expected('{"type": "typing", "state": true, "x": 1}', "visitor") == "error"
    assert expected(b"\x00", "visitor") == "error"
    assert expected("x" * (FRAME_LIMIT + 1), "agent") == "too_large"
    assert expected("[]", "agent") == "error"


# -- JSON routes ---------------------------------------------------------------------------------

VERSION, SHA, CUSTOMER_ID, AGENT_ID = "$VERSION", "$SHA", "$CUSTOMER_ID", "$AGENT_ID"
NAME = st.text(max_size=120) | st.just("Ada Lovelace")
EMAIL = st.just("fuzz@example.com") | st.emails().map(str) | st.text(max_size=40)
PASSWORD = st.just(STAFF_PASSWORD) | st.text(max_size=40)
# Each route's fields and good-looking values for them.
ROUTES: dict[tuple[str, str, str], dict[str, st.SearchStrategy[Any]]] = {
    ("visitor", "POST", "/api/consent"): {
        "policy_version": st.just(VERSION) | st.just("1.01"), "policy_sha256": st.just(SHA),
        "on_behalf": st.booleans(), "method": st.sampled_from(["widget", "account"])},
    ("visitor", "POST", "/api/visitor"): {"name": NAME, "email": EMAIL, "company": NAME,
                                          "cc": EMAIL},
    ("visitor", "PATCH", "/api/me"): {"name": NAME, "email": EMAIL, "company": NAME,
                                      "bcc": EMAIL},
    ("anonymous", "POST", "/api/staff/login"): {
        "username": st.sampled_from(["nobody", "agent2", ""]), "password": PASSWORD},
    ("admin", "POST", "/api/admin/policies"): {
        "version": st.just(VERSION) | st.from_regex(r"\A[0-9][0-9.]{0,5}\Z"),
        "effective_date": st.just("2026-06-01") | st.dates().map(str),
        "summary": st.text(max_size=50), "text": st.text(max_size=200)},
    ("admin", "POST", "/api/admin/staff"): {
        "name": st.from_regex(r"\A[a-z]{1,12}\Z") | NAME,
        "role": st.sampled_from(["agent", "admin"]), "password": PASSWORD},
    ("admin", "PATCH", f"/api/admin/staff/{AGENT_ID}"): {
        "role": st.sampled_from(["agent", "admin", None]),
        "state": st.sampled_from(["active", "disabled", None])},
    ("admin", "POST", f"/api/admin/staff/{AGENT_ID}/password"): {"password": PASSWORD},
    ("admin", "POST", f"/api/admin/customers/{CUSTOMER_ID}/legal-hold"): {
        "hold": st.booleans()},
    ("admin", "POST", "/api/admin/purge"): {"dry_run": st.booleans()},
    ("admin", "POST", "/api/admin/search/conversations"): {
        "q": NAME, "email": EMAIL, "status": st.sampled_from(["queued", "active", "closed"]),
        "agent": st.integers(0, 2**63), "from": st.dates().map(str), "to": st.dates().map(str),
        "limit": st.integers(0, 300), "offset": st.integers(0, 2**40)},
    ("admin", "POST", "/api/admin/search/customers"): {
        "q": NAME, "limit": st.integers(0, 300), "offset": st.integers(0, 2**40)},
}


@st.composite
def bodies(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> Any:
    """Any JSON; an object of random keys; or the route's fields, some with the wrong values."""
    kind = draw(st.sampled_from(["json", "keys", "shaped", "shaped", "shaped"]))
    if kind == "json":
        return draw(JSON)
    if kind == "keys":
        return draw(st.dictionaries(st.sampled_from(sorted(fields)) | TEXT, JSON, max_size=5))
    body = {}
    for name, good in fields.items():
        choice = draw(st.sampled_from(["good", "good", "wrong", "missing"]))
        if choice != "missing":
            body[name] = draw(good if choice == "good" else JSON)
    return body


@dataclass
class HttpFuzz:
    server: Server
    visitor: httpx.Client
    admin: httpx.Client
    anonymous: httpx.Client
    ids: dict[str, str]

    def client(self, role: str) -> httpx.Client:
        return {"visitor": self.visitor, "admin": self.admin}.get(role, self.anonymous)


@pytest.fixture
def http_fuzz(fuzz_server: Server) -> Iterator[HttpFuzz]:
    """Signed-in clients for the JSON routes, and the ids their paths and bodies need."""
    url = fuzz_server.url
    with httpx.Client(base_url=url) as visitor, httpx.Client(base_url=url) as admin, \
            httpx.Client(base_url=url) as anonymous:
        policy = visitor.get("/api/policy").json()
        assert visitor.post("/api/consent",
                            json={"policy_version": policy["version"]}).status_code == 200
        assert visitor.post("/api/visitor", json={"name": "Fuzz", "email": "f@example.com"}
                            ).status_code == 200
        assert admin.post("/api/staff/login", json={"username": "admin",
                                                    "password": STAFF_PASSWORD}).status_code == 200
        staff = admin.get("/api/admin/staff").json()["staff"]
        customers = admin.get("/api/admin/customers", params={"q": "f@example.com"}).json()
        yield HttpFuzz(fuzz_server, visitor, admin, anonymous, {
            VERSION: policy["version"], SHA: policy["sha256"],
            AGENT_ID: str(next(s["id"] for s in staff if s["name"] == "agent2")),
            CUSTOMER_ID: customers["customers"][0]["id"],
        })


@pytest.mark.parametrize(("role", "method", "path"), list(ROUTES),
                         ids=[f"{m} {p}" for _, m, p in ROUTES])
def test_json_routes_never_answer_5xx(http_fuzz: HttpFuzz, role: str, method: str,
                                      path: str) -> None:
    """Random JSON bodies get a 2xx or a JSON 4xx error, never a 5xx beyond the known bugs."""
    client = http_fuzz.client(role)
    log = LogWatch(http_fuzz.server)
    url = path.replace(AGENT_ID, http_fuzz.ids[AGENT_ID]).replace(
        CUSTOMER_ID, http_fuzz.ids[CUSTOMER_ID])

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return http_fuzz.ids.get(value, value)
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        return value

    @settings(FUZZ_SETTINGS, max_examples=HTTP_EXAMPLES)
    @given(body=bodies(ROUTES[(role, method, path)]), ascii=st.booleans())
    def example(body: Any, ascii: bool) -> None:
        content = json.dumps(swap(body), ensure_ascii=ascii)
        response = client.request(method, url, content=content.encode(),
                                  headers={"Content-Type": "application/json"})
        problems = log.new_problems()
        assert not unexplained(problems), problems
        if response.status_code >= 500 and problems:
            return  # a known bug, replayed in test_known_server_bug
        assert response.status_code < 500, (content[:300], response.text)
        if response.status_code >= 400:
            error = response.json()
            assert isinstance(error.get("error"), str) and isinstance(error.get("message"), str)

    example()


# -- bugs fuzzing found, kept as regression tests ------------------------------------------------


@pytest.mark.parametrize("bug", [pytest.param(bug, id=bug.name) for bug in FOUND_BUGS])
def test_found_server_bug_stays_fixed(fuzz_server: Server, bug: FoundBug) -> None:
    """A request fuzzing once found to get a 500 gets a 4xx and logs no crash."""
    log = LogWatch(fuzz_server)
    with httpx.Client(base_url=fuzz_server.url) as client:
        version = client.get("/api/policy").json()["version"]
        if bug.role == "visitor":
            consented = client.post("/api/consent", json={"policy_version": version})
            assert consented.status_code == 200, consented.text
        if bug.role == "admin":
            signed_in = client.post("/api/staff/login", json={"username": "admin",
                                                              "password": STAFF_PASSWORD})
            assert signed_in.status_code == 200, signed_in.text
        body = bug.body.replace("{version}", version).encode() if bug.body else None
        response = client.request(bug.method, bug.path, content=body,
                                  headers={"Content-Type": "application/json"})
    problems = log.new_problems()
    assert problems == []
    assert 400 <= response.status_code < 500, response.text


_bug_visitors = itertools.count(1000)


@pytest.mark.parametrize("frame", [pytest.param(frame, id=name)
                                   for name, frame in FOUND_SOCKET_BUGS.items()])
async def test_found_socket_bug_stays_fixed(fuzz_server: Server, frame: str) -> None:
    """A frame that once crashed the socket handler gets an error frame; the socket lives on."""
    visitor = await new_visitor(fuzz_server, next(_bug_visitors))
    sock = await open_socket(fuzz_server, "/ws/visitor", cookie_header(visitor.http))
    try:
        await sock.wait_type("welcome")
        await sock.send(frame)
        await sock.send({"type": "ping"})
        await sock.wait_type("pong", timeout=3)
        assert [f for f in sock.frames if f["type"] == "error"]
    finally:
        await sock.close()
        await visitor.aclose()
