"""Routes for staff: sign-in and sign-out, first-admin setup, the agent dashboard page."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import audit, passwords
from ..errors import CLOSE_SESSION_ENDED, ChatError, Conflict, Forbidden, ValidationFailed
from ..sessions import CSRF_COOKIE, CSRF_MAX_AGE, STAFF_COOKIE, hash_id, new_id
from ..storage.base import Staff, iso
from .common import (
    app_state,
    check_origin,
    clear_staff_cookie,
    client_ip,
    current_staff,
    page,
    read_json,
    require_staff,
    set_cookie,
    set_staff_cookie,
    staff_session_hash,
    user_agent,
)

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


async def sign_in(request: Request, username: str, password: str) -> tuple[Staff, str]:
    """Check a password, record the attempt, and open a new session (a fresh id every time).

    Unknown names, wrong passwords, disabled and throttled accounts all get the same answer
    after the same work (one argon2 verification), so none can be told from another."""
    state = app_state(request)
    ip, agent = client_ip(request), user_agent(request)
    staff = await state.store.get_staff_by_name(username) if 0 < len(username) <= 100 else None
    # argon2 is deliberately slow: off the event loop, so a sign-in never stalls a chat.
    ok = await passwords.verify_async(staff.password_hash if staff else None, password)
    throttled = staff is not None and _throttled(staff, state.store.clock())
    if staff is None or not ok or staff.state != "active" or throttled:
        outcome = ("unknown_user" if staff is None else "throttled" if throttled
                   else "bad_password" if not ok else "disabled")
        await state.store.record_login(staff.id if staff else None, ip, agent, outcome)
        if staff is not None and outcome == "bad_password":
            # Attempts refused during the delay do not lengthen it: otherwise anyone could
            # keep a colleague locked out for good by trying now and then.
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
    await audit.record(state.store, actor=f"staff:{staff.id}", action="staff.login", ip=ip,
                       target=f"staff:{staff.id}")
    log.info("staff signed in staff=%s", staff.id)
    return staff, state.signer.sign(STAFF_COOKIE, raw)


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


def _set_staff_cookie(response: Response, request: Request, value: str) -> None:
    set_staff_cookie(response, request, value)


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
                                        "csrf_token": token})
    set_cookie(response, request, CSRF_COOKIE, token or "", max_age=CSRF_MAX_AGE,
               samesite="strict")
    response.headers["Cache-Control"] = "no-store"
    return response


async def agent_page(request: Request) -> Response:
    staff = await current_staff(request)
    if staff is None:
        return login_page(request, next_path="/agent")
    return staff_page(request, "agent.html", staff, "Agent dashboard")


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
        _, cookie = await sign_in(request, str(form.get("username") or "").strip(),
                                  str(form.get("password") or ""))
    except InvalidCredentials as exc:
        return login_page(request, next_path=next_path, error=exc.message, status=401)
    response = RedirectResponse(next_path, status_code=303)
    _set_staff_cookie(response, request, cookie)
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
    staff, cookie = await sign_in(request, body["username"].strip(), body["password"])
    response = JSONResponse({"staff": staff.public()})
    _set_staff_cookie(response, request, cookie)
    return response


async def api_logout(request: Request) -> Response:
    check_origin(request)
    await sign_out(request)
    response = JSONResponse({"ok": True})
    clear_staff_cookie(response, request)
    return response


async def api_staff_me(request: Request) -> Response:
    staff = await require_staff(request)
    return JSONResponse({"staff": staff.public()})


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
    _, cookie = await sign_in(request, name, password)
    response = RedirectResponse("/admin", status_code=303)
    _set_staff_cookie(response, request, cookie)
    return response


routes = [
    Route("/agent", agent_page),
    Route("/staff/login", form_login, methods=["POST"]),
    Route("/staff/logout", form_logout, methods=["POST"]),
    Route("/api/staff/login", api_login, methods=["POST"]),
    Route("/api/staff/logout", api_logout, methods=["POST"]),
    Route("/api/staff/me", api_staff_me),
    Route("/setup", setup_page, methods=["GET"]),
    Route("/setup", setup_submit, methods=["POST"]),
]
