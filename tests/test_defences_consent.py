"""Consent: no chat without consent to the current policy version and a customer record; a new
policy stops open chats; the pre-chat form takes one address and nothing else. The rule itself
(chatserver.consent) and its enforcement at the routes and the socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from chatserver import consent
from chatserver.errors import ConsentRequired, ValidationFailed
from chatserver.storage.base import PolicyVersion, VisitorSession

from .inprocess import App, receive, running_app

CURRENT = PolicyVersion("2.0", "2026-01-01", "s", "text", "sha")


def session(version: str | None, customer: str | None) -> VisitorSession:
    return VisitorSession(id="h", customer_id=customer, consent_version=version)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running_app(tmp_path) as running:
        yield running


# -- the rule ----------------------------------------------------------------------------------


def test_chat_needs_consent_to_the_current_version_and_a_customer() -> None:
    """No consent, consent to another version, or no customer: ConsentRequired with the code
    the widget acts on; else the customer's id."""
    assert consent.require_chat_consent(session("2.0", "cu_1"), CURRENT) == "cu_1"
    for version, message in ((None, "Please read and accept the privacy policy first."),
                             ("1.01", "Please read and accept the current privacy policy "
                                      "first."),
                             ("2.0.1", "Please read and accept the current privacy policy "
                                       "first."),
                             ("2", "Please read and accept the current privacy policy first.")):
        with pytest.raises(ConsentRequired) as refused:
            consent.require_chat_consent(session(version, "cu_1"), CURRENT)
        assert refused.value.code == "consent_required" and refused.value.message == message
    with pytest.raises(ConsentRequired) as no_customer:
        consent.require_chat_consent(session("2.0", None), CURRENT)
    assert no_customer.value.code == "customer_required"


@pytest.mark.parametrize("data", [
    {"name": "A", "email": "a@example.com", "cc": "b@example.com"},
    {"name": "A", "email": "a@example.com", "BCC": "b@example.com"},
    {"name": "A", "email": "a@example.com", "reply_cc": "b@example.com"},
    {"name": "A", "email": "a@example.com", "x_bcc": "b@example.com"},
    {"name": "A", "email": "a@example.com, b@example.com"},
    {"name": "A", "email": "a@example.com;b@example.com"},
    {"name": "A", "email": "a@example.com b@example.com"},
    {"name": "A", "email": "a@b@example.com"},
    {"name": "A", "email": "a@example.com,b"},
    {"name": "A", "email": "a@example.com;"},
])
def test_the_form_takes_one_address_and_no_copies(data: dict[str, Any]) -> None:
    """CC/BCC fields in any spelling and a second address are refused as cc_not_allowed."""
    with pytest.raises(ValidationFailed) as refused:
        consent.validate_customer(data)
    assert refused.value.code == "cc_not_allowed" and refused.value.field == "email"


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "", "email": "a@example.com"}, "name"),
    ({"name": "x" * 101, "email": "a@example.com"}, "name"),
    ({"name": "A\x00B", "email": "a@example.com"}, "name"),
    ({"name": "A\x7f", "email": "a@example.com"}, "name"),
    ({"name": 7, "email": "a@example.com"}, "name"),
    ({"name": "A", "email": "a@example.com", "company": "x" * 201}, "company"),
    ({"name": "A", "email": "a@example.com", "company": ["x"]}, "company"),
    ({"name": "A", "email": "not-an-address"}, "email"),
    ({"name": "A", "email": "a@" + "b" * 250 + ".com"}, "email"),
    ({"name": "A", "email": None}, "email"),
    ({"name": "A", "email": "a@example.com", "phone": "1"}, "phone"),
    ({"email": "a@example.com"}, "name"),
    ({"name": "A"}, "email"),
    ({"name": "A", "email": "a" * 243 + "@example.com"}, "email"),  # 255 characters
])
def test_the_form_refuses_bad_values_by_name(data: dict[str, Any], field: str) -> None:
    """Each bad value names its field."""
    with pytest.raises(ValidationFailed) as refused:
        consent.validate_customer(data)
    assert refused.value.field == field
    assert refused.value.code == ("unknown_field" if field == "phone" else f"invalid_{field}")


