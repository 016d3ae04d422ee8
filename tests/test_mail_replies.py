"""Replies by email and read marks: an agent reply the customer has not seen in time is mailed
(batched per conversation) to the customer's own address, with a one-time link that opens the
chat on the server's own page; replies seen in an open chat are not."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from .mailbox import Mailbox, check_mail, follow_link, mail_server
from .support import Agent, Server, Socket, Visitor, open_socket

REPLY = "New reply to your conversation"


@pytest.fixture(scope="module")
def box() -> Iterator[Mailbox]:
    found = Mailbox()
    found.controller.start()
    yield found
    found.controller.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, box: Mailbox) -> Iterator[Server]:
    server = mail_server(tmp_path_factory.mktemp("replies"), box,
                         CHATSERVER_LIMITS_EXEMPT="127.0.0.1",
                         CHATSERVER_REPLY_EMAIL_DELAY_SECONDS="1")
    server.add_staff("bo", "agent")
    yield server
    server.stop()


@pytest.fixture
async def agent(srv: Server) -> AsyncIterator[Agent]:
    found = await Agent(srv, "bo").login()
    yield found
    await found.aclose()


@pytest.fixture
async def people(srv: Server) -> AsyncIterator[list[Visitor]]:
    made: list[Visitor] = []
    yield made
    for visitor in made:
        await visitor.aclose()


async def _visitor(srv: Server, people: list[Visitor], email: str, name: str = "Ada") -> Visitor:
    visitor = Visitor(srv)
    people.append(visitor)
    return await visitor.start(name=name, email=email)


async def _say(sock: Socket, body: str) -> int:
    msg_id = uuid.uuid4().hex
    await sock.send({"type": "message", "body": body, "client_msg_id": msg_id})
    return int((await sock.wait_type("ack", client_msg_id=msg_id))["seq"])


async def _agent_says(ags: Socket, conversation_id: str, body: str) -> int:
    msg_id = uuid.uuid4().hex
    await ags.send({"type": "message", "conversation_id": conversation_id, "body": body,
                    "client_msg_id": msg_id})
    return int((await ags.wait_type("ack", client_msg_id=msg_id))["seq"])


async def _claimed(agent: Agent, conversation_id: str) -> Socket:
    """The agent's socket, once the agent claimed the conversation on it."""
    ags = await agent.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id)
    return ags


async def _left_a_message(srv: Server, visitor: Visitor, agent: Agent
                          ) -> tuple[str, Socket]:
    """The visitor writes, closes the tab; an agent claims the conversation."""
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await _say(vs, "Is anyone there? My order is late.")
    await vs.close()
    ags = await _claimed(agent, conversation_id)
    return conversation_id, ags


async def test_unseen_replies_are_mailed_once_batched_and_the_link_continues_the_chat(
        srv: Server, box: Mailbox, agent: Agent, people: list[Visitor]) -> None:
    """Two replies to a customer who left arrive in one mail to their own address; its link
    signs a fresh browser in to that customer once, and the chat goes on there."""
    ada = await _visitor(srv, people, "ada.replies@example.com", name="Ada <b>Lovelace</b>")
    conversation_id, ags = await _left_a_message(srv, ada, agent)
    first = await _agent_says(ags, conversation_id, "Sorry! It ships today.")
    second = await _agent_says(ags, conversation_id, "Tracking <script>x</script> follows.")
    [mail] = await box.wait_to("ada.replies@example.com", REPLY)
    check_mail(mail, srv.url, "ada.replies@example.com")
    assert "Sorry! It ships today." in mail.text and "Tracking <script>" in mail.text
    assert "Is anyone there" not in mail.text  # the customer's own words are not repeated
    assert "Tracking &lt;script&gt;" in mail.html and "<script>" not in mail.html
    assert "Ada &lt;b&gt;Lovelace&lt;/b&gt;" in mail.html
    assert second == first + 1
    link = mail.link("/chat?token=")

    async with httpx.AsyncClient(timeout=10) as browser:
        followed = await follow_link(browser, link, "/chat/link")
        assert followed.status_code == 303 and followed.headers["location"] == "/chat"
        assert followed.headers["referrer-policy"] == "no-referrer"
        page = await browser.get(srv.url + "/chat")
        assert page.status_code == 200 and "widget-app.js" in page.text
        assert page.headers["x-frame-options"] == "DENY"
        cookie = f"chat_session={browser.cookies['chat_session']}"
        vs = await open_socket(srv, "/ws/visitor", cookie)
        welcome = await vs.wait_type("welcome")
        assert welcome["conversation_id"] == conversation_id
        await vs.send({"type": "resume", "after_seq": 0})
        replayed = await vs.wait_type("message", seq=second)
        assert replayed["body"] == "Tracking <script>x</script> follows."
        await _say(vs, "Thanks, got it by mail!")
        assert (await ags.wait_type("message", sender="visitor"))["body"].startswith("Thanks")
        await vs.close()
        assert (await browser.get(link)).status_code == 400  # once only
    await ags.close()
    assert len(box.to("ada.replies@example.com")) == 1


