"""A consent is stored only once the browser shows it keeps the session cookie."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from .support import Server

TABLES = ("visitor_sessions", "consents", "access_events")


def _rows(server: Server) -> dict[str, int]:
    return {t: int(server.query(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}


def _set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


async def test_a_browser_that_keeps_no_cookie_leaves_no_row(
    make_server: Callable[..., Server],
) -> None:
    """Cookies blocked: every "Start chat" is answered, and no session, consent or access
    record (IP, user agent) is stored for a visitor who could never see or delete it."""
    server = make_server()
    blocked = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    async with httpx.AsyncClient(base_url=server.url, cookies=blocked, timeout=10) as browser:
        for _ in range(3):
            consent = await browser.post("/api/consent", json={"policy_version": "1.01"})
            assert consent.status_code == 200, consent.text
            assert any(h.startswith("chat_session=") for h in _set_cookies(consent))
            assert list(browser.cookies.jar) == []  # the "browser" dropped it
            assert (await browser.get("/api/me")).status_code == 401
        form = await browser.post("/api/visitor", json={"name": "No Cookie",
                                                        "email": "nocookie@example.com"})
        assert form.status_code == 403 and form.json()["error"] == "consent_required"
    assert _rows(server) == {t: 0 for t in TABLES}


async def test_consent_is_recorded_when_the_cookie_comes_back(
    make_server: Callable[..., Server],
) -> None:
    """The next request with the cookie records session, consent and access record, once;
    the short-lived pending cookie is then cleared."""
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=10,
                                 headers={"User-Agent": "pending-test"}) as browser:
        consent = await browser.post("/api/consent", json={"policy_version": "1.01",
                                                           "on_behalf": True})
        assert consent.status_code == 200
        assert {c.name for c in browser.cookies.jar} == {"chat_session", "chat_consent"}
        assert _rows(server) == {t: 0 for t in TABLES}

        me = await browser.get("/api/me")
        assert me.status_code == 200
        assert me.json()["consent"] == {"policy_version": "1.01", "current": True}
        assert [c["on_behalf"] for c in me.json()["consents"]] == [True]
        assert any(h.startswith("chat_consent=") and "max-age=0" in h.lower()
                   for h in _set_cookies(me))
        assert {c.name for c in browser.cookies.jar} == {"chat_session"}
        assert _rows(server) == {"visitor_sessions": 1, "consents": 1, "access_events": 1}

        export = (await browser.get("/api/me/export")).json()
        [receipt] = export["consents"]
        assert receipt["user_agent"] == "pending-test" and receipt["method"] == "widget"
        assert export["access_records"][0]["kind"] == "session_start"
        assert (await browser.post("/api/visitor", json={"name": "Back Again",
                                                         "email": "back@example.com"})
                ).status_code == 200
    assert _rows(server)["consents"] == 1


async def test_requests_racing_with_the_cookie_record_it_once(
    make_server: Callable[..., Server],
) -> None:
    """Several first requests at once, all carrying the cookie, make one session and consent."""
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as browser:
        assert (await browser.post("/api/consent", json={"policy_version": "1.01"})
                ).status_code == 200
        cookies = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as raw:
        answers = await asyncio.gather(*(raw.get("/api/me", headers={"Cookie": cookies})
                                         for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert _rows(server) == {"visitor_sessions": 1, "consents": 1, "access_events": 1}


async def test_a_pending_consent_is_bound_to_its_session(
    make_server: Callable[..., Server],
) -> None:
    """A pending-consent cookie moved to another session, or tampered with, records nothing."""
    server = make_server()
    jars = []
    for _ in range(2):
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as browser:
            assert (await browser.post("/api/consent", json={"policy_version": "1.01"})
                    ).status_code == 200
            jars.append({c.name: c.value for c in browser.cookies.jar})
    first, second = jars
    pending = first["chat_consent"]
    tampered = pending[:-2] + ("AA" if not pending.endswith("AA") else "BB")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as raw:
        for session, proof in ((second["chat_session"], pending),
                               (first["chat_session"], tampered),
                               (first["chat_session"], second["chat_consent"])):
            me = await raw.get("/api/me", headers={
                "Cookie": f"chat_session={session}; chat_consent={proof}"})
            assert me.status_code == 401
    assert _rows(server) == {t: 0 for t in TABLES}
