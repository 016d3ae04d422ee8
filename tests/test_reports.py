"""Admin reports (issue 12, step 8): figures from real conversations, CSV, SVG charts, and
clear errors for bad ranges."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from chatserver import reports

from .support import Agent, Server, Visitor


def _id() -> str:
    return uuid.uuid4().hex


def test_median_and_nearest_rank_percentile() -> None:
    """Medians average the middle pair; p90 is the nearest-rank value; empty gives None."""
    assert reports.median([]) is None and reports.percentile([], 90) is None
    assert reports.median([5, 1, 3]) == 3 and reports.median([4, 1, 3, 2]) == 2.5
    assert reports.percentile(list(range(1, 11)), 90) == 9
    assert reports.percentile([7], 90) == 7


def test_chart_escapes_labels_and_holds_no_script() -> None:
    """An agent name with markup is text in the SVG."""
    report = reports.compute(
        [{"id": "cv_1", "created_at": "2026-03-01T10:00:00Z", "closed_at": None,
          "first_reply_at": "2026-03-01T10:01:00Z", "agent": "<script>x</script>",
          "messages": 2, "rating": None}], date(2026, 3, 1), date(2026, 3, 1))
    svg = reports.chart(report, "first_reply")
    assert "<script>" not in svg and "&lt;script&gt;" in svg


async def test_report_counts_replies_ratings_and_agents(
    make_server: Callable[..., Server]
) -> None:
    """Two conversations today, one answered, closed and rated 5 by the customer: the JSON, the
    CSV and the charts say so; agents may not read reports; bad ranges get 422."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("boss", "admin")
    server.add_staff("ann", "agent")
    admin = await Agent(server, "boss").login()
    agent = await Agent(server, "ann").login()
    rated, waiting = Visitor(server), Visitor(server)
    await rated.start(name="Rae", email="rae@example.com")
    await waiting.start(name="Wes", email="wes@example.com")
    try:
        vs = await rated.socket()
        conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
        await vs.send({"type": "message", "body": "help", "client_msg_id": _id()})
        await vs.wait_type("ack")
        ags = await agent.socket()
        await ags.wait_type("queue")
        await ags.send({"type": "claim", "conversation_id": conversation_id})
        await ags.wait_type("status", conversation_id=conversation_id, status="active")
        reply = _id()
        await ags.send({"type": "message", "conversation_id": conversation_id, "body": "hi",
                        "client_msg_id": reply})
        await ags.wait_type("ack", client_msg_id=reply)
        await ags.send({"type": "close", "conversation_id": conversation_id})
        await vs.wait_type("status", status="closed")
        await vs.send({"type": "rating", "score": 5})
        await vs.wait_type("rating")
        ws = await waiting.socket()
        await ws.wait_type("welcome")

        response = await admin.http.get("/api/admin/reports")
        assert response.status_code == 200, response.text
        report = response.json()
        today = datetime.now(UTC).date().isoformat()
        assert report["to"] == today and len(report["per_day"]) == 30
        assert report["conversations"] == 2
        assert report["per_day"][-1] == {"day": today, "conversations": 2}
        assert report["first_reply"]["answered"] == 1
        assert report["first_reply"]["median_seconds"] >= 0
        assert report["ratings"]["count"] == 1 and report["ratings"]["average"] == 5
        assert report["ratings"]["distribution"]["5"] == 1
        assert [a["agent"] for a in report["per_agent"]] == ["ann"]
        assert report["per_agent"][0]["conversations"] == 1

        csv_text = (await admin.http.get("/api/admin/reports/csv")).text
        assert "section,key,metric,value" in csv_text and f"day,{today},conversations,2" in csv_text
        assert "agent,ann,rating_average,5" in csv_text
        for kind in reports.CHARTS:
            chart = await admin.http.get(f"/api/admin/reports/charts/{kind}")
            assert chart.status_code == 200
            assert chart.headers["content-type"].startswith("image/svg+xml")
            assert chart.text.startswith("<svg") and "<script" not in chart.text

        assert (await agent.http.get("/api/admin/reports")).status_code == 403
        assert (await admin.http.get("/api/admin/reports/charts/pie")).status_code == 404
        far = (date.today() - timedelta(days=400)).isoformat()
        for params, field in (({"from": "2026-13-01"}, "from"), ({"to": "yesterday"}, "to"),
                              ({"to": ""}, "to"),
                              ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
                              ({"from": far}, "to")):
            bad = await admin.http.get("/api/admin/reports", params=params)
            assert bad.status_code == 422 and bad.json()["field"] == field, params
        await vs.close()
        await ws.close()
        await ags.close()
    finally:
        for client in (admin, agent, rated, waiting):
            await client.aclose()
