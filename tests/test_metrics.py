"""GET /metrics: Prometheus' text format for allowed addresses only (404 for anyone else, as for
a path that does not exist), counting a real chat, with no label that holds PII or an id."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .support import Agent, Server, Visitor

# Every label value /metrics may show: fixed words, never a name, address or id.
FIXED_LABELS = {"kind": {"visitor", "agent"}, "sender": {"visitor", "agent", "system"},
                "by": {"periodic", "cli", "admin"}}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_a_chat_without_pii(make_server: Callable[..., Server]) -> None:
    """From loopback: open sockets by kind, messages stored, ack and commit latency, queue
    length and rate-limit refusals follow a real chat; labels hold fixed words only."""
    server = make_server(CHATSERVER_CONSENTS_PER_IP_HOUR="3")
    server.add_staff("agent", "agent")
    visitor = await Visitor(server).start(name="Metric Mona", email="mona.metric@example.com")
    agent = await Agent(server, "agent").login()
    vs = await visitor.socket()
    welcome = await vs.wait_type("welcome")
    ags = await agent.socket()
    await vs.send({"type": "message", "body": "Hello metrics", "client_msg_id": "m1"})
    await vs.wait_type("ack", client_msg_id="m1")
    await ags.send({"type": "claim", "conversation_id": welcome["conversation_id"]})
    await ags.wait_type("status", status="active")
    answers = []
    for _ in range(4):
        other = Visitor(server)
        answers.append((await other.consent()).status_code)
        await other.aclose()
    assert 429 in answers  # the fourth consent from this address (the chat's was the first)

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["cache-control"] == "no-store"
    text = response.text
    samples = _samples(text)
    assert _value(samples, "chatserver_open_sockets", kind="visitor") == 1
    assert _value(samples, "chatserver_open_sockets", kind="agent") == 1
    assert _value(samples, "chatserver_messages_stored_total", sender="visitor") == 1
    assert _value(samples, "chatserver_messages_stored_total", sender="system") == 1  # joined
    assert _value(samples, "chatserver_ack_latency_seconds_count") == 1
    assert _value(samples, "chatserver_commit_latency_seconds_count") == 2
    assert _value(samples, "chatserver_rate_limit_refusals_total",
                  code="rate_limited") == answers.count(429)
    assert _value(samples, "chatserver_purge_runs_total", by="periodic") == 1  # at start
    assert ("chatserver_queue_length", ()) in samples
    for name in ("chatserver_broadcast_lag_seconds_count", "chatserver_broadcast_reconnects_total"):
        assert (name, ()) in samples
    for (name, labels), _ in samples.items():
        for key, value in labels:
            if name.startswith("chatserver_") and key in FIXED_LABELS:
                assert value in FIXED_LABELS[key], (name, key, value)
    for secret in ("Mona", "mona.metric", "example.com", welcome["conversation_id"], "cu_",
                   "127.0.0.1"):
        assert secret not in text

    await vs.close()
    await ags.close()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        after = _samples((await http.get("/metrics")).text)
    assert _value(after, "chatserver_open_sockets", kind="visitor") == 0
    await visitor.aclose()
    await agent.aclose()


async def test_metrics_are_a_404_for_anyone_not_allowed(
    make_server: Callable[..., Server],
) -> None:
    """A client outside CHATSERVER_METRICS_ALLOW gets the 404 of a path that does not exist;
    so does a request relayed by a proxy that is not trusted."""
    outside = make_server(CHATSERVER_METRICS_ALLOW="10.0.0.0/8", CHATSERVER_TRUSTED_PROXIES="")
    async with httpx.AsyncClient(base_url=outside.url, timeout=10) as http:
        refused = await http.get("/metrics")
        missing = await http.get("/no-such-page")
    assert refused.status_code == 404
    assert refused.json() == missing.json()
    assert "chatserver_" not in refused.text

    loopback = make_server(CHATSERVER_TRUSTED_PROXIES="")
    async with httpx.AsyncClient(base_url=loopback.url, timeout=10) as http:
        assert (await http.get("/metrics")).status_code == 200
        relayed = await http.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
        assert relayed.status_code == 404
        real_ip = await http.get("/metrics", headers={"X-Real-IP": "::1"})
        assert real_ip.status_code == 404

    behind = make_server(CHATSERVER_TRUSTED_PROXIES="127.0.0.1")
    async with httpx.AsyncClient(base_url=behind.url, timeout=10) as http:
        outsider = await http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.8"})
        assert outsider.status_code == 404
        assert (await http.get("/metrics")).status_code == 200


def test_a_tally_handed_over_reads_as_the_same_observations_would() -> None:
    """Latencies are counted in plain numbers and added to the histogram in bulk: what
    /metrics then shows is what observing each one would have shown, bucket for bucket."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from chatserver.metrics import LATENCY_BUCKETS, Tally

    seconds = [0.0, 0.0004, 0.001, 0.0010001, 0.003, 0.05, 0.7, 2.5, 9.9, 10.0, 31.0, 0.001]
    texts = []
    for bulk in (False, True):
        registry = CollectorRegistry()
        histogram = Histogram("h_seconds", "h", buckets=LATENCY_BUCKETS, registry=registry)
        tally = Tally()
        for value in seconds:
            if bulk:
                tally.add(value)
            else:
                histogram.observe(value)
        tally.hand_over(histogram)
        tally.hand_over(histogram)  # a second hand-over adds nothing
        texts.append("\n".join(line for line in generate_latest(registry).decode().splitlines()
                               if "_created" not in line))  # when each was made
    assert texts[0] == texts[1]
    assert 'h_seconds_bucket{le="0.001"} 4.0' in texts[1]
    assert "h_seconds_count 12.0" in texts[1]
