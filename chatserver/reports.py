"""Admin reports (issue 12): figures computed from report rows, the CSV and SVG charts drawn
on the server (no third-party host, no script). Pure functions, no I/O."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from html import escape
from typing import Any

from .transcripts import neutralise

MAX_DAYS = 366


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered, mid = sorted(values), len(values) // 2
    return ordered[mid] if len(values) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _seconds(row: dict[str, Any], start: str, end: str) -> float | None:
    a, b = _time(row.get(start)), _time(row.get(end))
    return (b - a).total_seconds() if a and b else None


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    replies = [s for r in rows if (s := _seconds(r, "created_at", "first_reply_at")) is not None]
    durations = [s for r in rows if (s := _seconds(r, "created_at", "closed_at")) is not None]
    scores = [r["rating"] for r in rows if r.get("rating")]
    return {
        "conversations": len(rows),
        "first_reply": {"answered": len(replies), "median_seconds": median(replies),
                        "p90_seconds": percentile(replies, 90)},
        "length": {"median_messages": median([r["messages"] for r in rows]),
                   "median_duration_seconds": median(durations)},
        "ratings": {"count": len(scores),
                    "average": round(sum(scores) / len(scores), 2) if scores else None,
                    "distribution": {str(n): Counter(scores).get(n, 0) for n in range(1, 6)}},
    }


def compute(rows: list[dict[str, Any]], first: date, last: date) -> dict[str, Any]:
    """The report for conversations created from day `first` to day `last`, both included."""
    per_day: dict[str, int] = {
        (first + timedelta(days=n)).isoformat(): 0 for n in range((last - first).days + 1)}
    for row in rows:
        day = row["created_at"][:10]
        if day in per_day:
            per_day[day] += 1
    by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("agent"):
            by_agent[row["agent"]].append(row)
    return {
        "from": first.isoformat(), "to": last.isoformat(),
        **_summary(rows),
        "per_day": [{"day": d, "conversations": n} for d, n in per_day.items()],
        "per_agent": [{"agent": name, **_summary(agent_rows)}
                      for name, agent_rows in sorted(by_agent.items())],
    }


def to_csv(report: dict[str, Any]) -> str:
    """One row per figure: section, key (a day or an agent), metric, value."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["section", "key", "metric", "value"])

    def figures(section: str, key: str, s: dict[str, Any]) -> None:
        w.writerow([section, key, "conversations", s["conversations"]])
        w.writerow([section, key, "first_reply_median_seconds", s["first_reply"]["median_seconds"]])
        w.writerow([section, key, "first_reply_p90_seconds", s["first_reply"]["p90_seconds"]])
        w.writerow([section, key, "median_messages", s["length"]["median_messages"]])
        w.writerow([section, key, "median_duration_seconds",
                    s["length"]["median_duration_seconds"]])
        w.writerow([section, key, "ratings", s["ratings"]["count"]])
        w.writerow([section, key, "rating_average", s["ratings"]["average"]])

    figures("total", f"{report['from']}..{report['to']}", report)
    for score, n in report["ratings"]["distribution"].items():
        w.writerow(["ratings", score, "conversations", n])
    for day in report["per_day"]:
        w.writerow(["day", day["day"], "conversations", day["conversations"]])
    for agent in report["per_agent"]:
        figures("agent", neutralise(agent["agent"]), agent)
    return out.getvalue().replace("None", "")


def bar_chart(title: str, bars: list[tuple[str, float]], unit: str = "") -> str:
    """A bar chart as a standalone SVG document: text escaped, no script, no external refs."""
    width, height, left, bottom, top = 720, 260, 48, 48, 34
    plot_w, plot_h = width - left - 16, height - top - bottom
    peak = max([v for _, v in bars] + [1])
    step = plot_w / max(len(bars), 1)
    every = max(1, math.ceil(len(bars) / 12))  # at most about 12 labels under the bars
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="{left}" y="20" font-family="sans-serif" font-size="14" font-weight="600" '
        f'fill="#1d2939">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 16}" y2="{top + plot_h}" '
        'stroke="#98a2b3"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-family="sans-serif" '
        f'font-size="11" fill="#475467">{escape(_fmt(peak))}{escape(unit)}</text>',
    ]
    for i, (label, value) in enumerate(bars):
        h = plot_h * value / peak
        x = left + i * step + step * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{step * 0.7:.1f}" '
            f'height="{h:.1f}" fill="#2563eb"><title>{escape(label)}: {escape(_fmt(value))}'
            f"{escape(unit)}</title></rect>")
        if i % every == 0:
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                f'font-family="sans-serif" font-size="11" fill="#475467">{escape(label[:14])}'
                "</text>")
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def chart(report: dict[str, Any], kind: str) -> str:
    """One of the report's charts: per_day, first_reply (per agent, median), ratings."""
    if kind == "per_day":
        return bar_chart("Conversations per day",
                         [(d["day"][5:], d["conversations"]) for d in report["per_day"]])
    if kind == "first_reply":
        seconds = [(a["agent"], a["first_reply"]["median_seconds"] or 0)
                   for a in report["per_agent"]]
        if max([v for _, v in seconds] + [0]) < 120:  # short waits read better in seconds
            return bar_chart("Median time to first reply per agent", seconds, " s")
        return bar_chart("Median time to first reply per agent",
                         [(name, v / 60) for name, v in seconds], " min")
    return bar_chart("Ratings", [(f"{n} ★", c) for n, c in
                                 report["ratings"]["distribution"].items()])


CHARTS = ("per_day", "first_reply", "ratings")
