"""Routes for admins: conversations, transcripts and the audit log. Agents get 403."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit, transcripts
from ..errors import NotFound, ValidationFailed
from ..hub import queue_item
from ..storage.base import ConversationSummary, Message
from .agent import login_page, staff_page
from .common import app_state, client_ip, current_staff, page, require_staff

PAGE_LIMIT = 200


def _int(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a whole number.", field=name) from None
    if not 0 <= value <= high:
        raise ValidationFailed(f"{name} must be between 0 and {high}.", field=name)
    return value


async def admin_page(request: Request) -> Response:
    staff = await current_staff(request)
    if staff is None:
        return login_page(request, next_path="/admin")
    if staff.role != "admin":
        return page(request, "error.html", {"title": "Admins only", "status": 403,
                                            "message": "The admin console is for admins."},
                    status=403)
    return staff_page(request, "admin.html", staff, "Admin console")


async def list_conversations(request: Request) -> Response:
    await require_staff(request, "admin")
    status = request.query_params.get("status") or None
    if status not in {None, "queued", "active", "closed"}:
        raise ValidationFailed("status is queued, active or closed.", field="status")
    query = (request.query_params.get("q") or "").strip()[:200] or None
    found, total = await app_state(request).store.search_conversations(
        status=status, query=query, limit=_int(request, "limit", 50, PAGE_LIMIT),
        offset=_int(request, "offset", 0, 10**9),
    )
    return JSONResponse({"conversations": [s.as_dict() for s in found], "total": total})


async def _load(request: Request) -> tuple[ConversationSummary, list[Message]]:
    store = app_state(request).store
    conversation_id = request.path_params["conversation_id"]
    summary = await store.conversation_summary(conversation_id)
    if summary is None:
        raise NotFound("No such conversation.")
    messages = []
    after = 0
    while True:  # page through, so a long conversation is never cut short
        chunk = await store.messages_after(conversation_id, after, 1000)
        messages.extend(chunk)
        if len(chunk) < 1000:
            break
        after = chunk[-1].seq
    return summary, messages


async def conversation_detail(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    summary, messages = await _load(request)
    await audit.record(app_state(request).store, actor=f"staff:{staff.id}",
                       action="transcript.view", ip=client_ip(request),
                       target=f"conversation:{summary.conversation.id}")
    return JSONResponse(
        {"conversation": {**summary.as_dict(), "queue": queue_item(summary)},
         "messages": [m.frame() for m in messages]},
        headers={"Cache-Control": "no-store"},
    )


async def transcript(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    fmt = request.query_params.get("format", "txt")
    if fmt not in transcripts.FORMATS:
        raise ValidationFailed("format is txt, json, html or csv.", field="format")
    summary, messages = await _load(request)
    # Recorded before the bytes leave: a download that is not in the log does not happen.
    await audit.record(app_state(request).store, actor=f"staff:{staff.id}",
                       action="transcript.download", ip=client_ip(request),
                       target=f"conversation:{summary.conversation.id}",
                       detail={"format": fmt, "messages": len(messages)})
    body = transcripts.render(fmt, summary, messages)
    filename = f"transcript-{summary.conversation.id}.{fmt}"
    return Response(
        body,
        media_type=transcripts.FORMATS[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


async def audit_log(request: Request) -> Response:
    await require_staff(request, "admin")
    entries = await app_state(request).store.list_audit(
        _int(request, "limit", 100, 1000), _int(request, "offset", 0, 10**9)
    )
    return JSONResponse({"entries": entries}, headers={"Cache-Control": "no-store"})


async def audit_verify(request: Request) -> Response:
    await require_staff(request, "admin")
    broken = audit.verify(await app_state(request).store.all_audit())
    return JSONResponse({"intact": broken is None,
                         "first_broken_id": broken["id"] if broken else None})


routes = [
    Route("/admin", admin_page),
    Route("/api/admin/conversations", list_conversations),
    Route("/api/admin/conversations/{conversation_id}", conversation_detail),
    Route("/api/admin/conversations/{conversation_id}/transcript", transcript),
    Route("/api/admin/audit", audit_log),
    Route("/api/admin/audit/verify", audit_verify),
]
