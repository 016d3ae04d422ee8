"""Staff notes and the customer's rating, over real sockets (issue 12, steps 5 and 7)."""

from __future__ import annotations

import uuid

from .support import Agent, Server, Socket, Visitor

SCRIPT = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'


def _id() -> str:
    return uuid.uuid4().hex


async def _claimed(visitor: Visitor, agent: Agent) -> tuple[Socket, Socket, str]:
    """A visitor who said hello, and the agent who claimed the conversation."""
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await vs.send({"type": "message", "body": "hello", "client_msg_id": _id()})
    await vs.wait_type("ack")
    ags = await agent.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id, status="active")
    await vs.wait_type("message", seq=2)  # "... joined the conversation."
    return vs, ags, conversation_id


async def test_a_note_reaches_staff_and_never_the_visitor(
    server: Server, visitor: Visitor, agent: Agent, admin: Agent
) -> None:
    """A note is acked like a message and relayed to staff as sender "note"; the visitor's
    socket, replay and seqs never show it; admin transcripts mark it; the export holds it."""
    vs, ags, conversation_id = await _claimed(visitor, agent)
    note_id = _id()
    await ags.send({"type": "note", "conversation_id": conversation_id, "body": SCRIPT,
                    "client_msg_id": note_id})
    ack = await ags.wait_type("ack", client_msg_id=note_id)
    assert ack["seq"] == 2 and isinstance(ack["note_id"], int)
    relayed = await ags.wait_type("message", sender="note")
    assert relayed["body"] == SCRIPT and relayed["note_id"] == ack["note_id"]
    assert relayed["seq"] == 2 and relayed["author"] == "Support agent"

    # A repeat is acked with the first note and stored once.
    await ags.send({"type": "note", "conversation_id": conversation_id, "body": SCRIPT,
                    "client_msg_id": note_id})
    again = await ags.wait_type("ack", client_msg_id=note_id)
    assert again["note_id"] == ack["note_id"]

    # The next message takes seq 3: the note took no seq, so the visitor sees no gap.
    reply = _id()
    await ags.send({"type": "message", "conversation_id": conversation_id, "body": "answer",
                    "client_msg_id": reply})
    assert (await ags.wait_type("ack", client_msg_id=reply))["seq"] == 3
    await vs.wait_type("message", seq=3)
    await vs.send({"type": "resume", "after_seq": 0})
    await vs.wait_type("message", seq=3, body="answer")  # the replay's copy
    assert not [f for f in vs.frames if f.get("sender") == "note" or SCRIPT in str(f)]

    # Staff replays carry it; a second agent's socket (not handling it) is refused a note.
    await ags.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
    replayed = await ags.wait_for(lambda f: f.get("sender") == "note" and f is not relayed)
    assert replayed["note_id"] == ack["note_id"]
    other = await Agent(server, "agent2").login()
    try:
        os = await other.socket()
        await os.wait_type("queue")
        await os.send({"type": "note", "conversation_id": conversation_id, "body": "mine",
                       "client_msg_id": _id()})
        refused = await os.wait_type("error")
        assert refused["code"] == "forbidden" and refused["conversation_id"] == conversation_id
        await os.close()
    finally:
        await other.aclose()

    detail = (await admin.http.get(f"/api/admin/conversations/{conversation_id}")).json()
    assert [n["body"] for n in detail["notes"]] == [SCRIPT]
    assert all(m["sender"] != "note" for m in detail["messages"])
    txt = (await admin.http.get(
        f"/api/admin/conversations/{conversation_id}/transcript?format=txt")).text
    assert "NOTE (staff only) Support agent:" in txt
    html = (await admin.http.get(
        f"/api/admin/conversations/{conversation_id}/transcript?format=html")).text
    assert '<tr class="note">' in html and "<script>" not in html.split("<tbody>")[1]

    export = (await visitor.http.get("/api/me/export")).json()
    conv = next(c for c in export["conversations"] if c["id"] == conversation_id)
    assert [n["body"] for n in conv["notes"]] == [SCRIPT]
    assert all(m["sender"] != "note" for m in conv["messages"])
    await vs.close()
    await ags.close()


async def test_bad_notes_get_clear_errors_and_store_nothing(
    server: Server, visitor: Visitor, agent: Agent
) -> None:
    """Notes to unknown conversations, with empty bodies or for the visitor are refused."""
    vs, ags, conversation_id = await _claimed(visitor, agent)
    await ags.send({"type": "note", "conversation_id": "cv_nope", "body": "x",
                    "client_msg_id": _id()})
    assert (await ags.wait_type("error", conversation_id="cv_nope"))["code"] == "not_found"
    await ags.send({"type": "note", "conversation_id": conversation_id, "body": "  ",
                    "client_msg_id": _id()})
    assert (await ags.wait_type("error"))["code"] == "invalid_field"
    # Visitors cannot write notes at all.
    await vs.send({"type": "note", "body": "x", "client_msg_id": _id()})
    assert (await vs.wait_type("error"))["code"] == "unknown_type"
    rows = server.query("SELECT COUNT(*) FROM notes WHERE conversation_id = ?", conversation_id)
    assert rows[0][0] == 0
    await vs.close()
    await ags.close()


async def test_rating_once_after_close_shown_to_staff_exported_and_erased(
    server: Server, visitor: Visitor, agent: Agent, admin: Agent
) -> None:
    """A closed conversation takes one rating of 1-5; repeats and bad scores get clear errors;
    the agent and admins see it; it is in the export and goes with an erasure, notes too."""
    vs, ags, conversation_id = await _claimed(visitor, agent)
    await vs.send({"type": "rating", "score": 4, "comment": "early"})
    assert (await vs.wait_type("error"))["code"] == "not_closed"

    await ags.send({"type": "note", "conversation_id": conversation_id, "body": "a note",
                    "client_msg_id": _id()})
    await ags.wait_type("ack")
    await ags.send({"type": "close", "conversation_id": conversation_id})
    await vs.wait_type("status", status="closed")

    for bad in (0, 6, "4", True, 4.5, None):
        await vs.send({"type": "rating", "score": bad})
        assert (await vs.wait_type("error"))["code"] == "invalid_score", bad
    await vs.send({"type": "rating", "score": 4, "comment": "x" * 1001})
    assert (await vs.wait_type("error"))["code"] == "invalid_field"

    await vs.send({"type": "rating", "score": 4, "comment": SCRIPT})
    mine = await vs.wait_type("rating")
    assert mine["score"] == 4 and mine["comment"] == SCRIPT
    seen = await ags.wait_type("rating", conversation_id=conversation_id)
    assert seen["score"] == 4

    await vs.send({"type": "rating", "score": 5})
    assert (await vs.wait_type("error"))["code"] == "already_rated"

    detail = (await admin.http.get(f"/api/admin/conversations/{conversation_id}")).json()
    assert detail["rating"]["score"] == 4 and detail["rating"]["comment"] == SCRIPT
    export = (await visitor.http.get("/api/me/export")).json()
    conv = next(c for c in export["conversations"] if c["id"] == conversation_id)
    assert conv["rating"]["score"] == 4

    await vs.close()
    await ags.close()
    assert (await visitor.http.delete("/api/me")).status_code in (200, 204)
    for table in ("notes", "conversation_ratings"):
        left = server.query(f"SELECT COUNT(*) FROM {table} WHERE conversation_id = ?",
                            conversation_id)
        assert left[0][0] == 0, table