def test_the_form_keeps_good_values_tidy() -> None:
    """Whitespace runs fold, the longest allowed values pass, company may be empty or null;
    a partial correction checks only what it names, and must name something."""
    assert consent.validate_customer(
        {"name": "  Ada \t Lovelace ", "email": " ada@example.com ", "company": None}
    ) == {"name": "Ada Lovelace", "email": "ada@example.com", "company": ""}
    longest = {"name": "n" * 100, "email": "a@example.com", "company": "c" * 200}
    assert consent.validate_customer(longest) == longest
    assert consent.validate_customer({"company": "X"}, partial=True) == {"company": "X"}
    assert consent.validate_customer({"name": " Bo "}, partial=True) == {"name": "Bo"}
    assert consent.validate_customer({"email": "b@example.com"}, partial=True) == {
        "email": "b@example.com"}
    with pytest.raises(ValidationFailed):
        consent.validate_customer({"name": ""}, partial=True)
    with pytest.raises(ValidationFailed):
        consent.validate_customer({"email": "nope"}, partial=True)
    assert consent.validate_customer({"name": "A", "email": "a@example.com"})["company"] == ""
    longest_email = "a" * 242 + "@example.com"
    assert len(longest_email) == 254
    assert consent.validate_customer({"name": "A", "email": longest_email})["email"] == (
        longest_email)
    with pytest.raises(ValidationFailed):
        consent.validate_customer({}, partial=True)
    with pytest.raises(ValidationFailed):
        consent.validate_customer(["name"])


def test_publishing_checks_its_fields(app: App) -> None:
    """A version, date, summary and text are checked before anything is stored."""
    policies = app.state.policies
    bad = [
        {"version": "", "effective_date": "2026-01-01", "summary": "s"},
        {"version": "-1", "effective_date": "2026-01-01", "summary": "s"},
        {"version": "v" * 33, "effective_date": "2026-01-01", "summary": "s"},
        {"version": "2 0", "effective_date": "2026-01-01", "summary": "s"},
        {"version": "2.0", "effective_date": "01/01/2026", "summary": "s"},
        {"version": "2.0", "effective_date": "2026-01-01", "summary": "  "},
        {"version": "2.0", "effective_date": "2026-01-01", "summary": "s" * 2001},
    ]
    named = ["version"] * 4 + ["effective_date"] + ["summary"] * 2
    for fields, field in zip(bad, named, strict=True):
        with pytest.raises(ValidationFailed) as refused:
            app.call(policies.publish, "text", **fields)
        assert refused.value.field == field, fields
    with pytest.raises(ValidationFailed) as empty:
        app.call(policies.publish, " \n", version="2.0", effective_date="2026-01-01",
                 summary="s")
    assert empty.value.field == "text"
    assert app.call(policies.current).version == "1.01"
    published = app.call(policies.publish, "new text", version="v" * 32,
                         effective_date="2026-01-01", summary="s" * 2000)
    assert app.call(policies.current).version == published.version == "v" * 32


def test_policy_text_cannot_inject_markup() -> None:
    """Raw HTML in a policy file is shown as text, entities included, as the author wrote it."""
    html = consent.render("Hello <script>alert(1)</script> & <b>bold</b>")
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "&amp;" in html
    assert "&amp;lt;b&amp;gt;" in consent.render("&lt;b&gt;")  # shown as typed, not decoded


def test_the_policy_api_names_what_a_consent_must_quote(app: App) -> None:
    """GET /api/policy gives the version and the hash of its text, which a consent names."""
    policy = app.client().get("/api/policy").json()
    assert set(policy) == {"version", "effective_date", "summary", "sha256", "html"}
    assert policy["version"] == "1.01" and policy["effective_date"] == consent.BUNDLED_DATE
    assert policy["summary"] == consent.BUNDLED_SUMMARY
    assert policy["sha256"] == consent.sha256_text(consent.bundled_policy().text)
    assert policy["html"] == consent.render(consent.bundled_policy().text)


# -- at the routes and the socket -------------------------------------------------------------


def test_consent_must_name_the_current_version_and_text(app: App) -> None:
    """Another version or another text's hash: 409 policy_outdated and no cookie."""
    client = app.client()
    sha = client.get("/api/policy").json()["sha256"]
    for body in ({"policy_version": "1.0"}, {"policy_version": "1.01 "},
                 {"policy_version": "1.01", "policy_sha256": "0" * 64}):
        response = client.post("/api/consent", json=body)
        assert response.status_code == 409 and response.json()["error"] == "policy_outdated"
        assert "set-cookie" not in response.headers
    ok = client.post("/api/consent", json={"policy_version": "1.01", "policy_sha256": sha})
    assert ok.status_code == 200


