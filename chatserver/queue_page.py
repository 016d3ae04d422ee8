"""The agents' queue frame, cut to a page.

With thousands of open conversations the full list is megabytes per frame, and a frame goes to
every dashboard on every change. Each staff member's frame therefore holds at most PAGE_SIZE
conversations: every active conversation of their own (never cut: their dashboard follows
those), then the queued ones, oldest first, then other agents' active ones, oldest first,
while room is left; listed in the frame's order (oldest first). `total`, `queued` and `omitted`
count the open conversations, the queued ones and those left out, so a dashboard can say "N
waiting" and knows that a conversation missing from a cut frame may still be open.
"""

from __future__ import annotations

from typing import Any

PAGE_SIZE = 200


def counts(items: list[dict[str, Any]]) -> dict[str, int]:
    """The counting fields of an uncut frame."""
    return {"total": len(items),
            "queued": sum(1 for item in items if item.get("status") == "queued"),
            "omitted": 0}


def cut(items: list[dict[str, Any]], staff_id: int, size: int = PAGE_SIZE) -> dict[str, Any]:
    """`conversations` and the counting fields of one staff member's frame, from the full
    list (oldest first) as that staff member may see it."""
    if len(items) <= size:
        return {"conversations": items, **counts(items)}
    own = [i for i, item in enumerate(items)
           if item.get("status") == "active" and item.get("agent_id") == staff_id]
    queued = [i for i, item in enumerate(items) if item.get("status") == "queued"]
    others = [i for i, item in enumerate(items)
              if item.get("status") == "active" and item.get("agent_id") != staff_id]
    room = max(0, size - len(own))
    chosen = set(own) | set(queued[:room])
    chosen |= set(others[:max(0, room - len(queued))])
    listed = [items[i] for i in sorted(chosen)]
    return {"conversations": listed, "total": len(items), "queued": len(queued),
            "omitted": len(items) - len(listed)}
