"""Prometheus metrics: named functions the rest of the code calls, and the text `/metrics` serves.

Labels hold only fixed words (a socket's kind, a sender's kind, an error code, who started a
purge): never a name, an email, an address, a conversation, customer or staff id.

With `chatserver serve` every process writes its numbers to files in the folder
PROMETHEUS_MULTIPROC_DIR (the serving parent makes a fresh temporary one before any worker
starts), and whichever process answers `/metrics` adds up all of them. prometheus_client decides
between one-process and several-process values when it is first imported, so it is imported here
lazily, on the first metric: by then `serve` has set the folder.

The per-message numbers (messages stored, commit and ack latency) are counted in plain Python
numbers and handed to prometheus_client in bulk: when `/metrics` is read, and a second after the
first one counted since the last hand-over (so other workers' files are at most a second behind).
Through prometheus_client each message cost a lock, a bucket search and three value updates,
with several workers each a write to a memory-mapped file: about 6% of the event loop's time.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import os
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds; a chat's ack and commit are usually milliseconds, a slow disk can make them seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SOCKET_KINDS = ("visitor", "agent")
SENDERS = ("visitor", "agent", "system")


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.sockets = Gauge("chatserver_open_sockets", "Open WebSockets, by kind.", ["kind"],
                             multiprocess_mode="livesum")
        self.messages = Counter("chatserver_messages_stored", "Chat messages stored, by sender "
                                "kind (visitor, agent, system).", ["sender"])
        self.ack = Histogram("chatserver_ack_latency_seconds", "From a message frame read to "
                             "its ack queued for the sender.", buckets=LATENCY_BUCKETS)
        self.commit = Histogram("chatserver_commit_latency_seconds", "Storing one message, "
                                "until its commit returned.", buckets=LATENCY_BUCKETS)
        self.lag = Histogram("chatserver_broadcast_lag_seconds", "From a publish to its "
                             "delivery in a process, as the broadcast backend measures it.",
                             buckets=LATENCY_BUCKETS)
        self.reconnects = Counter("chatserver_broadcast_reconnects", "Times the broadcast "
                                  "backend reconnected after losing its connection.")
        self.queue = Gauge("chatserver_queue_length", "Conversations waiting for an agent, as "
                           "last counted.", multiprocess_mode="mostrecent")
        self.refusals = Counter("chatserver_rate_limit_refusals", "Requests and frames refused "
                                "by a rate or count limit, by error code.", ["code"])
        self.purges = Counter("chatserver_purge_runs", "Retention purges run (not dry runs), by "
                              "who started them (periodic, cli, admin).", ["by"])
        for kind in SOCKET_KINDS:  # shown as 0 before the first socket opens
            self.sockets.labels(kind)
        # Each sender's child looked up once: labels() takes a lock and builds a key per call,
        # about 2% of the event loop's time at 2,000 msgs/s.
        self.stored = {sender: self.messages.labels(sender) for sender in SENDERS}


@functools.cache
def _m() -> _Metrics:
    return _Metrics()


class Tally:
    """A histogram's observations since the last hand-over: a count per bucket and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def add(self, seconds: float) -> None:
        # The first bucket whose bound is at least `seconds`, as Histogram.observe picks it.
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def hand_over(self, histogram: Any) -> None:
        """Add what was counted to `histogram` (prometheus_client has no bulk observe: its
        bucket and sum values are added to directly) and start again from nothing."""
        for bucket, count in zip(histogram._buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        histogram._sum.inc(self.total)
        self.counts = [0] * len(self.counts)
        self.total = 0.0


_stored = dict.fromkeys(SENDERS, 0)  # messages stored by sender kind, not yet handed over
_commit = Tally()
_ack = Tally()
_due: asyncio.TimerHandle | None = None  # the hand-over a second after the first count


def _counted() -> None:
    global _due
    if _due is None:
        try:
            _due = asyncio.get_running_loop().call_later(1.0, hand_over)
        except RuntimeError:  # no event loop (a command): hand over at once
            hand_over()


def hand_over() -> None:
    """Give prometheus_client what was counted since the last time."""
    global _due
    if _due is not None:
        _due.cancel()
        _due = None
    metrics = _m()
    for sender, count in _stored.items():
        if count:
            metrics.stored[sender].inc(count)
            _stored[sender] = 0
    _commit.hand_over(metrics.commit)
    _ack.hand_over(metrics.ack)


def socket_opened(kind: str) -> None:
    _m().sockets.labels(kind).inc()


def socket_closed(kind: str) -> None:
    _m().sockets.labels(kind).dec()


def message_stored(sender: str, commit_seconds: float) -> None:
    if sender in _stored:
        _stored[sender] += 1
    else:
        _m().messages.labels(sender).inc()
    _commit.add(commit_seconds)
    _counted()


def ack_sent(seconds: float) -> None:
    _ack.add(seconds)
    _counted()


def broadcast_lag(seconds: float) -> None:
    """For broadcast backends: how long a published payload took to arrive in this process."""
    _m().lag.observe(max(0.0, seconds))


def broadcast_reconnected() -> None:
    """For broadcast backends: the connection was lost and is back."""
    _m().reconnects.inc()


def queue_length(waiting: int) -> None:
    _m().queue.set(waiting)


def rate_limited(code: str) -> None:
    _m().refusals.labels(code).inc()


def purge_ran(actor: str) -> None:
    """`actor` as the audit log has it; the label keeps only its kind (no staff id)."""
    by = "periodic" if actor == "retention" else "cli" if actor == "cli" else "admin"
    _m().purges.labels(by).inc()


def process_died(pid: int) -> None:
    """A worker is gone: its live gauges (open sockets) stop counting."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def exposition() -> tuple[bytes, str]:
    """The text to serve and its content type: every process's numbers when there are several."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    hand_over()
    registry: Any = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
