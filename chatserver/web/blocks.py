"""Blocking abuse (issue 12): the agent handling a conversation blocks its visitor for a while
(optionally the IP address the visitor last chatted from), with a reason. The conversation is
closed, the visitor's sockets close with 4423, and a new socket is refused with a neutral
`blocked` until the block expires; the retention purge deletes expired blocks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit
from ..errors import CLOSE_BLOCKED, Forbidden, NotFound, ValidationFailed
from ..storage.base import iso
from .common import app_state, client_ip, read_json, require_staff

MAX_REASON = 500
MAX_HOURS = 720  # 30 days
DEFAULT_HOURS = 24


def _hours(body: dict[str, Any]) -> int:
    hours = body.get("hours", DEFAULT_HOURS)
    if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= MAX_HOURS:
        raise ValidationFailed(f"hours is a whole number from 1 to {MAX_HOURS}.", field="hours")
    return hours


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or "\x00" in reason:
        raise ValidationFailed("Give a reason for the block.", field="reason")
    if len(reason) > MAX_REASON:
        raise ValidationFailed(f"A reason is at most {MAX_REASON} characters.", field="reason")
    return reason.strip()


async def block(request: Request) -> Response:
    staff = await require_staff(request)
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"reason", "block_ip", "hours"}:
        raise ValidationFailed("Send reason, and optionally block_ip and hours.")
    reason, hours = _reason(body), _hours(body)
    block_ip = body.get("block_ip", False)
    if not isinstance(block_ip, bool):
        raise ValidationFailed("block_ip is true or false.", field="block_ip")
    state = app_state(request)
    store, hub = state.store, state.hub
    conversation = await store.get_conversation(request.path_params["conversation_id"])
    if conversation is None:
        raise NotFound("No such conversation.")
    if staff.role != "admin" and (conversation.agent_id != staff.id
                                  or conversation.status == "queued"):
        raise Forbidden("You can block only the visitors of your own conversations.")
    ip = await store.customer_last_ip(conversation.customer_id) if block_ip else None
    expires_at = iso(store.clock() + timedelta(hours=hours))
    made = await store.add_block(conversation.customer_id, conversation_id=conversation.id,
                                 ip=ip, reason=reason, staff_id=staff.id,
                                 expires_at=expires_at)
    # No reason and no address in the log: counts and ids only.
    await audit.record(store, actor=f"staff:{staff.id}", action="visitor.block",
                       ip=client_ip(request), target=f"conversation:{conversation.id}",
                       detail={"block": made["id"], "hours": hours, "ip": ip is not None})
    if conversation.status != "closed":
        await hub.close(conversation.id, by=staff.display_name, by_kind="agent")
    for session_id in await store.customer_sessions(conversation.customer_id):
        await hub.end_session(session_id, CLOSE_BLOCKED)
    return JSONResponse({"block": {"id": made["id"], "expires_at": made["expires_at"],
                                   "ip_blocked": ip is not None}})


routes = [
    Route("/api/agent/conversations/{conversation_id}/block", block, methods=["POST"]),
]
