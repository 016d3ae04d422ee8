"""The agents' queue frame is cut to a page once many conversations are open (queue_page.py)."""

from __future__ import annotations

import json
from typing import Any

from chatserver import queue_page
from chatserver.hub import queue_for


def item(n: int, status: str, agent_id: int | None = None) -> dict[str, Any]:
    return {"conversation_id": f"cv_{n:05d}", "status": status, "agent_id": agent_id,
            "customer": {"name": f"C{n}", "email": f"c{n}@example.com", "company": "X"},
            "last_message": {"seq": 1, "sender": "visitor", "body": "hi", "sent_at": "t"},
            "policy_version": "1.01", "waiting_since": f"t{n:05d}", "last_seq": 1}


def frame(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "queue", "conversations": items, **queue_page.counts(items)}


def ids(f: dict[str, Any]) -> list[str]:
    return [i["conversation_id"] for i in f["conversations"]]


def test_a_small_queue_is_listed_whole_with_its_counts() -> None:
    """Under the page size nothing is left out, and the counts say so."""
    items = [item(0, "queued"), item(1, "active", 7), item(2, "active", 8)]
    f = queue_for(frame(items), 7)
    assert ids(f) == ["cv_00000", "cv_00001", "cv_00002"]
    assert (f["total"], f["queued"], f["omitted"]) == (3, 1, 0)
    assert f["conversations"][2]["restricted"] is True  # another agent's, as before


def test_a_large_queue_is_cut_keeping_my_own_and_the_oldest_waiting() -> None:
    """With thousands open: every conversation of mine (even the newest), then the oldest
    queued up to the page size, oldest first; counts name what was left out."""
    size = queue_page.PAGE_SIZE
    items = [item(n, "active", 8) for n in range(50)]              # another agent's, oldest
    items += [item(n, "queued") for n in range(50, 50 + 3 * size)]
    items += [item(n, "active", 7) for n in range(5000, 5003)]      # mine, newest of all
    f = queue_for(frame(items), 7)
    listed = ids(f)
    assert len(listed) == size
    assert listed == sorted(listed)  # still oldest first
    assert {"cv_05000", "cv_05001", "cv_05002"} <= set(listed)
    queued = [i for i in f["conversations"] if i["status"] == "queued"]
    assert [i["conversation_id"] for i in queued] == [f"cv_{n:05d}" for n in range(50, 50 + size - 3)]
    assert not any(i.get("agent_id") == 8 for i in f["conversations"])  # no room left for them
    assert f["total"] == len(items)
    assert f["queued"] == 3 * size
    assert f["omitted"] == len(items) - size
    assert len(json.dumps(f)) < 200 * 1024  # bounded, however many are open


def test_other_agents_conversations_fill_the_room_the_queue_leaves() -> None:
    """Few waiting: other agents' active conversations fill the page, restricted."""
    size = queue_page.PAGE_SIZE
    items = [item(n, "active", 8) for n in range(2 * size)] + [item(9000, "queued")]
    f = queue_for(frame(items), 7)
    assert len(f["conversations"]) == size
    assert "cv_09000" in ids(f)
    assert all(i.get("restricted") for i in f["conversations"] if i["status"] == "active")
    assert f["omitted"] == len(items) - size


def test_my_own_are_never_cut_even_beyond_the_page() -> None:
    """An agent holding more conversations than a page still gets every one of them."""
    size = queue_page.PAGE_SIZE
    items = [item(n, "active", 7) for n in range(size + 5)] + [item(n, "queued")
                                                             for n in range(1000, 1010)]
    f = queue_for(frame(items), 7)
    assert len(f["conversations"]) == size + 5
    assert f["omitted"] == 10 and f["queued"] == 10
