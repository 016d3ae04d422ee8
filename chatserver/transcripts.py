"""Transcript renderings: txt, json, html and csv. Pure functions, no I/O."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable
from typing import Any

from .storage.base import ConversationSummary, Message

FORMATS = {
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
# Cells a spreadsheet would run as a formula; prefixed with an apostrophe so they stay text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


CSV_HEADER = ["conversation_id", "seq", "sent_at", "sender", "author", "body"]


def csv_cells(m: Message) -> list[str]:
    return [neutralise(str(v)) for v in (m.conversation_id, m.seq, m.sent_at, m.sender,
                                         m.author, m.body)]


def csv_rows(rows: Iterable[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def header(summary: ConversationSummary) -> dict[str, Any]:
    c = summary.conversation
    return {
        "conversation_id": c.id,
        "status": c.status,
        "created_at": c.created_at,
        "claimed_at": c.claimed_at,
        "closed_at": c.closed_at,
        "agent": c.agent_name,
        "customer": summary.customer,
        "policy_version": summary.policy_version,
    }


def render(fmt: str, summary: ConversationSummary, messages: list[Message]) -> str:
    if fmt == "json":
        return json.dumps(
            {**header(summary), "messages": [m.frame() for m in messages]},
            ensure_ascii=False, indent=2,
        )
    if fmt == "csv":
        return csv_rows([CSV_HEADER, *(csv_cells(m) for m in messages)])
    if fmt == "html":
        return _html(summary, messages)
    return _txt(summary, messages)


def _txt(summary: ConversationSummary, messages: list[Message]) -> str:
    h = header(summary)
    customer = h["customer"]
    lines = [
        f"Conversation {h['conversation_id']} ({h['status']})",
        f"Customer: {customer['name']} <{customer['email']}>"
        + (f", {customer['company']}" if customer["company"] else ""),
        f"Agent: {h['agent'] or '-'}",
        f"Started: {h['created_at']}",
        f"Consented to privacy policy version: {h['policy_version'] or '-'}",
        "",
    ]
    for m in messages:
        lines.append(f"[{m.sent_at}] #{m.seq} {m.author} ({m.sender}):")
        lines.extend("    " + line for line in m.body.splitlines() or [""])
    return "\n".join(lines) + "\n"


def _html(summary: ConversationSummary, messages: list[Message]) -> str:
    h = header(summary)
    e = html.escape
    c = h["customer"]
    rows = "\n".join(
        f'<tr class="{e(m.sender)}"><td>{m.seq}</td><td>{e(m.sent_at)}</td>'
        f"<td>{e(m.author)}</td><td>{e(m.body)}</td></tr>"
        for m in messages
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Transcript {e(h['conversation_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}td,th{{padding:.3rem .6rem;
border-bottom:1px solid #ddd;text-align:left;vertical-align:top;white-space:pre-wrap}}
tr.system{{color:#666;font-style:italic}}</style></head><body>
<h1>Conversation {e(h['conversation_id'])}</h1>
<p>Customer: {e(c['name'])} &lt;{e(c['email'])}&gt; {e(c['company'])}<br>
Agent: {e(h['agent'] or '-')}<br>Status: {e(h['status'])}<br>Started: {e(h['created_at'])}<br>
Consented to privacy policy version: {e(h['policy_version'] or '-')}</p>
<table><thead><tr><th>#</th><th>Time</th><th>Author</th><th>Message</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
