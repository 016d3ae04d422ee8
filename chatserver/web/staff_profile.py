"""An agent's own profile, set from the dashboard: the display name customers see and the away
state; and the colleagues a conversation can be handed to."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit
from ..errors import ValidationFailed
from ..staff_names import check_display_name
from ..storage.base import Staff
from .common import app_state, client_ip, read_json, require_staff

NO_STORE = {"Cache-Control": "no-store"}


def profile(staff: Staff, away: bool) -> dict[str, Any]:
    """What a staff member's own dashboard knows of them (GET and PATCH /api/staff/me)."""
    return {**staff.public(), "away": away}


async def change_me(request: Request) -> Response:
    """`{"display_name"?, "away"?}`: what customers see of me, and whether I take conversations.
    Customers in my open conversations see a new name at once; going away or back changes
    whether customers see agents online and whether colleagues may transfer to me."""
    staff = await require_staff(request)
    state = app_state(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not body or set(body) - {"display_name", "away"}:
        raise ValidationFailed("Send display_name and/or away.")
    # A null is refused like any other wrong type (the API says string and boolean), so a
    # client that meant to send a value never gets a 200 for a change it did not make.
    away = body.get("away")
    if "away" in body and not isinstance(away, bool):
        raise ValidationFailed("away is true or false.", field="away")
    display_name = None
    if "display_name" in body:
        display_name = check_display_name(body["display_name"], staff.name,
                                          await state.store.list_staff())
    detail: dict[str, Any] = {}
    if display_name is not None and display_name != staff.display_name:
        staff = await state.store.update_staff(staff.id, display_name=display_name)
        detail["display_name"] = "changed"  # names stay out of the log
        await state.hub.renamed(staff)
    if away is not None:
        await state.store.set_staff_away(staff.id, away)
        await state.hub.set_away(staff.id, away)
        detail["away"] = away
    if detail:
        await audit.record(state.store, actor=f"staff:{staff.id}", action="staff.profile",
                           ip=client_ip(request), target=f"staff:{staff.id}", detail=detail)
    now_away = staff.id in await state.store.away_staff()
    return JSONResponse({"staff": profile(staff, now_away)}, headers=NO_STORE)


async def colleagues(request: Request) -> Response:
    """Active staff a conversation can be handed to: sign-in name (what `transfer` takes),
    display name, role, away and whether their dashboard is open."""
    await require_staff(request)
    state = app_state(request)
    away = await state.store.away_staff()
    people = [
        {"name": s.name, "display_name": s.display_name, "role": s.role,
         "away": s.id in away, "online": state.hub.agent_present(s.id)}
        for s in await state.store.list_staff() if s.state == "active"
    ]
    return JSONResponse({"staff": people}, headers=NO_STORE)


routes = [
    Route("/api/staff/me", change_me, methods=["PATCH"]),
    Route("/api/staff/colleagues", colleagues, methods=["GET"]),
]
