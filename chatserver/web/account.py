"""Routes for a customer's own data: view, correct, export, withdraw consent, erase."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit, consent, privacy
from ..errors import CLOSE_NO_CONSENT, NotFound, NotSignedIn
from ..storage.base import VisitorSession
from .common import app_state, check_origin, clear_visitor_cookie, current_visitor, page, read_json
from .widget import widget_look

log = logging.getLogger("chatserver.web")


async def _session(request: Request) -> VisitorSession:
    session = await current_visitor(request)
    if session is None:
        raise NotSignedIn("No chat session in this browser.")
    return session


def _customer_id(session: VisitorSession) -> str:
    if session.customer_id is None:
        raise NotFound("This session has no account details yet.", code="no_customer")
    return session.customer_id


async def account_page(request: Request) -> Response:
    settings = app_state(request).settings
    # Opened inside the widget's frame it shares the widget's (partitioned) cookie, which a
    # new tab on an embedding customer's site would not see; so the widget opens it in place.
    came_from = request.query_params.get("in")
    in_widget = came_from == "widget"
    chat_url = ("/widget?" + urlencode(widget_look(request)) if in_widget
                else "/chat" if came_from == "chat" else None)
    return page(request, "account.html",
                {"title": "Your data", "contact_email": settings.contact_email,
                 "in_widget": in_widget,
                 "mail_enabled": app_state(request).mailer.enabled,
                 "chat_url": chat_url})


async def api_me(request: Request) -> Response:
    session = await _session(request)
    return JSONResponse(await _me(request, session), headers={"Cache-Control": "no-store"})


async def api_session(request: Request) -> Response:
    """Whether this browser has a visitor session, and if so the same view as GET /api/me.

    Always 200: the widget asks this before consent, and a 401 there would show as a failed
    request in the console of every site that embeds the widget."""
    session = await current_visitor(request)
    body = {"session": False} if session is None else {"session": True,
                                                         **await _me(request, session)}
    if session is not None:
        # The widget reconnects on a new page only to an open conversation: a socket would
        # otherwise open a new, empty one in the agents' queue.
        body["open_conversation"] = await _has_open_conversation(request, session)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _has_open_conversation(request: Request, session: VisitorSession) -> bool:
    if session.customer_id is None:
        return False
    try:
        await app_state(request).store.open_conversation(session.customer_id, create=False)
    except NotFound:
        return False
    return True


async def _me(request: Request, session: VisitorSession) -> dict[str, Any]:
    state = app_state(request)
    current = await state.policies.current()
    customer = await state.store.get_customer(session.customer_id) if session.customer_id else None
    consents = (await state.store.list_consents(customer.id) if customer
                else await state.store.session_consents(session.id))
    consent_info: dict[str, Any] | None = None
    if session.consent_version:
        consent_info = {
            "policy_version": session.consent_version,
            "current": session.consent_version == current.version,
        }
    return {
        "customer": customer.public() if customer else None,
        "consent": consent_info,
        "policy_version": current.version,
        "consents": [
            {k: v for k, v in c.items() if k not in {"ip", "user_agent"}} for c in consents
        ],
        "legal_hold": customer.legal_hold if customer else False,
        # The account page offers a transcript by mail per conversation.
        "conversations": [
            {"id": c.id, "status": c.status, "created_at": c.created_at,
             "closed_at": c.closed_at, "last_message_at": c.last_message_at}
            for c in (await state.store.customer_conversations(customer.id) if customer else [])
        ],
        # Whether replies, links and transcripts can come by mail on this server.
        "mail_enabled": state.mailer.enabled,
    }


async def api_correct(request: Request) -> Response:
    state = app_state(request)
    body = await read_json(request)
    session = await _session(request)
    fields = consent.validate_customer(body, partial=True)
    customer = await state.store.update_customer(_customer_id(session), fields)
    state.hub.queue_changed()  # dashboards show the corrected details at once
    return JSONResponse({"customer": customer.public()})


async def api_export(request: Request) -> Response:
    state = app_state(request)
    session = await _session(request)
    document = await privacy.export_document(state.store, session.customer_id,
                                             session_id=session.id)
    await audit.record(state.store, actor="customer", action="customer.export",
                       target=f"customer:{session.customer_id}" if session.customer_id else None)
    return Response(
        json.dumps(document, ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-chat-data.json"',
                 "Cache-Control": "no-store"},
    )


async def api_erase(request: Request) -> Response:
    state = app_state(request)
    check_origin(request)
    session = await _session(request)
    result = await privacy.erase(
        state.store, state.hub, session.customer_id, session_id=session.id,
        reason="request", actor="customer", ip=None,
    )
    response = JSONResponse({"erased": True, "erasure_id": result["id"]})
    clear_visitor_cookie(response, request)
    return response


async def api_withdraw(request: Request) -> Response:
    """Withdrawing is one request, as easy as consenting; chat stops until consent is given."""
    state = app_state(request)
    await read_json(request)
    session = await _session(request)
    withdrawn = await state.store.withdraw_consents(session.id)
    await state.hub.end_session(session.id, CLOSE_NO_CONSENT)
    log.info("consent withdrawn session=%s", session.id[:12])
    return JSONResponse({"withdrawn": withdrawn})


routes = [
    Route("/account", account_page),
    Route("/api/session", api_session, methods=["GET"]),
    Route("/api/me", api_me, methods=["GET"]),
    Route("/api/me", api_correct, methods=["PATCH"]),
    Route("/api/me", api_erase, methods=["DELETE"]),
    Route("/api/me/export", api_export, methods=["GET"]),
    Route("/api/consent/withdraw", api_withdraw, methods=["POST"]),
]


