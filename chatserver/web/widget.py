"""Routes for customers: the demo page, the widget, the policy, consent and the pre-chat form."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .. import consent, privacy
from ..capacity import refuse_new_visitors_when_low
from ..errors import ConsentRequired, PolicyOutdated, RateLimited, ValidationFailed
from ..sessions import COOKIES, VISITOR_COOKIE, VISITOR_MAX_AGE, hash_id, new_id
from ..storage.base import iso
from .common import (
    app_state,
    asset_dir,
    client_ip,
    current_visitor,
    page,
    read_json,
    set_visitor_cookie,
    user_agent,
)
from .pending_consent import PendingConsent, set_pending_cookie

log = logging.getLogger("chatserver.web")


async def index(request: Request) -> Response:
    organisation = app_state(request).settings.organisation
    return page(request, "index.html", {"title": f"{organisation} support (demo)"})


async def widget_js(request: Request) -> Response:
    return FileResponse(
        asset_dir("static") / "widget.js",
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


DEFAULT_COLOR = "#2357d9"
WHITE, DARK = "#ffffff", "#1b1f24"
MIN_CONTRAST = 4.5  # WCAG AA for normal text


def _luminance(color: str) -> float:
    """WCAG relative luminance of #rrggbb."""
    channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two #rrggbb colours, 1 to 21."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def brand_colours(value: str | None) -> tuple[str, str, str]:
    """(accent, text on the accent, link colour on white) for the embed's `data-color`.

    The text on the accent is white or near-black, whichever contrasts more; a colour with which
    neither reaches 4.5:1 is refused for the default. Links are the accent only where it is
    readable on the white page; static/widget.js applies the same rule to the launcher."""
    color = (value or "").lower()
    if len(color) != 7 or color[0] != "#" or any(ch not in "0123456789abcdef" for ch in color[1:]):
        color = DEFAULT_COLOR
    if max(contrast(color, WHITE), contrast(color, DARK)) < MIN_CONTRAST:
        color = DEFAULT_COLOR
    ink = WHITE if contrast(color, WHITE) >= contrast(color, DARK) else DARK
    link = color if contrast(color, WHITE) >= MIN_CONTRAST else DARK
    return color, ink, link


def widget_look(request: Request) -> dict[str, str]:
    """The embed's title and colour as widget.js passes them to /widget, validated.

    The account page opened from the widget takes them along, so that its way back to the chat
    looks like the chat the visitor left.
    """
    return {
        "title": (request.query_params.get("title") or "Chat with us")[:60],
        "color": brand_colours(request.query_params.get("color"))[0],
    }


async def widget(request: Request) -> Response:
    return await chat_screen(request, full_page=False)


async def chat_screen(request: Request, *, full_page: bool) -> Response:
    """The chat: inside the embed's iframe (/widget), or as a page of its own (/chat, where
    links in mails lead), which lays the same screens out to fill the window."""
    policy = await app_state(request).policies.current()
    look = widget_look(request)
    _, ink, link = brand_colours(look["color"])
    back = {"in": "chat"} if full_page else {"in": "widget", **look}
    return page(
        request,
        "widget.html",
        {
            **look,
            "full_page": full_page,
            "account_url": "/account?" + urlencode(back),
            "ink": ink,
            "link": link,
            "policy": consent.public(policy),
            "contact_email": app_state(request).settings.contact_email,
        },
    )


async def policy_page(request: Request) -> Response:
    policies = app_state(request).policies
    current = await policies.current()
    version = request.path_params.get("version")
    shown = current if version is None else await policies.get(version)
    history = await app_state(request).store.list_policies()
    return page(
        request,
        "policy.html",
        {
            "title": f"Privacy policy {shown.version}",
            "policy": consent.public(shown),
            "is_current": shown.version == current.version,
            "current_version": current.version,
            "history": [
                {"version": p.version, "effective_date": p.effective_date, "summary": p.summary}
                for p in history
            ],
            "practice": _practice(request),
        },
    )


def _practice(request: Request) -> dict[str, Any]:
    """What this server actually does, from its settings: shown beside the policy text."""
    settings = app_state(request).settings
    return {
        "retention_days": settings.retention_days,
        "access_retention_days": settings.access_retention_days,
        "conversation_retention_days": settings.conversation_retention_days,
        "unfinished_session_hours": settings.unfinished_session_hours,
        "contact_email": settings.contact_email,
        "subprocessors": privacy.subprocessors(settings),
        "mail_enabled": app_state(request).mailer.enabled,
        "reply_email_delay_seconds": settings.reply_email_delay_seconds,
    }


