"""Routes that send mail or follow links from it: sign-in and termination links, transcripts by
mail, the full-page chat a reply mail opens, and the outbox as admins see it.

Asking for a link answers 202 with the same body whether or not the address is known, after the
same work (one write transaction with one look-up), and never sooner than LINK_ANSWER_SECONDS
after the request; the mail itself goes out later from the outbox. A followed link is only
checked and moved into a cookie (303, out of the address bar); it is spent by the button of the
page it leads to, so scanners that fetch links spend nothing.
Every answer to a URL with a token carries `Referrer-Policy: no-referrer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import audit, consent, privacy
from ..errors import (
    BadRequest,
    Forbidden,
    LegalHold,
    NotFound,
    NotSignedIn,
    RateLimited,
    ValidationFailed,
)
from ..mail import links
from ..sessions import (
    CSRF_COOKIE,
    CSRF_MAX_AGE,
    LINK_COOKIE,
    VISITOR_COOKIE,
    VISITOR_MAX_AGE,
    hash_id,
    new_id,
)
from ..storage.base import MailToken
from .common import (
    AppState,
    app_state,
    check_origin,
    clear_cookie,
    clear_visitor_cookie,
    client_ip,
    current_visitor,
    error_response,
    page,
    query_int,
    read_json,
    require_staff,
    set_cookie,
    set_visitor_cookie,
    user_agent,
)
from .widget import chat_screen

log = logging.getLogger("chatserver.web")
ACCEPTED = {"accepted": True,
            "message": "If an account uses this address, a link is on its way to it. The link "
                       "works once, for 15 minutes."}
ADDRESS_FIELDS = {"email", "to", "address", "recipient", "recipients", "reply_to"}
NO_REFERRER = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
LINK_INVALID = ("This link does not work any more: it was used already, it expired, a newer "
                "link was sent, or it was not copied whole. Ask for a new one on the account "
                "page.")


def _mail_on(state: AppState) -> None:
    if not state.mailer.enabled:
        raise NotFound("This server sends no email, so nothing can be sent by mail.",
                       code="mail_disabled")


def _refuse_other_recipients(body: dict[Any, Any], allowed: set[str]) -> None:
    """Copies or another recipient, named in any field, are refused before anything else."""
    for key in body:
        name = str(key).lower()
        if name in consent.CC_FIELDS or name.endswith(("_cc", "_bcc")):
            raise ValidationFailed("Copies to other people (CC/BCC) are not allowed.",
                                   field=str(key)[:40], code="cc_not_allowed")
        if name in ADDRESS_FIELDS and name not in allowed:
            raise ValidationFailed(
                "Mail goes only to the address on the account; correct it on the account page "
                "first if it changed.", field=str(key)[:40], code="recipient_not_allowed")
    unknown = sorted(str(k)[:40] for k in body if k not in allowed)
    if unknown:
        raise ValidationFailed(f"Unknown field {unknown[0]!r}.", field=unknown[0],
                               code="unknown_field")


def _throttle_ip(state: AppState, request: Request) -> None:
    if not state.mail_throttle.allow_ip(client_ip(request)):
        raise RateLimited("Too many mail requests from your address; please try again later.")


# Every answer to a request for a link comes this long after the request or later. A known
# address stores a mail (a write that is flushed to disk) and wakes the sender; an unknown one
# stores nothing, and its transaction commits with no flush. That difference, a few milliseconds
# on an idle machine, grew to 16 ms under load (CI on PostgreSQL): enough to tell customers'
# addresses from others by the clock. The floor hides it; real users wait for a mail anyway.
LINK_ANSWER_SECONDS = 0.25


async def _ask_for_link(request: Request, kind: str) -> Response:
    started = time.monotonic()
    state = app_state(request)
    body = await read_json(request)
    _mail_on(state)
    if not isinstance(body, dict):
        raise ValidationFailed("Send a JSON object with the email address.", field="email")
    _refuse_other_recipients(body, {"email"})
    email = consent.validate_email(body.get("email"))
    _throttle_ip(state, request)
    if not state.mail_throttle.allow_address(email):
        raise RateLimited("Enough links were sent to this address for now; please use the "
                          "newest, or try again in 15 minutes.")
    await state.mailer.queue_account_mail(kind, email)
    await asyncio.sleep(max(0.0, LINK_ANSWER_SECONDS - (time.monotonic() - started)))
    return JSONResponse(ACCEPTED, status_code=202, headers={"Cache-Control": "no-store"})


async def api_account_link(request: Request) -> Response:
    return await _ask_for_link(request, "signin")


async def api_terminate_link(request: Request) -> Response:
    return await _ask_for_link(request, "terminate")


def _invalid_link(request: Request) -> Response:
    response = error_response(request, BadRequest(LINK_INVALID, code="link_invalid"))
    response.headers.update(NO_REFERRER)
    return response


async def _sign_in(request: Request, token: MailToken, to: str) -> Response:
    """A new visitor session for the link's customer, in this browser; on to `to`."""
    state = app_state(request)
    raw = new_id()
    try:
        await state.store.create_linked_session(hash_id(raw), token.customer_id,
                                                ip=client_ip(request),
                                                user_agent=user_agent(request))
    except NotFound:
        return _invalid_link(request)
    await audit.record(state.store, actor="customer", action="customer.signin_link",
                       target=f"customer:{token.customer_id}")
    response = RedirectResponse(to, status_code=303, headers=NO_REFERRER)
    set_visitor_cookie(response, request, state.signer.sign(VISITOR_COOKIE, raw),
                       VISITOR_MAX_AGE)
    return response


