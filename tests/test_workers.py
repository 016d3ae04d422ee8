"""Several processes: `chatserver serve --workers N`, periodic jobs run once across processes, and
a consent recorded once when a browser's first requests reach two processes at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from chatserver import broadcast

from .support import Server, free_port

REDIS_URL = "redis://127.0.0.1:6379/15"


def _serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "chatserver", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = Server(tmp_path / "data").environ()
    env.update(extra)
    return env


def test_workers_refuse_a_process_local_broadcast(tmp_path: Path) -> None:
    """`serve --workers 2` with memory:// stops at once with one line naming the setting."""
    port = free_port()
    process = _serve(_environ(tmp_path), "--port", str(port), "--workers", "2")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "--workers 2" in lines[0] and "CHATSERVER_BROADCAST_URL" in lines[0]
    assert "memory://" in lines[0]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_a_worker_that_cannot_start_stops_the_command(tmp_path: Path) -> None:
    """With a shared broadcast that does not answer, the workers fail their start and the
    command exits (status 3) instead of restarting them for ever."""
    process = _serve(_environ(tmp_path, CHATSERVER_BROADCAST_URL="redis://127.0.0.1:1/0"),
                     "--port", str(free_port()), "--workers", "2")
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, (out, err)
    assert "could not start" in err


def _redis_broadcast_available() -> bool:
    try:
        broadcast.create(REDIS_URL)
    except (ValueError, ImportError):
        return False
    return True


needs_redis_broadcast = pytest.mark.skipif(
    not _redis_broadcast_available(),
    reason="the Redis broadcast backend is not in this branch yet (issue 10, step 1)")


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(count: int, **extra: str) -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        process = _serve(_environ(tmp_path, CHATSERVER_BROADCAST_URL=REDIS_URL, **extra),
                         "--port", str(port), "--workers", str(count))
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        return process, url

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


@needs_redis_broadcast
def test_two_workers_serve_one_port_and_a_dead_one_is_replaced(workers: Callable[..., tuple[
        subprocess.Popen[str], str]]) -> None:
    """With a shared broadcast, --workers 2 runs two processes on one port; a worker killed with
    SIGKILL is replaced, and SIGTERM to the parent stops them all."""
    parent, url = workers(2)
    deadline = time.monotonic() + 10
    while len(_children(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    first = _children(parent.pid)
    assert len(first) == 2
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = _children(parent.pid)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    assert len(_children(parent.pid)) == 2 and victim not in _children(parent.pid)
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    # Whichever worker answers /metrics adds up all of them: the purge ran once, in one.
    for _ in range(4):
        text = httpx.get(url + "/metrics", timeout=5).text
        assert 'chatserver_purge_runs_total{by="periodic"} 1.0' in text
    survivors = _children(parent.pid)
    parent.send_signal(signal.SIGTERM)
    parent.communicate(timeout=40)
    assert parent.returncode == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in survivors)


# -- once across processes ----------------------------------------------------------------------


def _purge_times(server: Server) -> list[datetime]:
    rows = server.query("SELECT at FROM audit_log WHERE action = 'retention.purge' ORDER BY id")
    return [datetime.fromisoformat(str(at).replace("Z", "+00:00")) for (at,) in rows]


def test_a_periodic_job_runs_once_across_two_processes(
    make_server: Callable[..., Server],
) -> None:
    """Two servers on one database, purging every 2 s: the purge runs once per interval in all,
    not once per interval in each."""
    interval = 2
    first = make_server(CHATSERVER_PURGE_INTERVAL_SECONDS=str(interval))
    started = time.monotonic()
    second = make_server(CHATSERVER_PURGE_INTERVAL_SECONDS=str(interval),
                         CHATSERVER_DATABASE_URL=first.database_url)
    time.sleep(4 * interval + 0.5)  # the purges are what this test watches happen over time
    elapsed = time.monotonic() - started
    times = _purge_times(first)
    assert 3 <= len(times) <= elapsed / interval + 1, times
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) > interval / 2, gaps
    assert second.process is not None and second.process.poll() is None


async def test_a_consent_is_recorded_once_across_two_processes(
    make_server: Callable[..., Server],
) -> None:
    """A browser's first requests after consenting, arriving at two processes at once, record
    its session, access record and consent exactly once, and none of them fails."""
    first = make_server(CHATSERVER_SECRET_KEY="shared-secret-for-two-processes-0123456789")
    second = make_server(CHATSERVER_SECRET_KEY="shared-secret-for-two-processes-0123456789",
                         CHATSERVER_DATABASE_URL=first.database_url)
    for round_ in range(3):
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as browser:
            consent = await browser.post("/api/consent", json={"policy_version": "1.01"})
            assert consent.status_code == 200, consent.text
            cookies = dict(browser.cookies)
            async with (httpx.AsyncClient(base_url=first.url, cookies=cookies, timeout=10) as a,
                        httpx.AsyncClient(base_url=second.url, cookies=cookies, timeout=10) as b):
                answers = await asyncio.gather(*(client.get("/api/me")
                                                 for _ in range(8) for client in (a, b)))
            assert all(r.status_code == 200 for r in answers), [
                (r.status_code, r.text) for r in answers if r.status_code != 200]
        sessions = first.query("SELECT COUNT(*) FROM visitor_sessions")[0][0]
        consents = first.query("SELECT COUNT(*) FROM consents")[0][0]
        starts = first.query(
            "SELECT COUNT(*) FROM access_events WHERE kind = 'session_start'")[0][0]
        assert sessions == consents == starts == round_ + 1
