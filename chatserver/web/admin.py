"""Routes for admins: conversations, transcripts and the audit log. Agents get 403."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import audit, transcripts
from ..errors import NotFound, ValidationFailed
from ..hub import queue_item
from ..protocol import note_frame
from ..storage.base import (
    ConversationSearch,
    ConversationSummary,
    Message,
    Note,
    Rating,
    Staff,
    iso,
)
from .agent import login_page, staff_page
from .common import (
    app_state,
    body_int,
    client_ip,
    current_staff,
    page,
    query_int,
    read_search,
    require_staff,
    text_filter,
)

PAGE_LIMIT = 200


async def admin_page(request: Request) -> Response:
    staff = await current_staff(request)
    if staff is None:
        return login_page(request, next_path="/admin")
    if staff.role != "admin":
        return page(request, "error.html", {"title": "Admins only", "status": 403,
                                            "message": "The admin console is for admins."},
                    status=403)
    return staff_page(request, "admin.html", staff, "Admin console")


def _day(value: Any, name: str) -> str | None:
    """A YYYY-MM-DD filter as the ISO time of that day's start (UTC); None when absent."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return iso(datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC))
    except ValueError:
        raise ValidationFailed(f"{name} must be a date like 2026-12-31.", field=name) from None


def _day_after(value: Any, name: str) -> str | None:
    """The exclusive end of an inclusive `to` date."""
    start = _day(value, name)
    if start is None:
        return None
    try:
        return iso(datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(days=1))
    except OverflowError:
        raise ValidationFailed(f"{name} is too far in the future.", field=name) from None


SEARCH_FILTERS = ("status", "q", "email", "agent", "from", "to")
STATUSES = {"queued", "active", "closed"}
QUERY_CHARS = 200
EMAIL_CHARS = 254


def search_filters(source: Mapping[str, Any]) -> ConversationSearch:
    """The conversation filters, from a query string or a JSON search body alike.

    A filter that is present must be valid (an empty status, agent or date is refused like any
    other wrong value); the free-text ones may be empty, meaning no filter."""
    status = source.get("status")
    if status is not None and (not isinstance(status, str) or status not in STATUSES):
        raise ValidationFailed("status is queued, active or closed.", field="status")
    agent = source.get("agent")
    if isinstance(agent, int) and not isinstance(agent, bool):
        agent = str(agent)
    if agent is not None and not (isinstance(agent, str) and agent.isascii() and agent.isdigit()
                                  and len(agent) <= 18):
        raise ValidationFailed("agent is a staff id.", field="agent")
    return ConversationSearch(
        status=status,
        query=text_filter(source.get("q"), "q", QUERY_CHARS),
        email=text_filter(source.get("email"), "email", EMAIL_CHARS),
        agent_id=int(agent) if agent is not None else None,
        created_from=_day(source.get("from"), "from"),
        created_before=_day_after(source.get("to"), "to"),
    )


def used_filters(source: Mapping[str, Any], names: tuple[str, ...]) -> list[str]:
    """Which filters a listing used, by name: for the audit log, which never holds the values
    (a search term can be an email address)."""
    return sorted(name for name in names if source.get(name) not in (None, ""))


async def _conversation_page(request: Request, staff: Staff, source: Mapping[str, Any],
                             search: ConversationSearch, limit: int, offset: int) -> Response:
    state = app_state(request)
    found, total = await state.store.search_conversations(search, limit=limit, offset=offset)
    # The results show customers' details and the last words of each conversation.
    await audit.record(state.store, actor=f"staff:{staff.id}", action="conversation.search",
                       ip=client_ip(request),
                       detail={"results": len(found), "total": total,
                               "filters": used_filters(source, SEARCH_FILTERS),
                               "conversations": [s.conversation.id for s in found]})
    return JSONResponse({"conversations": [s.as_dict() for s in found], "total": total},
                        headers={"Cache-Control": "no-store"})


