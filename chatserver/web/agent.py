"""Routes for staff: sign-in and sign-out, first-admin setup, the agent dashboard page."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import audit, passwords
from ..errors import (
    CLOSE_SESSION_ENDED,
    ChatError,
    Conflict,
    Forbidden,
    RateLimited,
    ValidationFailed,
)
from ..sessions import (
    CSRF_COOKIE,
    CSRF_MAX_AGE,
    DEVICE_COOKIE,
    DEVICE_MAX_AGE,
    STAFF_COOKIE,
    hash_id,
    new_id,
)
from ..storage.base import Staff, iso
from .common import (
    app_state,
    check_origin,
    clear_staff_cookie,
    client_ip,
    current_staff,
    device_cookie_name,
    page,
    read_json,
    require_staff,
    set_cookie,
    set_staff_cookie,
    staff_session_hash,
    user_agent,
)
from .staff_profile import profile

log = logging.getLogger("chatserver.web")


class InvalidCredentials(ChatError):
    status = 401
    code = "invalid_credentials"
    message = "That name and password do not match an active account."


def _throttled(staff: Staff, now: datetime) -> bool:
    """After repeated failures an account answers only after a growing delay."""
    wait = passwords.login_delay(staff.failed_logins)
    if not wait or staff.last_failed_at is None:
        return False
    last = datetime.fromisoformat(staff.last_failed_at.replace("Z", "+00:00"))
    return now < last + timedelta(seconds=wait)


@dataclass(frozen=True)
class SignedIn:
    staff: Staff
    cookie: str  # the staff cookie's signed value
    device_cookie: str  # the known-device cookie's signed value


def known_device(request: Request, staff: Staff | None) -> str | None:
    """This browser's device id when it signed in to `staff` before: its signed device cookie,
    set at a successful sign-in, names this account. A stranger's failures at the account
    count against the account; this browser's own count against it alone."""
    if staff is None:
        return None
    state = app_state(request)
    raw = state.signer.unsign(DEVICE_COOKIE, request.cookies.get(device_cookie_name(request)),
                              DEVICE_MAX_AGE)
    account, _, device = (raw or "").partition(":")
    return device if account == str(staff.id) and device else None


class _RefusalNotes:
    """A log line at most once a minute per limit, with how many refusals it stands for: a
    flood of attempts must not become a flood of log lines."""

    def __init__(self) -> None:
        self._notes: dict[str, tuple[float, int]] = {}

    def note(self, limit: str) -> None:
        now = time.monotonic()
        last, count = self._notes.get(limit, (-60.0, 0))
        if now - last >= 60:
            log.warning("staff sign-in attempts refused by the %s limit: %d since this line "
                        "last appeared", limit, count + 1)
            self._notes[limit] = (now, 0)
        else:
            self._notes[limit] = (last, count + 1)


_refusals = _RefusalNotes()


async def sign_in(request: Request, username: str, password: str) -> SignedIn:
    """Check a password, record the attempt, and open a new session (a fresh id every time).

    Unknown names, wrong passwords, disabled and throttled accounts all get the same answer
    after the same work (one argon2 verification), so none can be told from another.

    Throttles, so that a stranger cannot lock an account's owner out: a browser that signed
    in to the account before (`known_device`) is judged by its own failures only; any other
    is judged by the account's failures and by the per-address and overall limits, which
    refuse at once (429, no argon2 work) and alike for every name."""
    state = app_state(request)
    ip, agent = client_ip(request), user_agent(request)
    staff = await state.store.get_staff_by_name(username) if 0 < len(username) <= 100 else None
    arrived = state.store.clock()  # delays are judged by when the attempt came, not ended
    device = known_device(request, staff)
    device_waiting = device is not None and state.limits.device_wait(device) > 0
    trusted = device is not None and not device_waiting
    if not trusted:
        refused = await state.limits.admit_sign_in(ip)
        if refused:
            _refusals.note(refused)
            raise RateLimited("Too many sign-in attempts; please wait a minute and try again.")
    # argon2 is deliberately slow: off the event loop, so a sign-in never stalls a chat.
    ok = await passwords.verify_async(staff.password_hash if staff else None, password,
                                      known_device=trusted)
    if device is not None:
        throttled = device_waiting
    else:
        throttled = staff is not None and _throttled(staff, arrived)
    if staff is None or not ok or staff.state != "active" or throttled:
        outcome = ("unknown_user" if staff is None else "throttled" if throttled
                   else "bad_password" if not ok else "disabled")
        await state.store.record_login(staff.id if staff else None, ip, agent, outcome)
        if staff is not None and outcome == "bad_password":
            # Attempts refused during the delay do not lengthen it: otherwise anyone could
            # keep a colleague locked out for good by trying now and then.
            if device is not None:
                state.limits.device_failed(device)
            else:
                await state.store.note_login(staff.id, ok=False)
        await audit.record(state.store, actor=f"staff:{staff.id}" if staff else "anonymous",
                           action="staff.login_failed", ip=ip,
                           target=f"staff:{staff.id}" if staff else None,
                           detail={"outcome": outcome})
        log.info("staff sign-in refused outcome=%s", outcome)
        raise InvalidCredentials()
    raw = new_id()
    expires = state.store.clock() + timedelta(hours=state.settings.staff_session_hours)
    await state.store.create_staff_session(hash_id(raw), staff.id, iso(expires))
    await state.store.record_login(staff.id, ip, agent, "success")
    if staff.failed_logins:
        await state.store.note_login(staff.id, ok=True)
    if device is not None:
        state.limits.device_succeeded(device)
    await audit.record(state.store, actor=f"staff:{staff.id}", action="staff.login", ip=ip,
                       target=f"staff:{staff.id}")
    log.info("staff signed in staff=%s", staff.id)
    return SignedIn(staff, state.signer.sign(STAFF_COOKIE, raw),
                    state.signer.sign(DEVICE_COOKIE, f"{staff.id}:{device or new_id()}"))


