"""Admin routes for people: staff accounts, their sign-in history, customers' access records,
and the audit log with filters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit, passwords
from ..errors import CLOSE_SESSION_ENDED, NotFound, ValidationFailed
from ..staff_names import DEFAULT_DISPLAY_NAME, check_display_name, check_sign_in_name
from ..storage.base import Staff, iso
from .common import app_state, client_ip, query_int, read_json, require_staff, text_filter

ROLES = {"agent", "admin"}
STATES = {"active", "disabled"}


def _item(staff: Staff, last_login: str | None = None) -> dict[str, Any]:
    return {**staff.public(), "created_at": staff.created_at, "last_login": last_login}


def _staff_id(request: Request) -> int:
    raw = request.path_params["staff_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound("No such staff member.")
    return int(raw)


async def _target_staff(request: Request) -> Staff:
    """The staff member the path names, or 404."""
    staff = await app_state(request).store.get_staff(_staff_id(request))
    if staff is None:
        raise NotFound("No such staff member.")
    return staff


async def _end_sessions(request: Request, staff_id: int) -> int:
    """Revoke every session of a staff member and close their open sockets."""
    state = app_state(request)
    ended = await state.store.revoke_staff_sessions(staff_id)
    for session_id in ended:
        await state.hub.end_session(session_id, CLOSE_SESSION_ENDED)
    return len(ended)


async def list_staff(request: Request) -> Response:
    await require_staff(request, "admin")
    store = app_state(request).store
    last = await store.last_logins()
    items = [_item(staff, last.get(staff.id)) for staff in await store.list_staff()]
    return JSONResponse({"staff": items}, headers={"Cache-Control": "no-store"})


async def _password(body: dict[str, Any], name: str) -> str:
    password = body.get("password")
    if not isinstance(password, str):
        raise ValidationFailed("Give a password.", field="password")
    reason = await passwords.check_policy_async(password, name)
    if reason:
        raise ValidationFailed(reason, field="password", code="weak_password")
    return password


async def add_staff(request: Request) -> Response:
    actor = await require_staff(request, "admin")
    state = app_state(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("Send name, role and password.")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100 or any(
        ch.isspace() for ch in name.strip()
    ):
        raise ValidationFailed("A name is 1-100 characters without spaces.", field="name")
    if not isinstance(body.get("role"), str) or body["role"] not in ROLES:
        raise ValidationFailed("role is agent or admin.", field="role")
    everyone = await state.store.list_staff()
    check_sign_in_name(name.strip(), everyone)
    display_name = check_display_name(
        body.get("display_name", DEFAULT_DISPLAY_NAME),  # absent: the default; null: refused
        name.strip(), everyone)
    password = await _password(body, name.strip())
    staff = await state.store.add_staff(name.strip(), body["role"],
                                        await passwords.hash_password_async(password),
                                        display_name)
    await audit.record(state.store, actor=f"staff:{actor.id}", action="staff.create",
                       ip=client_ip(request), target=f"staff:{staff.id}",
                       detail={"role": staff.role})
    return JSONResponse({"staff": _item(staff)})


async def change_staff(request: Request) -> Response:
    """Change a role or the display name, or disable or enable an account; disabling ends its
    sessions at once."""
    actor = await require_staff(request, "admin")
    state = app_state(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not body or set(body) - {"role", "state", "display_name"}:
        raise ValidationFailed("Send role, state and/or display_name.")
    role, new_state = body.get("role"), body.get("state")
    if role is not None and (not isinstance(role, str) or role not in ROLES):
        raise ValidationFailed("role is agent or admin.", field="role")
    if new_state is not None and (not isinstance(new_state, str) or new_state not in STATES):
        raise ValidationFailed("state is active or disabled.", field="state")
    before = await _target_staff(request)
    staff_id = before.id
    display_name = None
    if body.get("display_name") is not None:
        display_name = check_display_name(body["display_name"], before.name,
                                          await state.store.list_staff())
    staff = await state.store.update_staff(staff_id, role=role, state=new_state,
                                           display_name=display_name)
    if (new_state == "disabled" and before.state != "disabled") or (
        role is not None and role != before.role
    ):
        # A new role takes effect on the next sign-in; nobody keeps powers they lost.
        await _end_sessions(request, staff_id)
    detail: dict[str, Any] = {k: body[k] for k in ("role", "state") if body.get(k) is not None}
    if display_name is not None:
        detail["display_name"] = "changed"  # names stay out of the log
        if display_name != before.display_name:
            await state.hub.renamed(staff)
    await audit.record(state.store, actor=f"staff:{actor.id}", action="staff.update",
                       ip=client_ip(request), target=f"staff:{staff_id}", detail=detail)
    last = await state.store.last_logins()
    return JSONResponse({"staff": _item(staff, last.get(staff.id))})


async def reset_password(request: Request) -> Response:
    actor = await require_staff(request, "admin")
    state = app_state(request)
    body = await read_json(request)
    staff = await _target_staff(request)
    password = await _password(body if isinstance(body, dict) else {}, staff.name)
    await state.store.set_password(staff.id,
                                   await passwords.hash_password_async(password))
    await state.store.note_login(staff.id, ok=True)
    ended = await _end_sessions(request, staff.id)
    await audit.record(state.store, actor=f"staff:{actor.id}", action="staff.password_reset",
                       ip=client_ip(request), target=f"staff:{staff.id}")
    return JSONResponse({"ok": True, "sessions_ended": ended})


async def force_logout(request: Request) -> Response:
    actor = await require_staff(request, "admin")
    state = app_state(request)
    staff_id = (await _target_staff(request)).id
    ended = await _end_sessions(request, staff_id)
    await audit.record(state.store, actor=f"staff:{actor.id}", action="staff.force_logout",
                       ip=client_ip(request), target=f"staff:{staff_id}",
                       detail={"sessions": ended})
    return JSONResponse({"sessions_ended": ended})


async def login_history(request: Request) -> Response:
    await require_staff(request, "admin")
    staff_id = _staff_id(request)
    events = await app_state(request).store.login_events(
        staff_id, limit=query_int(request, "limit", 100, 1000))
    return JSONResponse({"logins": events}, headers={"Cache-Control": "no-store"})


async def customer_access(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    state = app_state(request)
    customer_id = request.path_params["customer_id"]
    if await state.store.get_customer(customer_id) is None:
        raise NotFound("No such customer.")
    records = await state.store.customer_access(customer_id)
    await audit.record(state.store, actor=f"staff:{staff.id}", action="customer.access_view",
                       ip=client_ip(request), target=f"customer:{customer_id}")
    return JSONResponse({"access": records}, headers={"Cache-Control": "no-store"})


def _moment(request: Request, name: str) -> str | None:
    """A date (YYYY-MM-DD) or ISO time query parameter, in the log's own time format."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    except (ValueError, OverflowError):
        raise ValidationFailed(f"{name} must be a date or an ISO time.", field=name) from None