# -- links from mails: a GET only looks; a button on our own page spends -------------------------
#
# Mail providers and security scanners fetch the links in a mail before its reader does. So a
# GET never spends a link: it moves the link into a short-lived cookie (out of the address bar)
# and shows a page whose button POSTs, with a CSRF token, to use it up.

# purpose: (the page that confirms, where a signed-in browser goes next)
SIGN_IN_LINKS = {"signin": ("/account/link", "/account"), "reply": ("/chat/link", "/chat")}
CONFIRM_TEXT = {
    "signin": {"title": "Sign in to your account", "button": "Sign in",
               "text": "Press the button to open your account in this browser, where you can "
                       "see, correct, download or delete your data."},
    "reply": {"title": "Continue your conversation", "button": "Open the conversation",
              "text": "Press the button to open your conversation in this browser and "
                      "write on."},
}


async def _hold_link(request: Request, purpose: str, here: str) -> Response:
    """Check the link in the address, keep it in a cookie and send the browser on to `here`."""
    state = app_state(request)
    token = request.query_params.get("token")
    if await links.check(state.store, state.signer, purpose, token) is None:
        return _invalid_link(request)
    response = RedirectResponse(here, status_code=303, headers=NO_REFERRER)
    set_cookie(response, request, LINK_COOKIE, token or "",
               max_age=int(links.LINKS[purpose][0].total_seconds()))
    return response


async def _held_link(request: Request, purpose: str) -> MailToken | None:
    state = app_state(request)
    return await links.check(state.store, state.signer, purpose,
                             request.cookies.get(LINK_COOKIE))


def _with_csrf(request: Request, response: Response, csrf: str) -> Response:
    # No `no-referrer` here: the address holds no token any more, and under that policy a
    # browser sends `Origin: null` with the form, which the origin check rightly refuses.
    response.headers["Cache-Control"] = "no-store"
    set_cookie(response, request, CSRF_COOKIE, csrf, max_age=CSRF_MAX_AGE, samesite="strict")
    return response


async def _spend_held_link(request: Request, purpose: str) -> MailToken | None:
    """The confirm button was pressed on our own page: use the held link up, once."""
    check_origin(request)
    state = app_state(request)
    form = await request.form()
    if not state.signer.csrf_matches(request.cookies.get(CSRF_COOKIE),
                                     str(form.get("csrf_token") or "")):
        raise Forbidden("The form expired. Please open the link from the mail again.",
                        code="csrf_failed")
    return await links.spend(state.store, state.signer, purpose,
                             request.cookies.get(LINK_COOKIE))


async def _link_page(request: Request, purpose: str) -> Response:
    """GET of a sign-in or reply link: with the token, hold it; without, the confirm page."""
    here, _ = SIGN_IN_LINKS[purpose]
    if "token" in request.query_params:
        return await _hold_link(request, purpose, here)
    if await _held_link(request, purpose) is None:
        return _invalid_link(request)
    csrf = app_state(request).signer.new_csrf()
    response = page(request, "link_confirm.html",
                    {**CONFIRM_TEXT[purpose], "action": here, "csrf_token": csrf})
    return _with_csrf(request, response, csrf)


async def _link_confirm(request: Request, purpose: str) -> Response:
    token = await _spend_held_link(request, purpose)
    if token is None:
        return _invalid_link(request)
    response = await _sign_in(request, token, SIGN_IN_LINKS[purpose][1])
    clear_cookie(response, request, LINK_COOKIE, "lax")
    return response


async def account_link(request: Request) -> Response:
    """A sign-in link: held, then confirmed by a button; that signs this browser in."""
    return await _link_page(request, "signin")


async def account_link_confirm(request: Request) -> Response:
    return await _link_confirm(request, "signin")


async def chat_page(request: Request) -> Response:
    """The chat as a full page. A reply mail's link (/chat?token=) goes by /chat/link first."""
    if "token" in request.query_params:
        return await _hold_link(request, "reply", SIGN_IN_LINKS["reply"][0])
    return await chat_screen(request, full_page=True)


async def chat_link(request: Request) -> Response:
    return await _link_page(request, "reply")


async def chat_link_confirm(request: Request) -> Response:
    return await _link_confirm(request, "reply")


# -- termination by mail ------------------------------------------------------------------------


