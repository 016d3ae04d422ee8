"""The customer's HTTP API: policy, consent, the pre-chat form, /api/me, and what cookies hold."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from .support import STAFF_PASSWORD, Agent, Server, Visitor, cookie_header, open_socket

BUNDLED = Path(__file__).resolve().parent.parent / "chatserver" / "bundled" / "privacy-policy-1.01.md"
VALID = {"name": "Grace Hopper", "email": "grace@example.com", "company": "Navy"}


def _uid() -> str:
    return uuid.uuid4().hex[:12]


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, attributes with lower-cased names) of one Set-Cookie header."""
    first, *rest = header.split(";")
    name, _, value = first.strip().partition("=")
    attrs: dict[str, str] = {}
    for part in rest:
        key, _, val = part.strip().partition("=")
        attrs[key.strip().lower()] = val.strip()
    return name, value, attrs


def cookie_from(response: httpx.Response, name: str) -> tuple[str, dict[str, str]] | None:
    for header in set_cookies(response):
        got, value, attrs = parse_set_cookie(header)
        if got == name:
            return value, attrs
    return None


def _b64_variants(part: str) -> Iterator[bytes]:
    padded = part + "=" * (-len(part) % 4)
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            yield decode(padded)
        except (ValueError, TypeError):
            pass


def decodings(value: str) -> list[bytes]:
    """Every way one might read a cookie value: raw, URL-decoded, each part base64 and zlib."""
    texts = {value, unquote(value), value.strip('"'), unquote(value.strip('"'))}
    out: list[bytes] = [t.encode() for t in texts]
    for text in texts:
        compressed = text.startswith(".")
        for part in text.split("."):
            if not part:
                continue
            for raw in _b64_variants(part):
                out.append(raw)
                if compressed or raw[:1] == b"x":
                    try:
                        out.append(zlib.decompress(raw))
                    except zlib.error:
                        pass
    return out


async def _new_client(server: Server, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=10, **kw)


@pytest.fixture
async def fresh(server: Server) -> AsyncIterator[Visitor]:
    """A visitor who has done nothing yet."""
    v = Visitor(server)
    yield v
    await v.aclose()


@pytest.fixture
async def consented(server: Server) -> AsyncIterator[Visitor]:
    """A visitor who accepted the policy but has not filled the pre-chat form."""
    v = Visitor(server)
    assert (await v.consent()).status_code == 200
    yield v
    await v.aclose()


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# -- the policy --------------------------------------------------------------------------------


async def test_api_policy_serves_the_bundled_policy(server: Server) -> None:
    """GET /api/policy gives version 1.01, its date, the sha256 of the bundled text, and HTML."""
    async with await _new_client(server) as client:
        response = await client.get("/api/policy")
    assert response.status_code == 200
    policy = response.json()
    assert {"version", "effective_date", "summary", "sha256", "html"} <= set(policy)
    assert policy["version"] == "1.01"
    assert policy["effective_date"] == "2018-02-27"
    assert policy["sha256"] == hashlib.sha256(BUNDLED.read_bytes()).hexdigest()
    assert isinstance(policy["summary"], str) and policy["summary"]
    assert "<" in policy["html"] and len(policy["html"]) > 200


async def test_no_cookie_before_consent(server: Server) -> None:
    """The demo page, widget, policy and cookie pages set no cookie before the visitor consents."""
    async with await _new_client(server) as client:
        for path in ("/", "/widget", "/widget.js", "/api/policy", "/policy", "/policy/1.01",
                     "/cookies"):
            response = await client.get(path, headers={"Accept": "text/html"})
            assert response.status_code == 200, path
            assert set_cookies(response) == [], (path, set_cookies(response))
        assert len(client.cookies.jar) == 0


# -- consent -----------------------------------------------------------------------------------


