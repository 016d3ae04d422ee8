"""Admin routes for privacy: policy versions, customers, legal holds, erasure, retention."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit, consent, privacy
from ..errors import ValidationFailed
from ..storage.base import Staff
from .common import (
    app_state,
    body_int,
    check_origin,
    client_ip,
    query_int,
    read_json,
    read_search,
    require_staff,
    text_filter,
)

PAGE_LIMIT = 200



async def list_policies(request: Request) -> Response:
    await require_staff(request, "admin")
    policies = await app_state(request).store.list_policies()
    return JSONResponse({"policies": [
        {"version": p.version, "effective_date": p.effective_date, "summary": p.summary,
         "sha256": p.sha256, "published_at": p.published_at} for p in policies]})


async def _chats_to_pause(request: Request) -> int:
    """Open conversations: publishing a version pauses each until its visitor accepts it."""
    return len(await app_state(request).store.open_conversations())


async def current_policy(request: Request) -> Response:
    """The current version with its Markdown text, where the next version starts from."""
    await require_staff(request, "admin")
    current = await app_state(request).policies.current()
    return JSONResponse({
        "policy": {"version": current.version, "effective_date": current.effective_date,
                   "summary": current.summary, "sha256": current.sha256,
                   "published_at": current.published_at, "text": current.text},
        "bundled": current.sha256 == consent.bundled_policy().sha256,
        "open_conversations": await _chats_to_pause(request),
    }, headers={"Cache-Control": "no-store"})


async def preview_policy(request: Request) -> Response:
    """The text as visitors would see it, and how many open chats publishing it would pause."""
    await require_staff(request, "admin")
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise ValidationFailed("Send the policy text as text.", field="text")
    if not body["text"].strip():
        raise ValidationFailed("The policy text is empty.", field="text")
    return JSONResponse({"html": consent.render(body["text"]),
                         "open_conversations": await _chats_to_pause(request)},
                        headers={"Cache-Control": "no-store"})


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


QUERY_CHARS = 200


async def _customer_page(request: Request, staff: Staff, query: str | None, limit: int,
                         offset: int) -> Response:
    state = app_state(request)
    items, total = await state.store.list_customers(query=query, limit=limit, offset=offset)
    await audit.record(state.store, actor=f"staff:{staff.id}", action="customer.list",
                       ip=client_ip(request),
                       detail={"results": len(items), "total": total,
                               "filters": ["q"] if query else [],
                               "customers": [item["id"] for item in items]})
    return JSONResponse({"customers": items, "total": total},
                        headers={"Cache-Control": "no-store"})


async def list_customers(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    return await _customer_page(
        request, staff, text_filter(request.query_params.get("q"), "q", QUERY_CHARS),
        query_int(request, "limit", 50, PAGE_LIMIT), query_int(request, "offset", 0, 10**9))


async def search_customers(request: Request) -> Response:
    """The customer search with its words in a JSON body, out of every URL (and so out of
    proxies' and browsers' records): they are names and emails."""
    staff = await require_staff(request, "admin")
    body = await read_search(request, {"q", "limit", "offset"})
    return await _customer_page(
        request, staff, text_filter(body.get("q"), "q", QUERY_CHARS),
        body_int(body, "limit", 50, PAGE_LIMIT), body_int(body, "offset", 0, 10**9))


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


async def correct_customer(request: Request) -> Response:
    """For a correction asked for by email: the same rules as the customer's own page."""
    staff = await require_staff(request, "admin")
    state = app_state(request)
    body = await read_json(request)
    fields = consent.validate_customer(body, partial=True)
    customer_id = request.path_params["customer_id"]
    customer = await state.store.update_customer(customer_id, fields)
    await audit.record(state.store, actor=f"staff:{staff.id}", action="customer.correct",
                       ip=client_ip(request), target=f"customer:{customer_id}",
                       detail={"fields": sorted(fields)})
    state.hub.queue_changed()
    return JSONResponse({"customer": customer.public()})


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
    Route("/api/admin/policies", list_policies, methods=["GET"]),
    Route("/api/admin/policies", publish_policy, methods=["POST"]),
    Route("/api/admin/policies/current", current_policy, methods=["GET"]),
    Route("/api/admin/policies/preview", preview_policy, methods=["POST"]),
    Route("/api/admin/customers", list_customers),
    Route("/api/admin/search/customers", search_customers, methods=["POST"]),
    Route("/api/admin/customers/{customer_id}/legal-hold", legal_hold, methods=["POST"]),
    Route("/api/admin/customers/{customer_id}", erase_customer, methods=["DELETE"]),
    Route("/api/admin/customers/{customer_id}", correct_customer, methods=["PATCH"]),
    Route("/api/admin/purge", run_purge, methods=["POST"]),
]