def _terminate_page(request: Request, state_name: str, status: int = 200, **extra: Any
                    ) -> Response:
    response = page(request, "account_terminate.html",
                    {"title": "Delete your account", "state": state_name,
                     "contact_email": app_state(request).settings.contact_email, **extra},
                    status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def terminate_page(request: Request) -> Response:
    """A termination link moves into a short-lived cookie at once; then the confirm form."""
    if "token" in request.query_params:
        return await _hold_link(request, "terminate", "/account/terminate")
    if await _held_link(request, "terminate") is None:
        return _invalid_link(request)
    csrf = app_state(request).signer.new_csrf()
    return _with_csrf(request, _terminate_page(request, "confirm", csrf_token=csrf), csrf)


async def terminate_confirm(request: Request) -> Response:
    """Confirmed: erase every account of the address the link was sent to, as DELETE /api/me
    does, then queue a last mail without any conversation content."""
    state = app_state(request)
    token = await _spend_held_link(request, "terminate")
    customer = await state.store.get_customer(token.customer_id) if token else None
    if customer is None:
        return _invalid_link(request)
    erased = held = 0
    for each in await state.store.customers_by_email(customer.email):
        try:
            await privacy.erase(state.store, state.hub, each.id, reason="request_by_email",
                                actor="customer", ip=None)
            erased += 1
        except LegalHold:
            held += 1
        except NotFound:
            continue  # erased meanwhile by another request
    if erased:
        await state.mailer.queue("farewell", address=customer.email)
    response = _terminate_page(request, "done", erased=erased, held=held)
    clear_cookie(response, request, LINK_COOKIE, "lax")
    if request.cookies.get(VISITOR_COOKIE) and await current_visitor(request) is None:
        clear_visitor_cookie(response, request)
    return response


# -- transcripts by mail ------------------------------------------------------------------------


async def api_transcript_email(request: Request) -> Response:
    """One of the customer's own conversations, to the customer's own address on file."""
    state = app_state(request)
    body = await read_json(request)
    session = await current_visitor(request)
    if session is None:
        raise NotSignedIn("No chat session in this browser.")
    if session.customer_id is None:
        raise NotFound("This session has no account details yet.", code="no_customer")
    _mail_on(state)
    if not isinstance(body, dict):
        raise ValidationFailed("Send a JSON object with the conversation_id.",
                               field="conversation_id")
    _refuse_other_recipients(body, {"conversation_id"})
    conversation_id = body.get("conversation_id")
    if not isinstance(conversation_id, str) or not 0 < len(conversation_id) <= 64:
        raise ValidationFailed("Name the conversation_id.", field="conversation_id")
    conversation = await state.store.get_conversation(conversation_id)
    if conversation is None or conversation.customer_id != session.customer_id:
        raise NotFound("You have no conversation with that id.")
    _throttle_ip(state, request)
    if not state.mail_throttle.allow_customer(session.customer_id):
        raise RateLimited("Enough transcripts were sent for now; please try again later.")
    await state.mailer.queue("transcript", customer_id=session.customer_id,
                             conversation_id=conversation.id)
    await audit.record(state.store, actor="customer", action="transcript.email",
                       target=f"conversation:{conversation.id}")
    return JSONResponse({"accepted": True, "message": "The transcript is on its way to the "
                         "address on your account."}, status_code=202)


async def api_mail(request: Request) -> Response:
    """Whether this server sends mail: the widget promises email replies only when it does."""
    return JSONResponse({"enabled": app_state(request).mailer.enabled})


async def api_admin_mail(request: Request) -> Response:
    """The outbox for admins: id, kind, status, attempts, last error and times; never an
    address or a word of a mail."""
    await require_staff(request, "admin")
    state = app_state(request)
    limit = query_int(request, "limit", 100, 500)
    offset = query_int(request, "offset", 0, 10**9)
    mails, total = await state.store.list_mail(limit=limit, offset=offset)
    return JSONResponse({"enabled": state.mailer.enabled, "mails": mails, "total": total},
                        headers={"Cache-Control": "no-store"})


routes = [
    Route("/api/account/link", api_account_link, methods=["POST"]),
    Route("/api/account/terminate-link", api_terminate_link, methods=["POST"]),
    Route("/account/link", account_link, methods=["GET"]),
    Route("/account/link", account_link_confirm, methods=["POST"]),
    Route("/account/terminate", terminate_page, methods=["GET"]),
    Route("/account/terminate", terminate_confirm, methods=["POST"]),
    Route("/api/me/transcript-email", api_transcript_email, methods=["POST"]),
    Route("/chat", chat_page, methods=["GET"]),
    Route("/chat/link", chat_link, methods=["GET"]),
    Route("/chat/link", chat_link_confirm, methods=["POST"]),
    Route("/api/mail", api_mail, methods=["GET"]),
    Route("/api/admin/mail", api_admin_mail, methods=["GET"]),
]