async def test_consent_sets_a_locked_down_session_cookie(fresh: Visitor) -> None:
    """POST /api/consent records consent and sets chat_session with HttpOnly, SameSite and Path=/."""
    response = await fresh.consent()
    assert response.status_code == 200, response.text
    assert response.json()["policy_version"] == "1.01"
    assert response.json()["given_at"]
    found = cookie_from(response, "chat_session")
    assert found is not None, set_cookies(response)
    value, attrs = found
    assert value
    assert "httponly" in attrs
    assert attrs.get("samesite", "").lower() in {"lax", "strict"}
    assert attrs.get("path") == "/"


async def test_consent_with_sha256_of_the_shown_text_is_accepted(server: Server, fresh: Visitor
                                                                 ) -> None:
    """Sending the sha256 of the policy text that was shown is accepted."""
    digest = hashlib.sha256(BUNDLED.read_bytes()).hexdigest()
    response = await fresh.consent(policy_sha256=digest)
    assert response.status_code == 200, response.text
    assert cookie_from(response, "chat_session") is not None


async def test_consent_to_an_old_version_is_refused(fresh: Visitor) -> None:
    """Consent to a version that is not the current one is 409 policy_outdated, and sets no cookie."""
    for version in ("1.00", "2.0", "1.01 ", ""):
        response = await fresh.consent(version)
        _error(response, 409, "policy_outdated")
        assert set_cookies(response) == []


async def test_consent_to_a_different_text_is_refused(fresh: Visitor) -> None:
    """Consent naming the right version but another text's sha256 is 409, with no cookie."""
    response = await fresh.consent(policy_sha256="0" * 64)
    _error(response, 409, "policy_outdated")
    assert set_cookies(response) == []


async def test_consent_from_a_foreign_origin_is_refused(server: Server) -> None:
    """A browser POST to /api/consent from another site's Origin gets 403 origin_not_allowed."""
    async with await _new_client(server) as client:
        response = await client.post("/api/consent", json={"policy_version": "1.01"},
                                     headers={"Origin": "https://evil.example"})
        _error(response, 403, "origin_not_allowed")
        assert set_cookies(response) == []
        own = await client.post("/api/consent", json={"policy_version": "1.01"},
                                headers={"Origin": server.origin})
        assert own.status_code == 200, own.text


async def test_consent_with_unknown_field_is_refused(fresh: Visitor) -> None:
    """An unexpected field in the consent body is 422 unknown_field."""
    response = await fresh.consent(extra_field="x")
    body = _error(response, 422, "unknown_field")
    assert body["field"] == "extra_field"


# -- the pre-chat form -------------------------------------------------------------------------


async def test_visitor_without_consent_is_refused(fresh: Visitor) -> None:
    """POST /api/visitor before any consent is 403 consent_required."""
    _error(await fresh.register(), 403, "consent_required")


@pytest.mark.parametrize("extra", [{"cc": "eve@example.com"}, {"bcc": "eve@example.com"},
                                   {"CC": "eve@example.com"}, {"Bcc": ["eve@example.com"]},
                                   {"cc": None}, {"cc": ""}])
async def test_cc_fields_are_refused(consented: Visitor, extra: dict[str, Any]) -> None:
    """Any cc or bcc field, in any letter case, is 422 cc_not_allowed."""
    response = await consented.http.post("/api/visitor", json={**VALID, **extra})
    _error(response, 422, "cc_not_allowed")


@pytest.mark.parametrize("email", ["a@b.co, c@d.co", "a@b.co;c@d.co", "a@b.co c@d.co",
                                   "a@b.co,c@d.co", "a@b.co\nBcc: c@d.co", "a@b.co,"])
async def test_second_address_is_refused(consented: Visitor, email: str) -> None:
    """An email field with a second address is 422 cc_not_allowed."""
    response = await consented.http.post("/api/visitor", json={**VALID, "email": email})
    _error(response, 422, "cc_not_allowed")


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@b.co", "a@b", "", "a@b..co", 42])
async def test_invalid_email_names_the_field(consented: Visitor, email: Any) -> None:
    """A malformed email is 422 with field email."""
    response = await consented.http.post("/api/visitor", json={**VALID, "email": email})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "email"


