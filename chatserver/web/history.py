"""Customer history (issue 12): the agent handling a conversation sees the customer's other
conversations, read-only. The list holds no message text; opening one is a transcript view,
written to the audit log before anything is read, like every other."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import audit
from ..errors import Forbidden, NotFound
from ..protocol import note_frame
from ..storage.base import Conversation, Staff
from .common import app_state, client_ip, require_staff

NO_STORE = {"Cache-Control": "no-store"}
PAGE = 1000


async def _handled(request: Request, staff: Staff) -> Conversation:
    """The conversation the path names, if this staff member handles it (admins: any)."""
    conversation = await app_state(request).store.get_conversation(
        request.path_params["conversation_id"])
    if conversation is None:
        raise NotFound("No such conversation.")
    if staff.role != "admin" and (conversation.agent_id != staff.id
                                  or conversation.status == "queued"):
        raise Forbidden("Only the agent handling this conversation sees the customer's history.")
    return conversation


async def history(request: Request) -> Response:
    staff = await require_staff(request)
    conversation = await _handled(request, staff)
    items = await app_state(request).store.customer_history(conversation.customer_id)
    earlier = [item for item in items if item["id"] != conversation.id]
    return JSONResponse({"conversations": earlier}, headers=NO_STORE)


async def earlier_transcript(request: Request) -> Response:
    staff = await require_staff(request)
    conversation = await _handled(request, staff)
    store = app_state(request).store
    earlier = await store.get_conversation(request.path_params["earlier_id"])
    if (earlier is None or earlier.customer_id != conversation.customer_id
            or earlier.id == conversation.id):
        raise NotFound("No such earlier conversation of this customer.")
    # Recorded before anything is read: a read that is not in the log does not happen.
    await audit.record(store, actor=f"staff:{staff.id}", action="transcript.view",
                       ip=client_ip(request), target=f"conversation:{earlier.id}",
                       detail={"via": "history", "from": conversation.id})
    messages, after = [], 0
    while True:
        chunk = await store.messages_after(earlier.id, after, PAGE)
        messages.extend(chunk)
        if len(chunk) < PAGE:
            break
        after = chunk[-1].seq
    rating = await store.get_rating(earlier.id)
    return JSONResponse({
        "conversation": {"id": earlier.id, "status": earlier.status,
                         "created_at": earlier.created_at, "closed_at": earlier.closed_at,
                         "agent": earlier.agent_display_name},
        "messages": [m.frame() for m in messages],
        "notes": [note_frame(n) for n in await store.notes_after(earlier.id, 0)],
        "rating": rating.public() if rating else None,
    }, headers=NO_STORE)


routes = [
    Route("/api/agent/conversations/{conversation_id}/history", history, methods=["GET"]),
    Route("/api/agent/conversations/{conversation_id}/history/{earlier_id}",
          earlier_transcript, methods=["GET"]),
]
