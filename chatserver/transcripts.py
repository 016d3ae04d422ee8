"""Transcript renderings: txt, json, html and csv. Pure functions, no I/O."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Iterable
from typing import Any

from .storage.base import ConversationSummary, Message, Note, Rating

FORMATS = {
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
# Spreadsheet formula injection. A spreadsheet runs a cell that starts with = + - or @ (or one
# of their full-width and small forms, which some turn into the ASCII sign). A cell is not only
# what our CSV quoting says it is: importers are told to split on ; or tab as well as commas,
# and some split lines before they read quotes. So wherever a piece of text could begin a cell
# (the start, or just after any such separator or line break), if it begins, past blanks and
# quotes, with a formula sign, an apostrophe goes in front of it: the piece then starts with
# text in every reading. JSON exports keep the exact text.
_SEPARATORS = ",;\t\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_SIGNS = ("=\u207c\u208c\u2a75\u2a76\ufe66\uff1d"  # = and its compatibility forms
          "+\u207a\u208a\ufb29\ufe62\uff0b"  # +
          "\\-\ufe63\uff0d"  # -
          "@\ufe6b\uff20")  # @
_FORMULA_PIECE = re.compile(
    f"(?:^|(?<=[{_SEPARATORS}]))(?=[\\s\"\u200b\u2060\ufeff]*[{_SIGNS}])"
)


def neutralise(cell: str) -> str:
    """The cell with an apostrophe before every piece a spreadsheet could run as a formula."""
    if cell.startswith(("\t", "\r")):  # OWASP: a cell starting with tab or CR, whatever follows
        cell = "'" + cell
    return _FORMULA_PIECE.sub("'", cell)


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


def timeline(messages: list[Message], notes: list[Note]) -> list[Message]:
    """Messages with staff notes woven in, each note after the message it follows. A note
    appears as a Message with sender "note" and the seq of that message: admin transcripts
    only, never the customer's."""
    as_messages = [Message(n.conversation_id, n.after_seq, "note", str(n.staff_id), n.author,
                           n.body, n.client_msg_id, n.created_at) for n in notes]
    order = {"note": 1}
    return sorted([*messages, *as_messages], key=lambda m: (m.seq, order.get(m.sender, 0)))


def render(fmt: str, summary: ConversationSummary, messages: list[Message],
           notes: list[Note] | None = None, rating: Rating | None = None) -> str:
    """A transcript for staff: `notes` are marked as staff-only notes, `rating` is the
    customer's rating, when there is one."""
    notes = notes or []
    if fmt == "json":
        return json.dumps(
            {**header(summary), "messages": [m.frame() for m in messages],
             "notes": [n.public() for n in notes],
             "rating": rating.public() if rating else None},
            ensure_ascii=False, indent=2,
        )
    merged = timeline(messages, notes)
    if fmt == "csv":
        return csv_rows([CSV_HEADER, *(csv_cells(m) for m in merged)])
    if fmt == "html":
        return _html(summary, merged, rating)
    return _txt(summary, merged, rating)


# A txt transcript is read with cat or less: an escape sequence in a message would drive the
# reader's terminal (move the cursor, rewrite lines, set its title). Control characters other
# than tab and line breaks are shown as their Unicode pictures (ESC as U+241B), C1 controls as
# U+FFFD, so the text stays readable and the terminal stays ours.
_TERMINAL_CONTROLS = {**{code: 0x2400 + code for code in range(0x20) if chr(code) not in "\t\n"},
                      0x7F: 0x2421, **{code: 0xFFFD for code in range(0x80, 0xA0)}}


def printable(text: object) -> str:
    """`text` with every terminal control character replaced by a visible one."""
    return str(text).translate(_TERMINAL_CONTROLS)


def _txt(summary: ConversationSummary, messages: list[Message], rating: Rating | None) -> str:
    h: dict[str, Any] = {k: printable(v) if isinstance(v, str) else v
                         for k, v in header(summary).items()}
    customer = {k: printable(v) if isinstance(v, str) else v
                for k, v in summary.customer.items()}
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
        if m.sender == "note":
            lines.append(printable(f"[{m.sent_at}] NOTE (staff only) {m.author}:"))
        else:
            lines.append(printable(f"[{m.sent_at}] #{m.seq} {m.author} ({m.sender}):"))
        lines.extend("    " + printable(line) for line in m.body.splitlines() or [""])
    if rating:
        lines += ["", printable(f"Rating: {rating.score}/5 ({rating.rated_at})")]
        lines.extend("    " + printable(line) for line in rating.comment.splitlines())
    return "\n".join(lines) + "\n"


def _html(summary: ConversationSummary, messages: list[Message], rating: Rating | None) -> str:
    h = header(summary)
    e = html.escape
    c = h["customer"]
    rows = "\n".join(
        f'<tr class="{e(m.sender)}"><td>{"note" if m.sender == "note" else m.seq}</td>'
        f"<td>{e(m.sent_at)}</td><td>{e(m.author)}</td>"
        f"<td>{'<strong>Staff note:</strong> ' if m.sender == 'note' else ''}{e(m.body)}</td></tr>"
        for m in messages
    )
    rated = (f"<p>Rating: {rating.score}/5 {e(rating.comment)}</p>" if rating else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Transcript {e(h['conversation_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}td,th{{padding:.3rem .6rem;
border-bottom:1px solid #ddd;text-align:left;vertical-align:top;white-space:pre-wrap}}
tr.system{{color:#666;font-style:italic}}tr.note{{background:#fff6d5}}</style></head><body>
<h1>Conversation {e(h['conversation_id'])}</h1>
<p>Customer: {e(c['name'])} &lt;{e(c['email'])}&gt; {e(c['company'])}<br>
Agent: {e(h['agent'] or '-')}<br>Status: {e(h['status'])}<br>Started: {e(h['created_at'])}<br>
Consented to privacy policy version: {e(h['policy_version'] or '-')}</p>
{rated}
<table><thead><tr><th>#</th><th>Time</th><th>Author</th><th>Message</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