@pytest.mark.parametrize(("field", "value"), [("name", ""), ("name", "   "), ("name", "x" * 101),
                                              ("name", 7), ("company", "c" * 201)])
async def test_bad_name_or_company_names_the_field(consented: Visitor, field: str, value: Any
                                                   ) -> None:
    """An empty or over-long name (max 100) or company (max 200) is 422 naming that field."""
    response = await consented.http.post("/api/visitor", json={**VALID, field: value})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["error"]


async def test_longest_allowed_values_are_accepted(consented: Visitor) -> None:
    """A 100-character name and a 200-character company are still accepted."""
    response = await consented.http.post(
        "/api/visitor", json={"name": "n" * 100, "email": "long@example.com", "company": "c" * 200}
    )
    assert response.status_code == 200, response.text
    assert response.json()["customer"]["name"] == "n" * 100


async def test_unknown_visitor_field_is_refused(consented: Visitor) -> None:
    """A field the pre-chat form does not have is 422 unknown_field."""
    response = await consented.http.post("/api/visitor", json={**VALID, "phone": "123"})
    body = _error(response, 422, "unknown_field")
    assert body["field"] == "phone"


async def test_non_json_body_is_refused(consented: Visitor) -> None:
    """A form-encoded or text body to a JSON route is refused with unsupported_media_type."""
    for headers, content in (
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"name=a&email=a%40b.co"),
        ({"Content-Type": "text/plain"}, json.dumps(VALID).encode()),
        ({}, json.dumps(VALID).encode()),
    ):
        response = await consented.http.post("/api/visitor", content=content, headers=headers)
        assert response.status_code == 415, response.text
        assert response.json()["error"] == "unsupported_media_type"


async def test_malformed_json_is_400(consented: Visitor) -> None:
    """A body that is not valid JSON is 400 invalid_json."""
    for content in (b"{", b"{'name': 'x'}", b"\xff\xfe", b"[" * 100000):
        response = await consented.http.post(
            "/api/visitor", content=content[:60000], headers={"Content-Type": "application/json"}
        )
        _error(response, 400, "invalid_json")