async def api_policy(request: Request) -> Response:
    policy = await app_state(request).policies.current()
    return JSONResponse(consent.public(policy))


async def cookies_page(request: Request) -> Response:
    return page(request, "cookies.html", {"title": "Cookies", "cookies": COOKIES})


async def api_consent(request: Request) -> Response:
    """Record consent to the current policy; start a visitor session when there is none."""
    state = app_state(request)
    body = await read_json(request)
    if not state.limits.allow_consent(client_ip(request)):
        raise RateLimited("Too many consents from your address; please try again later.")
    if not isinstance(body, dict) or not isinstance(body.get("policy_version"), str):
        raise ValidationFailed("Name the policy_version you accept.", field="policy_version")
    unknown = set(body) - {"policy_version", "policy_sha256", "on_behalf", "method"}
    if unknown:
        name = sorted(str(k)[:40] for k in unknown)[0]
        raise ValidationFailed(f"Unknown field {name!r}.", field=name, code="unknown_field")
    current = await state.policies.current()
    if body["policy_version"] != current.version:
        raise PolicyOutdated()
    shown_sha = body.get("policy_sha256", current.sha256)
    if shown_sha != current.sha256:
        raise PolicyOutdated("The policy text you saw is not the current one; please reload it.")
    on_behalf = body.get("on_behalf", False)
    if not isinstance(on_behalf, bool):
        raise ValidationFailed("on_behalf must be true or false.", field="on_behalf")
    if on_behalf and not state.settings.on_behalf_consent:
        # A receipt must not record a statement the visitor was never offered.
        raise ValidationFailed("This server does not ask visitors to confirm writing on behalf "
                               "of their customers.", field="on_behalf")
    method = body.get("method", "widget")
    if not isinstance(method, str) or method not in {"widget", "account"}:
        raise ValidationFailed("method is widget or account.", field="method")

    session = await current_visitor(request)
    if session is None or session.customer_id is None:  # customers already chatting go on
        refuse_new_visitors_when_low(state.settings)
    if session is not None:  # this browser keeps its cookie: record at once
        receipt = await state.store.add_consent(
            session.id,
            policy_version=current.version,
            policy_sha256=current.sha256,
            ip=client_ip(request),
            user_agent=user_agent(request),
            method=method,
            on_behalf=on_behalf,
        )
        return JSONResponse(
            {"policy_version": receipt["policy_version"], "given_at": receipt["given_at"]}
        )
    # A new session: nothing is stored until the browser brings the cookie back (see
    # pending_consent.py), so a browser that blocks cookies leaves no row behind.
    raw = new_id()
    response = JSONResponse(
        {"policy_version": current.version, "given_at": iso(state.store.clock())}
    )
    set_visitor_cookie(response, request, state.signer.sign(VISITOR_COOKIE, raw), VISITOR_MAX_AGE)
    set_pending_cookie(response, request, PendingConsent(
        hash_id(raw), current.version, current.sha256, on_behalf, method))
    return response


async def api_visitor(request: Request) -> Response:
    """The pre-chat form: create the session's customer, or correct it."""
    state = app_state(request)
    body = await read_json(request)
    session = await current_visitor(request)
    if session is None:
        raise ConsentRequired()
    current = await state.policies.current()
    if session.consent_version != current.version:
        raise ConsentRequired("Please read and accept the current privacy policy first.")
    fields = consent.validate_customer(body)
    if session.customer_id is None:
        refuse_new_visitors_when_low(state.settings)
    customer = await state.store.save_customer(session.id, **fields)
    hub = state.hub
    hub.queue_changed()  # a corrected name shows in the agents' queue at once
    response = JSONResponse({"customer": customer.public()})
    if session.customer_id is None:
        # The session now stands for a person: a new id, so that whoever knew the old one (a
        # cookie planted before the form, say) is not let into this customer's account.
        raw = new_id()
        await state.store.rotate_visitor_session(session.id, hash_id(raw))
        set_visitor_cookie(response, request, state.signer.sign(VISITOR_COOKIE, raw),
                           VISITOR_MAX_AGE)
    return response


routes = [
    Route("/", index),
    Route("/widget.js", widget_js),
    Route("/widget", widget),
    Route("/policy", policy_page),
    Route("/policy/{version}", policy_page),
    Route("/api/policy", api_policy),
    Route("/cookies", cookies_page),
    Route("/api/consent", api_consent, methods=["POST"]),
    Route("/api/visitor", api_visitor, methods=["POST"]),
]