async def sign_out(request: Request) -> None:
    state = app_state(request)
    session_hash = staff_session_hash(request)
    staff = await current_staff(request)
    if session_hash is None:
        return
    await state.store.revoke_staff_session(session_hash)
    await state.hub.end_session(session_hash, CLOSE_SESSION_ENDED)
    if staff is not None:
        await audit.record(state.store, actor=f"staff:{staff.id}", action="staff.logout",
                           ip=client_ip(request), target=f"staff:{staff.id}")


def _set_staff_cookies(response: Response, request: Request, signed_in: SignedIn) -> None:
    set_staff_cookie(response, request, signed_in.cookie)
    set_cookie(response, request, device_cookie_name(request), signed_in.device_cookie,
               max_age=DEVICE_MAX_AGE, samesite="strict")


def _safe_next(value: str | None, default: str) -> str:
    """Only a local path: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


def login_page(
    request: Request, *, next_path: str, error: str | None = None, status: int = 200
) -> Response:
    state = app_state(request)
    token = state.signer.new_csrf()
    title = "Admin sign-in" if next_path.startswith("/admin") else "Agent sign-in"
    response = page(
        request, "login.html",
        {"title": title, "csrf_token": token, "error": error, "next": next_path},
        status=status,
    )
    set_cookie(response, request, CSRF_COOKIE, token, max_age=CSRF_MAX_AGE, samesite="strict")
    response.headers["Cache-Control"] = "no-store"
    return response


def staff_page(request: Request, template: str, staff: Staff, title: str) -> Response:
    state = app_state(request)
    token = request.cookies.get(CSRF_COOKIE)
    if state.signer.unsign("csrf", token, CSRF_MAX_AGE) is None:
        token = state.signer.new_csrf()
    response = page(request, template, {"title": title, "staff": staff.public(),
                                        "csrf_token": token,
                                        "mail_enabled": state.mailer.enabled})
    set_cookie(response, request, CSRF_COOKIE, token or "", max_age=CSRF_MAX_AGE,
               samesite="strict")
    response.headers["Cache-Control"] = "no-store"
    return response


async def agent_page(request: Request) -> Response:
    staff = await current_staff(request)
    if staff is None:
        return login_page(request, next_path="/agent")
    return staff_page(request, "agent.html", staff, "Agent dashboard")


async def login_get(request: Request) -> Response:
    """`/login` and a GET of `/staff/login` (a reload after a failed sign-in, a bookmark): the
    sign-in form, or where the user was going when they are signed in already."""
    next_path = _safe_next(request.query_params.get("next"), "/agent")
    if await current_staff(request) is not None:
        return RedirectResponse(next_path, status_code=303)
    return login_page(request, next_path=next_path)


async def form_login(request: Request) -> Response:
    """The HTML sign-in form: CSRF-checked, then a redirect to where the user was going."""
    check_origin(request)
    state = app_state(request)
    form = await request.form()
    next_path = _safe_next(str(form.get("next") or ""), "/agent")
    if not state.signer.csrf_matches(request.cookies.get(CSRF_COOKIE),
                                     str(form.get("csrf_token") or "")):
        return login_page(request, next_path=next_path, status=403,
                          error="The form expired. Please try again.")
    try:
        signed_in = await sign_in(request, str(form.get("username") or "").strip(),
                                  str(form.get("password") or ""))
    except (InvalidCredentials, RateLimited) as exc:
        return login_page(request, next_path=next_path, error=exc.message, status=exc.status)
    response = RedirectResponse(next_path, status_code=303)
    _set_staff_cookies(response, request, signed_in)
    return response


async def form_logout(request: Request) -> Response:
    check_origin(request)
    state = app_state(request)
    form = await request.form()
    if not state.signer.csrf_matches(request.cookies.get(CSRF_COOKIE),
                                     str(form.get("csrf_token") or "")):
        raise Forbidden("The form expired. Please reload the page.", code="csrf_failed")
    await sign_out(request)
    response = RedirectResponse("/agent", status_code=303)
    clear_staff_cookie(response, request)
    return response


async def api_login(request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("username"), str) or not isinstance(
        body.get("password"), str
    ):
        raise ValidationFailed("Send username and password as text.")
    signed_in = await sign_in(request, body["username"].strip(), body["password"])
    response = JSONResponse({"staff": signed_in.staff.public()})
    _set_staff_cookies(response, request, signed_in)
    return response


async def api_logout(request: Request) -> Response:
    check_origin(request)
    await sign_out(request)
    response = JSONResponse({"ok": True})
    clear_staff_cookie(response, request)
    return response


async def api_staff_me(request: Request) -> Response:
    staff = await require_staff(request)
    away = staff.id in await app_state(request).store.away_staff()
    return JSONResponse({"staff": profile(staff, away)})


# -- first-admin setup ------------------------------------------------------------------------


async def setup_page(request: Request) -> Response:
    state = app_state(request)
    token = request.query_params.get("token", "")
    valid = bool(token) and await state.store.setup_token_valid(hash_id(token))
    if not valid or await state.store.count_admins() > 0:
        return page(request, "setup.html", {"title": "Set up", "valid": False}, status=404)
    csrf = state.signer.new_csrf()
    response = page(request, "setup.html", {"title": "Create the first admin", "valid": True,
                                            "token": token, "csrf_token": csrf, "error": None})
    set_cookie(response, request, CSRF_COOKIE, csrf, max_age=CSRF_MAX_AGE, samesite="strict")
    response.headers["Cache-Control"] = "no-store"
    return response


async def setup_submit(request: Request) -> Response:
    check_origin(request)
    state = app_state(request)
    form = await request.form()
    token = str(form.get("token") or "")
    name = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")

    def again(error: str, status: int) -> Response:
        csrf = state.signer.new_csrf()
        response = page(request, "setup.html", {"title": "Create the first admin", "valid": True,
                                                "token": token, "csrf_token": csrf,
                                                "error": error, "username": name}, status=status)
        set_cookie(response, request, CSRF_COOKIE, csrf, max_age=CSRF_MAX_AGE, samesite="strict")
        return response

    if not state.signer.csrf_matches(request.cookies.get(CSRF_COOKIE),
                                     str(form.get("csrf_token") or "")):
        return again("The form expired. Please try again.", 403)
    if not 1 <= len(name) <= 100 or any(ch.isspace() for ch in name):
        return again("Choose a name of 1-100 characters without spaces.", 422)
    reason = await passwords.check_policy_async(password, name)
    if reason:
        return again(reason, 422)
    if password != str(form.get("password2") or ""):
        return again("The two passwords differ.", 422)
    try:
        staff = await state.store.create_first_admin(
            hash_id(token), name, await passwords.hash_password_async(password)
        )
    except Conflict:
        return again("That name is taken; choose another.", 409)
    if staff is None:
        return page(request, "setup.html", {"title": "Set up", "valid": False}, status=404)
    await audit.record(state.store, actor="setup", action="staff.create", ip=client_ip(request),
                       target=f"staff:{staff.id}", detail={"role": "admin"})
    signed_in = await sign_in(request, name, password)
    response = RedirectResponse("/admin", status_code=303)
    _set_staff_cookies(response, request, signed_in)
    return response


routes = [
    Route("/agent", agent_page),
    Route("/login", login_get, methods=["GET"]),
    Route("/staff/login", login_get, methods=["GET"]),
    Route("/staff/login", form_login, methods=["POST"]),
    Route("/staff/logout", form_logout, methods=["POST"]),
    Route("/api/staff/login", api_login, methods=["POST"]),
    Route("/api/staff/logout", api_logout, methods=["POST"]),
    Route("/api/staff/me", api_staff_me),
    Route("/setup", setup_page, methods=["GET"]),
    Route("/setup", setup_submit, methods=["POST"]),
]
