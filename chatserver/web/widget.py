"""Routes for customers: the demo page, the widget, the policy, consent and the pre-chat form."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .. import consent, privacy
from ..errors import ConsentRequired, PolicyOutdated, ValidationFailed
from ..sessions import COOKIES, VISITOR_COOKIE, VISITOR_MAX_AGE, hash_id, new_id
from .common import (
    app_state,
    asset_dir,
    client_ip,
    current_visitor,
    page,
    read_json,
    set_visitor_cookie,
    user_agent,
    visitor_session_hash,
)

log = logging.getLogger("chatserver.web")


async def index(request: Request) -> Response:
    return page(request, "index.html", {"title": "Example Co. support (demo)"})


async def widget_js(request: Request) -> Response:
    return FileResponse(
        asset_dir("static") / "widget.js",
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


def _color(value: str | None) -> str:
    if value and len(value) == 7 and value[0] == "#" and all(
        ch in "0123456789abcdefABCDEF" for ch in value[1:]
    ):
        return value
    return "#2357d9"


async def widget(request: Request) -> Response:
    policy = await app_state(request).policies.current()
    title = (request.query_params.get("title") or "Chat with us")[:60]
    return page(
        request,
        "widget.html",
        {
            "title": title,
            "color": _color(request.query_params.get("color")),
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
    method = body.get("method", "widget")
    if not isinstance(method, str) or method not in {"widget", "account"}:
        raise ValidationFailed("method is widget or account.", field="method")

    session_hash = visitor_session_hash(request)
    session = await state.store.get_visitor_session(session_hash) if session_hash else None
    raw = None
    if session is None:
        raw = new_id()
        session_hash = hash_id(raw)
        await state.store.create_visitor_session(session_hash)
        await state.store.record_access(
            session_hash, "session_start", client_ip(request), user_agent(request)
        )
        log.info("visitor session started session=%s", session_hash[:12])
    assert session_hash is not None
    receipt = await state.store.add_consent(
        session_hash,
        policy_version=current.version,
        policy_sha256=current.sha256,
        ip=client_ip(request),
        user_agent=user_agent(request),
        method=method,
        on_behalf=on_behalf,
    )
    response = JSONResponse(
        {"policy_version": receipt["policy_version"], "given_at": receipt["given_at"]}
    )
    if raw is not None:
        set_visitor_cookie(response, request, state.signer.sign(VISITOR_COOKIE, raw),
                           VISITOR_MAX_AGE)
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
    customer = await state.store.save_customer(session.id, **fields)
    hub = state.hub
    hub.queue_changed()  # a corrected name shows in the agents' queue at once
    return JSONResponse({"customer": customer.public()})


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
