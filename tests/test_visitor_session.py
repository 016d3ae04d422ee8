"""The visitor session gets a new id when the pre-chat form turns it into a customer's session."""

from __future__ import annotations

import httpx
from websockets.exceptions import InvalidStatus

from .support import Server, Visitor, open_socket


async def test_pre_chat_form_rotates_the_session_id(server: Server) -> None:
    """Whoever knew the session id before the form (a planted cookie, say) is not let into the
    account it becomes: the form sets a new cookie, the old one is dead, and the session keeps
    its consent; a later correction keeps the id."""
    v = Visitor(server)
    assert (await v.consent()).status_code == 200
    before = v.http.cookies["chat_session"]
    created = await v.register(name="Fixated", email="fixated@example.com")
    assert created.status_code == 200
    assert "chat_session=" in created.headers.get("set-cookie", "")
    after = v.http.cookies["chat_session"]
    assert after != before

    me = await v.http.get("/api/me")
    assert me.status_code == 200 and me.json()["customer"]["email"] == "fixated@example.com"
    assert me.json()["consent"]["policy_version"] == "1.01"
    async with httpx.AsyncClient(base_url=server.url) as planted:
        stale = await planted.get("/api/me", headers={"Cookie": f"chat_session={before}"})
        assert stale.status_code == 401
    try:
        s = await open_socket(server, "/ws/visitor", f"chat_session={before}")
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
    else:
        assert await s.closed_code() == 4401
    fresh = await v.socket()
    await fresh.wait_type("welcome")
    await fresh.close()

    corrected = await v.register(name="Fixated Again", email="fixated@example.com")
    assert corrected.status_code == 200 and "set-cookie" not in corrected.headers
    assert v.http.cookies["chat_session"] == after
    export = (await v.http.get("/api/me/export")).json()
    # The consent and the session's first access record moved to the new id with it.
    [session] = export["sessions"]
    assert {r["session_ref"] for r in export["access_records"]} == {session["ref"]}
    assert "session_start" in {r["kind"] for r in export["access_records"]}
    assert len(export["consents"]) == 1
    await v.aclose()