async def test_replies_seen_in_an_open_chat_are_not_mailed(srv: Server, box: Mailbox,
                                                          agent: Agent,
                                                          people: list[Visitor]) -> None:
    """A reply delivered to the customer's open socket counts as seen; a later one, after the
    customer left, is mailed alone."""
    bea = await _visitor(srv, people, "bea.seen@example.com")
    vs = await bea.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await _say(vs, "Hello")
    ags = await _claimed(agent, conversation_id)
    await _agent_says(ags, conversation_id, "Seen while chatting")
    await vs.wait_type("message", sender="agent")
    await vs.close()
    await _agent_says(ags, conversation_id, "Written after you left")
    [mail] = await box.wait_to("bea.seen@example.com", REPLY)
    assert "Written after you left" in mail.text and "Seen while chatting" not in mail.text
    assert len(box.to("bea.seen@example.com")) == 1  # the first reply made no mail of its own
    await ags.close()


async def test_read_frames_are_stored_relayed_and_decide_what_is_mailed(
        srv: Server, box: Mailbox, agent: Agent, people: list[Visitor]) -> None:
    """A client that sends read frames says itself what was seen: an unread reply is mailed
    though its socket is open, a read one is not; read marks reach the other side only."""
    cy = await _visitor(srv, people, "cy.reads@example.com")
    vs = await cy.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    own = await _say(vs, "Hello")
    ags = await _claimed(agent, conversation_id)

    await vs.send({"type": "read", "seq": own})
    relayed = await ags.wait_type("read", conversation_id=conversation_id)
    assert relayed == {"type": "read", "conversation_id": conversation_id, "seq": own,
                       "sender": "visitor"}
    unread = await _agent_says(ags, conversation_id, "You have not read this one")
    await vs.wait_type("message", seq=unread)  # delivered, but this client reads for itself
    [mail] = await box.wait_to("cy.reads@example.com", REPLY)
    assert "You have not read this one" in mail.text

    read = await _agent_says(ags, conversation_id, "This one you read")
    await vs.send({"type": "read", "seq": read + 50})  # beyond the last seq: clamped
    assert (await ags.wait_type("read", seq=read))["sender"] == "visitor"
    await ags.send({"type": "read", "conversation_id": conversation_id, "seq": read})
    from_agent = await vs.wait_type("read")
    assert from_agent == {"type": "read", "conversation_id": conversation_id, "seq": read,
                          "sender": "agent"}
    await vs.send({"type": "read", "seq": -1})
    assert (await vs.wait_type("error"))["code"] == "invalid_field"
    # The visitor's own read marks never come back to it.
    assert [f for f in vs.frames if f["type"] == "read" and f["sender"] == "visitor"] == []
    # A dashboard that loads the conversation afresh gets the stored mark after the replay.
    again = await agent.socket()
    await again.wait_type("queue")
    await again.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
    assert (await again.wait_type("read", conversation_id=conversation_id))["seq"] == read
    assert again.frames[-2]["type"] == "message"  # after the replayed messages
    await again.close()
    # A later unread reply is mailed alone: "This one you read" never is.
    await vs.close()
    await _agent_says(ags, conversation_id, "A last word")
    _, last = await box.wait_to("cy.reads@example.com", REPLY, count=2)
    assert "A last word" in last.text and "This one you read" not in last.text
    await ags.close()


async def test_staff_see_how_far_replies_went_by_email(
        srv: Server, box: Mailbox, agent: Agent, people: list[Visitor]) -> None:
    """Once the mail of unseen replies goes, the agent's socket hears `mailed` with the last
    reply it held, and a dashboard that loads the conversation afresh gets it after the replay;
    the customer's own socket, open all along, never does."""
    dee = await _visitor(srv, people, "dee.emailed@example.com")
    vs = await dee.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await vs.send({"type": "read", "seq": 0})  # as the widget does: it says what was read
    await _say(vs, "Hello?")
    ags = await _claimed(agent, conversation_id)
    await _agent_says(ags, conversation_id, "Looking into it.")
    last = await _agent_says(ags, conversation_id, "Found it: it ships today.")
    await vs.wait_type("message", seq=last)  # delivered to a tab nobody looks at
    [mail] = await box.wait_to("dee.emailed@example.com", REPLY)
    assert "Found it" in mail.text
    mailed = await ags.wait_type("mailed", conversation_id=conversation_id)
    assert mailed == {"type": "mailed", "conversation_id": conversation_id, "seq": last}
    await vs.send({"type": "ping"})
    await vs.wait_type("pong")  # anything published for it before is in by now
    assert [f for f in vs.frames if f["type"] == "mailed"] == []

    again = await agent.socket()
    await again.wait_type("queue")
    await again.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
    assert (await again.wait_type("mailed", conversation_id=conversation_id))["seq"] == last
    replayed = [f["seq"] for f in again.frames if f["type"] == "message"]
    assert replayed[-1] == last and again.frames[-2]["type"] == "message"
    await again.close()
    await vs.close()
    await ags.close()