async def list_conversations(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    return await _conversation_page(
        request, staff, request.query_params, search_filters(request.query_params),
        query_int(request, "limit", 50, PAGE_LIMIT), query_int(request, "offset", 0, 10**9))


async def search_conversations(request: Request) -> Response:
    """The same search with the filters in a JSON body: search words and emails are personal
    data, and a URL is written down by proxies, browsers and servers' access logs."""
    staff = await require_staff(request, "admin")
    body = await read_search(request, {"q", "email", "status", "agent", "from", "to", "limit", "offset"})
    return await _conversation_page(
        request, staff, body, search_filters(body), body_int(body, "limit", 50, PAGE_LIMIT),
        body_int(body, "offset", 0, 10**9))


EXPORT_CHUNK = 1000


async def bulk_export(request: Request) -> Response:
    """Every message sent in a date range, streamed as JSONL or CSV: memory stays flat however
    many there are, because rows are read and sent a chunk at a time."""
    staff = await require_staff(request, "admin")
    state = app_state(request)
    fmt = request.query_params.get("format", "jsonl")
    if fmt not in {"jsonl", "csv"}:
        raise ValidationFailed("format is jsonl or csv.", field="format")
    start = _day(request.query_params.get("from"), "from")
    end = _day_after(request.query_params.get("to"), "to")
    await audit.record(state.store, actor=f"staff:{staff.id}", action="export.bulk",
                       ip=client_ip(request),
                       detail={"format": fmt, "from": request.query_params.get("from"),
                               "to": request.query_params.get("to")})

    async def rows() -> AsyncIterator[str]:
        if fmt == "csv":
            yield transcripts.csv_rows([transcripts.CSV_HEADER])
        after = 0
        while True:
            chunk, after = await state.store.messages_between(start, end, after, EXPORT_CHUNK)
            if not chunk:
                return
            if fmt == "csv":
                yield transcripts.csv_rows(transcripts.csv_cells(m) for m in chunk)
            else:
                yield "".join(json.dumps(m.frame(), ensure_ascii=False) + "\n" for m in chunk)

    return StreamingResponse(
        rows(),
        media_type="application/x-ndjson" if fmt == "jsonl" else transcripts.FORMATS["csv"],
        headers={"Content-Disposition": f'attachment; filename="messages.{fmt}"',
                 "Cache-Control": "no-store"},
    )


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


async def _notes_and_rating(request: Request, conversation_id: str
                            ) -> tuple[list[Note], Rating | None]:
    """What admins see besides the messages: staff notes (marked as such) and the rating."""
    store = app_state(request).store
    return await store.notes_after(conversation_id, 0), await store.get_rating(conversation_id)


async def conversation_detail(request: Request) -> Response:
    staff = await require_staff(request, "admin")
    summary, messages = await _load(request)
    await audit.record(app_state(request).store, actor=f"staff:{staff.id}",
                       action="transcript.view", ip=client_ip(request),
                       target=f"conversation:{summary.conversation.id}")
    notes, rating = await _notes_and_rating(request, summary.conversation.id)
    return JSONResponse(
        {"conversation": {**summary.as_dict(), "queue": queue_item(summary)},
         "messages": [m.frame() for m in messages],
         "notes": [note_frame(n) for n in notes],
         "rating": rating.public() if rating else None},
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
    notes, rating = await _notes_and_rating(request, summary.conversation.id)
    body = transcripts.render(fmt, summary, messages, notes, rating)
    filename = f"transcript-{summary.conversation.id}.{fmt}"
    return Response(
        body,
        media_type=transcripts.FORMATS[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


routes = [
    Route("/admin", admin_page),
    Route("/api/admin/conversations", list_conversations),
    Route("/api/admin/search/conversations", search_conversations, methods=["POST"]),
    Route("/api/admin/conversations/{conversation_id}", conversation_detail),
    Route("/api/admin/conversations/{conversation_id}/transcript", transcript),
    Route("/api/admin/export", bulk_export),
]