AUDIT_FILTER_CHARS = 200


async def audit_log(request: Request) -> Response:
    await require_staff(request, "admin")
    params = request.query_params
    entries = await app_state(request).store.list_audit(
        query_int(request, "limit", 100, 1000), query_int(request, "offset", 0, 10**9),
        actor=text_filter(params.get("actor"), "actor", AUDIT_FILTER_CHARS),
        action=text_filter(params.get("action"), "action", AUDIT_FILTER_CHARS),
        target=text_filter(params.get("target"), "target", AUDIT_FILTER_CHARS),
        since=_moment(request, "since"),
        before=_moment(request, "before"),
    )
    return JSONResponse({"entries": entries}, headers={"Cache-Control": "no-store"})


async def audit_verify(request: Request) -> Response:
    await require_staff(request, "admin")
    report = await audit.check(app_state(request).store)
    return JSONResponse(report.as_dict(), headers={"Cache-Control": "no-store"})


routes = [
    Route("/api/admin/staff", list_staff, methods=["GET"]),
    Route("/api/admin/staff", add_staff, methods=["POST"]),
    Route("/api/admin/staff/{staff_id}", change_staff, methods=["PATCH"]),
    Route("/api/admin/staff/{staff_id}/password", reset_password, methods=["POST"]),
    Route("/api/admin/staff/{staff_id}/logout", force_logout, methods=["POST"]),
    Route("/api/admin/staff/{staff_id}/logins", login_history),
    Route("/api/admin/customers/{customer_id}/access", customer_access),
    Route("/api/admin/audit", audit_log),
    Route("/api/admin/audit/verify", audit_verify),
]