async def test_transcript_goes_to_the_customers_own_address_only(
        srv: Server, box: Mailbox, agent: Agent, people: list[Visitor]) -> None:
    """A customer's transcript goes to their address on file, audited by conversation and
    never by address; any other recipient or CC in the body is refused, as is another
    customer's conversation, and nothing is sent for a refusal."""
    dee = await _visitor(srv, people, "dee.transcript@example.com")
    eve = await _visitor(srv, people, "eve.other@example.com")
    vs = await dee.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await _say(vs, "Please send me a copy")
    await vs.close()
    eve_socket = await eve.socket()
    eve_conversation = (await eve_socket.wait_type("welcome"))["conversation_id"]
    await eve_socket.close()

    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({"conversation_id": conversation_id, "email": "eve.other@example.com"}, 422,
         "recipient_not_allowed"),
        ({"conversation_id": conversation_id, "to": "eve.other@example.com"}, 422,
         "recipient_not_allowed"),
        ({"conversation_id": conversation_id, "cc": "eve.other@example.com"}, 422,
         "cc_not_allowed"),
        ({"conversation_id": conversation_id, "BCC": ["eve.other@example.com"]}, 422,
         "cc_not_allowed"),
        ({"conversation_id": conversation_id, "reply_cc": "x@example.com"}, 422,
         "cc_not_allowed"),
        ({"conversation_id": eve_conversation}, 404, "not_found"),
        ({"conversation_id": ["x"]}, 422, "invalid_conversation_id"),
        ({}, 422, "invalid_conversation_id"),
    ]
    for body, status, code in refusals:
        response = await dee.http.post("/api/me/transcript-email", json=body)
        assert (response.status_code, response.json()["error"]) == (status, code), body
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as stranger:
        response = await stranger.post("/api/me/transcript-email",
                                       json={"conversation_id": conversation_id})
        assert response.status_code == 401

    sent = await dee.http.post("/api/me/transcript-email",
                               json={"conversation_id": conversation_id})
    assert sent.status_code == 202
    [mail] = await box.wait_to("dee.transcript@example.com",
                               "The transcript of your conversation")
    check_mail(mail, srv.url, "dee.transcript@example.com")
    assert "Please send me a copy" in mail.text
    assert box.to("eve.other@example.com") == [] and box.to("x@example.com") == []

    admin_http = await _admin(srv)
    entries = (await admin_http.get("/api/admin/audit",
                                    params={"action": "transcript.email"})).json()["entries"]
    [entry] = [e for e in entries if e["target"] == f"conversation:{conversation_id}"]
    assert entry["actor"] == "customer" and entry["at"]
    assert "dee.transcript" not in str(entry)
    mails = (await admin_http.get("/api/admin/mail")).json()
    assert mails["enabled"] is True and mails["total"] >= 1
    assert "@" not in str(mails["mails"])
    await admin_http.aclose()


async def _admin(srv: Server) -> httpx.AsyncClient:
    if not any(line.startswith("boss\t") for line in srv.cli("user", "list").stdout.splitlines()):
        srv.add_staff("boss", "admin")
    return (await Agent(srv, "boss").login()).http


async def test_header_injection_in_names_reaches_no_header(srv: Server, box: Mailbox,
                                                          agent: Agent,
                                                          people: list[Visitor]) -> None:
    """Names holding line breaks, encoded words or header-like text stay in the body: the mail
    has one recipient, the fixed subject and no header of theirs."""
    sneaky = "=?utf-8?q?Eve=0D=0ABcc:_x@evil.example?=\r\nBcc: y@evil.example"
    fay = await _visitor(srv, people, "fay.names@example.com", name=sneaky)
    vs = await fay.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await vs.close()
    srv.add_staff("=?utf-8?q?x=0D=0ABcc:z@evil.example?=", "agent")
    sly = await Agent(srv, "=?utf-8?q?x=0D=0ABcc:z@evil.example?=").login()
    ags = await sly.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id)
    await _agent_says(ags, conversation_id, "Subject: hijacked\r\nBcc: w@evil.example")
    [mail] = await box.wait_to("fay.names@example.com", REPLY)
    check_mail(mail, srv.url, "fay.names@example.com")
    assert mail.message["Subject"] == REPLY
    headers = mail.raw.split(b"\r\n\r\n", 1)[0].decode()
    assert "evil" not in headers
    assert sorted(k.lower() for k in mail.message.keys()) == sorted([
        "from", "to", "subject", "date", "message-id", "auto-submitted", "mime-version",
        "content-type"])
    assert "Bcc: y@evil.example" in mail.text  # shown as the text it is, in the body
    assert all("evil" not in " ".join(m.rcpt_tos) for m in box.mails)
    await ags.close()
    await sly.aclose()


async def test_policy_page_says_which_emails_are_sent_and_why(srv: Server) -> None:
    """With mail on, /policy's generated section lists each email, when and why it is sent."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
        text = " ".join((await client.get("/policy")).text.split())
    for expected in ("Emails we send", "Replies you have not seen", "within 1 second,",
                     "Sign-in link", "Account deletion", "Transcript", "no tracking",
                     "never with copies to anyone"):
        assert expected in text, expected
