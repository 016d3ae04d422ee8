"""Message appends written a batch at a time, with a few set-based statements.

The writer runs each run of consecutive appends in its group commit as one group: one read of
the conversations they touch (seq, status, customer), one INSERT of all their rows, one UPDATE
per conversation and one per visiting customer. Per message that replaces a savepoint, a look-up,
two updates and an insert (about half the writer's time per message went to those statements).

Correctness rests on the database, not on this module's arithmetic:
- seqs are counted from the conversation's stored last_seq, read inside the batch's transaction
  on the one writer, so they stay gapless and in queue order per conversation;
- a repeated client_msg_id is not looked up on this path: the unique index on
  (conversation_id, sender, sender_id, client_msg_id) refuses the INSERT, as would
  UNIQUE (conversation_id, seq) for a wrong seq. Any refusal rolls the group back to its
  savepoint and the engine replays it one append at a time through conversations.append (the
  old path, which returns the first copy of a repeat), so a constraint is always the guard;
- appends that would fail (no such conversation, closed to non-system senders) also take the
  old path, alone, so each fails with exactly the error and precedence it always had.

Why not keep each conversation's next seq in the writer's memory? The status must be read anyway
(a close, claim, erasure or another process may have changed it since the last batch), and that
one read returns last_seq with it; a cache would save nothing and could go stale.

Message ids are given explicitly, above both the highest stored id and the search indexer's mark
(search_index.py): SQLite would otherwise reuse the id of an erased newest message, and the
indexer would take that new message as indexed already.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..base import Message
from ..rows import AppendRequest
from . import conversations
from .search_index import next_message_id

INSERT_ROWS = 400  # rows per INSERT: 8 values each, under SQLite's 32,766 bound variables


@dataclass(slots=True)
class Append(AppendRequest):
    """One message to store; the engine groups consecutive ones (engine.py)."""

    def alone(self) -> Callable[[sqlite3.Connection], tuple[Message, bool, str]]:
        """The same append through the one-at-a-time path."""
        return lambda c: conversations.append(
            c, self.conversation_id, sender=self.sender, sender_id=self.sender_id,
            author=self.author, body=self.body, client_msg_id=self.client_msg_id, now=self.now,
            unless_paused=self.unless_paused)


def append_many(c: sqlite3.Connection, group: list[Append]) -> list[Any]:
    """Store the group's clean appends set-based; for each append its result, or None where it
    must be run alone (an error to raise with the old path's precedence). Raises
    sqlite3.IntegrityError when a constraint refuses a row (a repeated client_msg_id): the
    caller rolls the group back and runs every append alone."""
    ids = list(dict.fromkeys(a.conversation_id for a in group))
    marks = ",".join("?" * len(ids))
    state: dict[str, list[Any]] = {
        row[0]: [row[1], row[2], row[3]]
        for row in c.execute(
            f"SELECT id, last_seq, customer_id, status FROM conversations WHERE id IN ({marks})",
            ids)
    }
    paused = conversations.paused_among(c, {a.conversation_id for a in group
                                            if a.unless_paused})
    results: list[Any] = []
    rows: list[Any] = []
    touched: dict[str, tuple[int, str]] = {}
    customers: dict[str, str] = {}
    message_id = next_message_id(c)
    for a in group:
        found = state.get(a.conversation_id)
        if found is None or (found[2] == "closed" and a.sender != "system") or (
                a.unless_paused and a.conversation_id in paused):
            results.append(None)
            continue
        found[0] += 1
        seq, customer_id, status = found
        rows += (message_id, a.conversation_id, seq, a.sender, a.sender_id, a.body,
                 a.client_msg_id, a.now)
        message_id += 1
        touched[a.conversation_id] = (seq, a.now)
        if a.sender == "visitor":
            customers[customer_id] = a.now
        results.append((Message(a.conversation_id, seq, a.sender, a.sender_id, a.author, a.body,
                                a.client_msg_id, a.now), True, status))
    width = INSERT_ROWS * 8
    for start in range(0, len(rows), width):
        chunk = rows[start:start + width]
        c.execute(
            "INSERT INTO messages (id, conversation_id, seq, sender, sender_id, body, "
            "client_msg_id, sent_at) VALUES "
            + ",".join(["(?,?,?,?,?,?,?,?)"] * (len(chunk) // 8)),
            chunk)
    c.executemany("UPDATE conversations SET last_seq = ?, last_message_at = ? WHERE id = ?",
                  [(seq, now, cid) for cid, (seq, now) in touched.items()])
    c.executemany("UPDATE customers SET last_active_at = ? WHERE id = ?",
                  [(now, cid) for cid, now in customers.items()])
    return results
