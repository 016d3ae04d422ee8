"""Canned responses over HTTP: admins manage them (each change audited); every signed-in staff
member reads them, for the dashboard's "/" shortcuts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit
from ..canned import check_body, check_shortcut
from ..errors import NotFound, ValidationFailed
from .common import app_state, check_origin, client_ip, read_json, require_staff

NO_STORE = {"Cache-Control": "no-store"}


def _canned_id(request: Request) -> int:
    raw = request.path_params["canned_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound("No such canned response.")
    return int(raw)


async def list_for_staff(request: Request) -> Response:
    await require_staff(request)
    items = [c.public() for c in await app_state(request).store.list_canned()]
    return JSONResponse({"canned": items}, headers=NO_STORE)


async def list_for_admin(request: Request) -> Response:
    await require_staff(request, "admin")
    items = [c.public() for c in await app_state(request).store.list_canned()]
    return JSONResponse({"canned": items}, headers=NO_STORE)


async def create(request: Request) -> Response:
    actor = await require_staff(request, "admin")
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"shortcut", "body"}:
        raise ValidationFailed("Send shortcut and body.")
    shortcut, text = check_shortcut(body.get("shortcut")), check_body(body.get("body"))
    store = app_state(request).store
    canned = await store.add_canned(shortcut, text)
    await audit.record(store, actor=f"staff:{actor.id}", action="canned.create",
                       ip=client_ip(request), target=f"canned:{canned.id}")
    return JSONResponse({"canned": canned.public()})


async def change(request: Request) -> Response:
    actor = await require_staff(request, "admin")
    canned_id = _canned_id(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not body or set(body) - {"shortcut", "body"}:
        raise ValidationFailed("Send shortcut and/or body.")
    shortcut = check_shortcut(body["shortcut"]) if "shortcut" in body else None
    text = check_body(body["body"]) if "body" in body else None
    store = app_state(request).store
    canned = await store.update_canned(canned_id, shortcut=shortcut, body=text)
    await audit.record(store, actor=f"staff:{actor.id}", action="canned.update",
                       ip=client_ip(request), target=f"canned:{canned.id}",
                       detail={"fields": sorted(body)})
    return JSONResponse({"canned": canned.public()})


async def remove(request: Request) -> Response:
    actor = await require_staff(request, "admin")
    check_origin(request)  # no body to carry the check (read_json does it for the others)
    canned_id = _canned_id(request)
    store = app_state(request).store
    await store.delete_canned(canned_id)
    await audit.record(store, actor=f"staff:{actor.id}", action="canned.delete",
                       ip=client_ip(request), target=f"canned:{canned_id}")
    return JSONResponse({"deleted": canned_id})


routes = [
    Route("/api/agent/canned", list_for_staff, methods=["GET"]),
    Route("/api/admin/canned", list_for_admin, methods=["GET"]),
    Route("/api/admin/canned", create, methods=["POST"]),
    Route("/api/admin/canned/{canned_id}", change, methods=["PATCH"]),
    Route("/api/admin/canned/{canned_id}", remove, methods=["DELETE"]),
]