@pytest.mark.parametrize("body", [
    {}, {"policy_version": 1.01}, {"policy_version": "1.01", "on_behalf": "yes"},
    {"policy_version": "1.01", "method": "email"}, {"policy_version": "1.01", "method": 1},
    {"policy_version": "1.01", "extra": 1}, ["1.01"],
])
def test_consent_bodies_are_checked(app: App, body: Any) -> None:
    """A malformed consent is 422 and starts no session."""
    response = app.client().post("/api/consent", json=body)
    assert response.status_code == 422 and "set-cookie" not in response.headers


def test_the_form_needs_consent_to_the_current_version(app: App) -> None:
    """Without a session: 403; after a new policy, consent to the old one is not enough."""
    assert app.client().post("/api/visitor", json={"name": "A", "email": "a@example.com"}
                             ).json()["error"] == "consent_required"
    client = app.client()
    client.post("/api/consent", json={"policy_version": "1.01"})
    app.call(app.state.policies.publish, "new", version="2.0", effective_date="2026-01-01",
             summary="changed")
    refused = client.post("/api/visitor", json={"name": "A", "email": "a@example.com"})
    assert refused.status_code == 403 and refused.json()["error"] == "consent_required"
    client.post("/api/consent", json={"policy_version": "2.0"})
    assert client.post("/api/visitor", json={"name": "A", "email": "a@example.com"}
                       ).status_code == 200


def refused_code(client: Any) -> tuple[str, int]:
    with client.websocket_connect("/ws/visitor") as ws:
        code = receive(ws)["code"]
        with pytest.raises(WebSocketDisconnect) as closed:
            receive(ws)
    return code, closed.value.code


def test_the_socket_needs_consent_and_a_customer(app: App) -> None:
    """Consent without the form: customer_required, 4403; after withdrawing: consent_required,
    4403; no session: not_signed_in, 4401."""
    assert refused_code(app.client()) == ("not_signed_in", 4401)
    consented = app.client()
    consented.post("/api/consent", json={"policy_version": "1.01"})
    assert refused_code(consented) == ("customer_required", 4403)
    visitor = app.visitor_client()
    assert visitor.post("/api/consent/withdraw", json={}).status_code == 200
    assert refused_code(visitor) == ("consent_required", 4403)


def test_a_new_policy_stops_open_chats_until_accepted(app: App) -> None:
    """Publishing closes open visitor sockets with consent_required (4403); the visitor may
    chat again after accepting the new version, in the same conversation."""
    visitor = app.visitor_client()
    with visitor.websocket_connect("/ws/visitor") as ws:
        conversation_id = receive(ws)["conversation_id"]
        app.call(app.state.policies.publish, "new", version="2.0",
                 effective_date="2026-01-01", summary="changed")
        app.call(app.state.hub.policy_published, "2.0")
        assert receive(ws)["code"] == "consent_required"
        with pytest.raises(WebSocketDisconnect) as closed:
            receive(ws)
        assert closed.value.code == 4403
    assert refused_code(visitor) == ("consent_required", 4403)
    visitor.post("/api/consent", json={"policy_version": "2.0"})
    with visitor.websocket_connect("/ws/visitor") as ws:
        assert receive(ws)["conversation_id"] == conversation_id


def test_a_message_after_a_policy_change_elsewhere_is_not_stored(app: App) -> None:
    """A policy published by another process is found at the next message: that message is
    refused (consent_required, 4403) and not stored."""
    visitor = app.visitor_client()
    with visitor.websocket_connect("/ws/visitor") as ws:
        conversation_id = receive(ws)["conversation_id"]
        # Straight into the store, as `chatserver policy publish` would, then past the cache.
        app.call(app.state.store.publish_policy,
                 PolicyVersion("2.0", "2026-01-01", "changed", "new", consent.sha256_text("new")))
        app.state.policies._loaded_at -= consent.CACHE_SECONDS + 1
        ws.send_json({"type": "message", "body": "after the change", "client_msg_id": "a1"})
        assert receive(ws)["code"] == "consent_required"
        with pytest.raises(WebSocketDisconnect) as closed:
            receive(ws)
        assert closed.value.code == 4403
    stored = app.call(app.state.store.messages_after, conversation_id, 0, 100)
    assert "after the change" not in [m.body for m in stored]
