"""Routes for admins: conversations, transcripts and the audit log. Agents get 403."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit, privacy, transcripts
from ..errors import NotFound, ValidationFailed
from ..hub import queue_item
from ..storage.base import ConversationSummary, Message
from .agent import login_page, staff_page
from .common import (
    app_state,
    check_origin,
    client_ip,
    current_staff,
    page,
    read_json,
    require_staff,
)

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


# -- privacy: policies, customers, erasure, retention -------------------------------------------


async def list_policies(request: Request) -> Response:
    await require_staff(request, "admin")
    policies = await app_state(request).store.list_policies()
    return JSONResponse({"policies": [
        {"version": p.version, "effective_date": p.effective_date, "summary": p.summary,
         "sha256": p.sha256, "published_at": p.published_at} for p in policies]})


async def publish_policy(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    state = app_state(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) for k in ("version", "effective_date", "summary", "text")
    ):
        raise ValidationFailed("Send version, effective_date, summary and text as text.")
    policy = await state.policies.publish(
        body["text"], version=body["version"].strip(), summary=body["summary"],
        effective_date=body["effective_date"].strip(),
    )
    await audit.record(state.store, actor=f"staff:{staff.id}", action="policy.publish",
                       ip=client_ip(request), target=f"policy:{policy.version}",
                       detail={"sha256": policy.sha256})
    await state.hub.policy_published(policy.version)
    return JSONResponse({"policy": {"version": policy.version,
                                    "effective_date": policy.effective_date,
                                    "summary": policy.summary, "sha256": policy.sha256,
                                    "published_at": policy.published_at}})


async def list_customers(request: Request) -> Response:
    await require_staff(request, "admin")
    query = (request.query_params.get("q") or "").strip()[:200] or None
    items, total = await app_state(request).store.list_customers(
        query=query, limit=_int(request, "limit", 50, PAGE_LIMIT),
        offset=_int(request, "offset", 0, 10**9),
    )
    return JSONResponse({"customers": items, "total": total},
                        headers={"Cache-Control": "no-store"})


async def legal_hold(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    state = app_state(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("hold"), bool):
        raise ValidationFailed("Send {\"hold\": true} or {\"hold\": false}.", field="hold")
    customer_id = request.path_params["customer_id"]
    customer = await state.store.set_legal_hold(customer_id, body["hold"])
    await audit.record(state.store, actor=f"staff:{staff.id}",
                       action="customer.legal_hold" if body["hold"] else "customer.legal_release",
                       ip=client_ip(request), target=f"customer:{customer_id}")
    items, _ = await state.store.list_customers(query=customer_id, limit=1, offset=0)
    return JSONResponse({"customer": items[0] if items else customer.public()})


async def erase_customer(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    check_origin(request)
    state = app_state(request)
    result = await privacy.erase(state.store, state.hub, request.path_params["customer_id"],
                                 reason="admin", actor=f"staff:{staff.id}",
                                 ip=client_ip(request))
    counts = {k: result[k] for k in ("conversations", "messages", "sessions", "consents",
                                     "access_events")}
    return JSONResponse({"erased": True, "erasure_id": result["id"], "counts": counts})


async def run_purge(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    state = app_state(request)
    body = await read_json(request)
    dry_run = body.get("dry_run", True) if isinstance(body, dict) else None
    if not isinstance(dry_run, bool):
        raise ValidationFailed("dry_run must be true or false.", field="dry_run")
    result = await privacy.purge(state.store, state.hub, state.settings, dry_run=dry_run,
                                 actor=f"staff:{staff.id}", ip=client_ip(request))
    return JSONResponse(result)


routes = [
    Route("/admin", admin_page),
    Route("/api/admin/conversations", list_conversations),
    Route("/api/admin/conversations/{conversation_id}", conversation_detail),
    Route("/api/admin/conversations/{conversation_id}/transcript", transcript),
    Route("/api/admin/audit", audit_log),
    Route("/api/admin/audit/verify", audit_verify),
    Route("/api/admin/policies", list_policies, methods=["GET"]),
    Route("/api/admin/policies", publish_policy, methods=["POST"]),
    Route("/api/admin/customers", list_customers),
    Route("/api/admin/customers/{customer_id}/legal-hold", legal_hold, methods=["POST"]),
    Route("/api/admin/customers/{customer_id}", erase_customer, methods=["DELETE"]),
    Route("/api/admin/purge", run_purge, methods=["POST"]),
]
