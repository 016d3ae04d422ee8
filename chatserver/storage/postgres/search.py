"""The admin's conversation search, on PostgreSQL's full-text search.

The same query language as the SQLite store's FTS5 search: plain words must all appear, each as a
word or the start of one ("print" finds "printer"); text in double quotes is a phrase, its words
next to each other in order. Customer name, email, company (substring, any case) and the exact
conversation id match too. Words are folded before they are indexed or searched (lower case,
diacritics removed, split at anything but letters and digits), as FTS5's unicode61 tokenizer with
remove_diacritics does, so "cafe" finds "Café". The index is a GIN index over the `search`
tsvector column of messages, which the store fills when it stores a message.
"""

from __future__ import annotations

from typing import Any

from ..base import ConversationSearch, ConversationSummary
from ..rows import SUMMARY, like, to_summary
from .engine import Connection
from .folding import words

# PostgreSQL text cannot hold NUL, so no stored value contains one: a filter with a NUL matches
# nothing (as on SQLite), rather than being sent and refused.
NUL = "\x00"


def tsquery(text: str) -> str | None:
    """User words to a to_tsquery('simple', ...) text: "a quoted phrase" as a phrase, else every
    word as a prefix (AND). Only letters and digits reach it, so no operator a user types is
    taken as one."""
    stripped = text.strip()
    if len(stripped) > 2 and stripped[0] == stripped[-1] == '"':
        found = words(stripped[1:-1])
        return " <-> ".join(found) if found else None
    found = words(stripped)
    return " & ".join(f"{w}:*" for w in found) if found else None


async def search_conversations(
    c: Connection, search: ConversationSearch, *, limit: int, offset: int
) -> tuple[list[ConversationSummary], int]:
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if search.status:
        where.append(f"c.status = {arg(search.status)}")
    if search.email:
        where.append(f"lower(cu.email) = lower({arg(search.email)})"
                     if NUL not in search.email else "false")
    if search.agent_id is not None:
        where.append(f"c.agent_id = {arg(search.agent_id)}")
    if search.created_from:
        where.append(f"c.created_at >= {arg(search.created_from)}")
    if search.created_before:
        where.append(f"c.created_at < {arg(search.created_before)}")
    if search.query:
        either: list[str] = []
        if NUL not in search.query:
            pattern = arg(like(search.query))
            either += [f"cu.name ILIKE {pattern}", f"cu.email ILIKE {pattern}",
                       f"cu.company ILIKE {pattern}", f"c.id = {arg(search.query)}"]
        match = tsquery(search.query)
        if match:
            either.append(f"c.id IN (SELECT m.conversation_id FROM messages m "
                          f"WHERE m.search @@ to_tsquery('simple', {arg(match)}))")
        where.append("(" + (" OR ".join(either) or "false") + ")")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    filters = len(args)
    rows = await c.fetch(
        SUMMARY + clause
        + f" ORDER BY c.created_at DESC LIMIT ${filters + 1} OFFSET ${filters + 2}",
        *args, limit, offset,
    )
    total = await c.fetchval(
        "SELECT COUNT(*) FROM conversations c JOIN customers cu ON cu.id = c.customer_id" + clause,
        *args,
    )
    return [to_summary(r) for r in rows], int(total)