async def test_body_over_64_kib_is_413(consented: Visitor) -> None:
    """A body over 64 KiB is 413, whether announced by Content-Length or streamed in chunks."""
    big = json.dumps({**VALID, "company": "x" * (65 * 1024)}).encode()
    response = await consented.http.post("/api/visitor", content=big,
                                         headers={"Content-Type": "application/json"})
    _error(response, 413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    streamed = await consented.http.post("/api/visitor", content=chunks(),
                                         headers={"Content-Type": "application/json"})
    _error(streamed, 413, "too_large")
    # The session is still usable afterwards.
    assert (await consented.register()).status_code == 200


# -- /api/me -----------------------------------------------------------------------------------


async def test_me_without_cookie_is_401(fresh: Visitor) -> None:
    """GET /api/me with no session is 401."""
    response = await fresh.http.get("/api/me")
    assert response.status_code == 401
    assert response.json()["error"]


async def test_me_after_consent_and_after_the_form(consented: Visitor) -> None:
    """After consent alone the customer is null; after the pre-chat form it holds the fields."""
    before = await consented.http.get("/api/me")
    assert before.status_code == 200
    assert before.json()["customer"] is None
    assert before.json()["consent"]["policy_version"] == "1.01"
    assert before.json()["consent"]["current"] is True

    name, email = f"Me {_uid()}", f"me-{_uid()}@example.com"
    saved = await consented.register(name=name, email=email, company="Me Ltd")
    assert saved.status_code == 200, saved.text
    assert saved.json()["customer"] == {"name": name, "email": email, "company": "Me Ltd"}
    after = await consented.http.get("/api/me")
    assert after.json()["customer"] == {"name": name, "email": email, "company": "Me Ltd"}


async def test_reposting_the_form_corrects_the_customer(server: Server, admin: Agent) -> None:
    """A second /api/visitor corrects the same session's customer; new sockets use the new name."""
    v = Visitor(server)
    old_name, new_name = f"Old {_uid()}", f"New {_uid()}"
    await v.start(name=old_name, email=f"old-{_uid()}@example.com")
    cookie_before = cookie_header(v.http)

    first = await v.socket()
    welcome = await first.wait_type("welcome")
    await first.send({"type": "message", "body": "before the correction", "client_msg_id": "a"})
    before = await first.wait_type("message", client_msg_id="a")
    assert before["author"] == old_name
    await first.close()

    new_email = f"new-{_uid()}@example.com"
    corrected = await v.register(name=new_name, email=new_email, company="New Co")
    assert corrected.status_code == 200, corrected.text
    assert set_cookies(corrected) == []  # the same session, no new cookie
    assert cookie_header(v.http) == cookie_before
    me = (await v.http.get("/api/me")).json()
    assert me["customer"] == {"name": new_name, "email": new_email, "company": "New Co"}

    second = await v.socket()
    again = await second.wait_type("welcome")
    assert again["conversation_id"] == welcome["conversation_id"]  # same customer, same chat
    await second.send({"type": "message", "body": "after the correction", "client_msg_id": "b"})
    after = await second.wait_type("message", client_msg_id="b")
    assert after["author"] == new_name
    await second.close()

    detail = await admin.http.get(f"/api/admin/conversations/{welcome['conversation_id']}")
    assert detail.json()["conversation"]["customer"]["name"] == new_name
    await v.aclose()


async def test_forged_or_tampered_cookie_is_no_cookie(server: Server, visitor: Visitor,
                                                      agent: Agent) -> None:
    """A forged, tampered or foreign-purpose chat_session is treated as none: 401, never 500."""
    good = next(c.value for c in visitor.http.cookies.jar if c.name == "chat_session")
    staff_value = next(c.value for c in agent.http.cookies.jar if c.name == "chat_staff")
    payload, stamp, signature = good.split(".")
    # Change a middle character: the last base64 character may carry only padding bits.
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    fakes = [
        f"{payload}.{stamp}.{flipped}",
        f"{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{stamp}.{signature}",
        f"{payload}.{stamp}",
        payload,
        staff_value,  # validly signed, but for the staff cookie
        "InNvbWV0aGluZyI.forged.sig",
        "." + good,
        "x" * 600,
        "%00%ff",
        "",
    ]
    for fake in fakes:
        async with await _new_client(server, headers={"Cookie": f"chat_session={fake}"}) as c:
            me = await c.get("/api/me")
            assert me.status_code == 401, (fake, me.status_code, me.text)
            form = await c.post("/api/visitor", json=VALID)
            assert form.status_code == 403, (fake, form.text)
            assert form.json()["error"] == "consent_required"
        ws = await open_socket(server, "/ws/visitor", f"chat_session={fake}")
        assert await ws.closed_code() == 4401, fake
    # The genuine cookie still works.
    assert (await visitor.http.get("/api/me")).status_code == 200


async def test_consent_with_a_tampered_cookie_starts_a_new_session(server: Server,
                                                                   visitor: Visitor) -> None:
    """Consenting with a tampered chat_session starts a fresh session instead of failing."""
    good = next(c.value for c in visitor.http.cookies.jar if c.name == "chat_session")
    # Not the last character: its low bits are padding, so changing it can leave the bytes intact.
    tampered = good[:-5] + ("A" if good[-5] != "A" else "B") + good[-4:]
    async with await _new_client(server, headers={"Cookie": f"chat_session={tampered}"}) as c:
        response = await c.post("/api/consent", json={"policy_version": "1.01"})
        assert response.status_code == 200, response.text
        found = cookie_from(response, "chat_session")
        assert found is not None and found[0] not in {good, tampered}


# -- what the cookies hold ---------------------------------------------------------------------


async def test_no_cookie_holds_personal_data_and_all_are_listed(server: Server) -> None:
    """No cookie value, decoded any way, holds name, email, company or IP; all are listed."""
    seen: list[str] = []

    async def keep(response: httpx.Response) -> None:
        seen.extend(set_cookies(response))

    tag = _uid()
    name, email, company = f"Zelda{tag}", f"zelda{tag}@example.com", f"Hyrule{tag}"
    hooks = {"response": [keep]}
    visitor = httpx.AsyncClient(base_url=server.url, timeout=10, event_hooks=hooks)
    staff = httpx.AsyncClient(base_url=server.url, timeout=10, event_hooks=hooks)
    try:
        assert (await visitor.post("/api/consent", json={"policy_version": "1.01"})
                ).status_code == 200
        assert (await visitor.post("/api/visitor", json={"name": name, "email": email,
                                                         "company": company})).status_code == 200
        assert (await visitor.post("/api/consent", json={"policy_version": "1.01"})
                ).status_code == 200
        assert (await visitor.get("/api/me")).status_code == 200
        ws = await open_socket(server, "/ws/visitor", cookie_header(visitor))
        await ws.wait_type("welcome")
        await ws.send({"type": "message", "body": f"secret {tag}", "client_msg_id": "c1"})
        await ws.wait_type("ack")
        await ws.close()

        login_form = await staff.get("/agent", headers={"Accept": "text/html"})
        token = re.search(r'name="csrf_token" value="([^"]+)"', login_form.text)
        assert token is not None
        posted = await staff.post("/staff/login", data={"csrf_token": token.group(1),
                                                        "username": "agent",
                                                        "password": STAFF_PASSWORD})
        assert posted.status_code == 303
        assert (await staff.get("/agent", headers={"Accept": "text/html"})).status_code == 200
        assert (await staff.post("/api/staff/login", json={"username": "admin",
                                                           "password": STAFF_PASSWORD})
                ).status_code == 200
        assert (await staff.get("/admin", headers={"Accept": "text/html"})).status_code == 200
        assert (await staff.post("/api/staff/logout")).status_code == 200

        listed = (await visitor.get("/cookies", headers={"Accept": "text/html"})).text
    finally:
        await visitor.aclose()
        await staff.aclose()

    names = {parse_set_cookie(h)[0] for h in seen}
    assert {"chat_session", "chat_staff", "chat_csrf"} <= names, names
    forbidden = [name, email, company, tag, "127.0.0.1", "Zelda", "zelda", "Hyrule"]
    for header in seen:
        cookie, value, attrs = parse_set_cookie(header)
        assert attrs.get("path") == "/", header
        assert attrs.get("samesite", "").lower() in {"lax", "strict"}, header
        assert "httponly" in attrs, header
        for decoded in decodings(value):
            lowered = decoded.lower()
            for needle in forbidden:
                assert needle.lower().encode() not in lowered, (cookie, needle, decoded)
        assert f"<code>{cookie}</code>" in listed, f"{cookie} is not listed on /cookies"


async def test_secure_visitor_cookie_works_embedded_cross_site(
    make_server: Callable[..., Server],
) -> None:
    """Under Secure cookies the visitor cookie is SameSite=None; Secure; Partitioned, for iframes."""
    server = make_server(CHATSERVER_SECURE_COOKIES="on")
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/api/consent", json={"policy_version": "1.01"})
    header = response.headers["set-cookie"].lower()
    assert header.startswith("chat_session=")
    for attribute in ("samesite=none", "secure", "partitioned", "httponly", "path=/"):
        assert attribute in header, attribute
