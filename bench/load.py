"""Load generator: N live conversations, both sides talking, against the chat server or the baseline.

    python bench/load.py --conversations 50 --duration 15              # flat out
    python bench/load.py --conversations 200 --duration 15 --rate 1    # 1 msg/s per side
    python bench/load.py --conversations 50 --duration 15 --compare    # chat server, then baseline
    python bench/load.py --compare --postgres postgresql://postgres@127.0.0.1:5432/postgres
                                     # chat server on SQLite, on PostgreSQL, then the baseline
    python bench/load.py --compare --workers 1,2,4
                                     # also `serve --workers N` with a Redis broadcast
    python bench/load.py --compare --raw --pin --conversations 100 --per-agent 10
                                     # the cheap generator on CPU 1, each server on CPU 0

The generator's own cost: by default one process speaks WebSocket through the `websockets`
library, which costs the client about as much CPU per message as the bare relay costs the server.
`--raw` speaks it over bare asyncio instead (bench/rawws.py: frames handed to a callback, each
socket's frames of a loop turn written at once, flat out the next message sent from the ack that
freed its slot), `--clients N` deals the agent sockets, each with all its visitors, over N
spawned processes started at one time (figures merged), and `--pin SERVER:CLIENT` runs the server
(and its workers) under `taskset -c SERVER` and the generator on CLIENT (default 0:1). The client's
and the server's CPU per relayed message are in the report, so that one can see which was the
bottleneck.

By default it starts its own server (`python -m chatserver serve` on a free port, a fresh data folder
in a temporary directory, CHATSERVER_LIMITS_EXEMPT=127.0.0.1) and creates the agent `benchagent`
with the CLI. Every conversation is a real visitor (consent to the current policy, pre-chat form,
/ws/visitor) claimed by an agent socket (/ws/agent, one per --per-agent conversations, all signed in
as the same agent). `--baseline` runs the same traffic against bench/baseline.py instead: one room of
two sockets per conversation, no storage. `--postgres ADMIN_URL` adds a run of the chat server on
PostgreSQL (`chatserver-pg`): a fresh database `chatbench_<random>` is created through ADMIN_URL for
the run and dropped after it. `--workers 1,2,4` adds runs of `chatserver serve --workers N` with a
Redis broadcast (`CHATSERVER_BROADCAST_URL` = --redis with a key prefix of the run's own), named
`redis-wN` (`pg-redis-wN` on PostgreSQL); 1 is always among them, so the cost of Redis against the
plain `chatserver` run (one process, `memory://`) shows. A visitor's and its agent's sockets may
then land on different processes: their messages cross through Redis.

Each side of each conversation sends `message` frames, at --rate per second or, without it, flat
out; either way at most --in-flight un-acked at a time. Measured over the --duration window:

- ack latency: send of a message to its `ack`, p50/p99/max in ms (all, visitor side, agent side);
- acked/s and relayed/s: acks, and message frames received by the OTHER side of the conversation;
- lost: acked messages the other side never received (after a drain of up to --drain seconds);
  also duplicates, reordering (per sender) and misrouting (to a socket of another conversation);
- server RSS (VmRSS) idle, at the start of traffic, peak during traffic and drain (sampled every
  0.5 s), at the end, and the peak during setup (staff logins hash passwords with argon2);
  server and client CPU over the window, as % of one core (the client shares the machine).
  "Server" is the process started and all its descendants (the workers of `--workers N`; their
  RSS is summed, so pages the forked workers share with the parent count once per process).
  With Redis, the CPU of redis-server over the window is given too (it is also in "other").

It prints a report and one JSON line per run (`{"bench": ...}`); with --compare, a side-by-side
table too. Exit status 1 when anything was lost, duplicated, reordered, misrouted, left un-acked or
answered with an error, 2 when a run could not start. It only talks to 127.0.0.1, and every phase
has a time limit, so it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # bench/rawws.py, when this module is imported from elsewhere
    sys.path.insert(0, str(BENCH))

from rawws import RawClosed, RawWebSocket, connect_raw  # noqa: E402

json_loads: Callable[[str | bytes], Any] = json.loads
with contextlib.suppress(ImportError):  # the client parses every frame: orjson at a fraction
    from orjson import loads as json_loads

CLOSED = (ConnectionClosed, RawClosed)
CLOCK = time.monotonic  # one clock for every client process: CLOCK_MONOTONIC is system-wide
AGENT_NAME = "benchagent"
PASSWORD = "correct horse battery staple"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
SAMPLE_SECONDS = 0.5
SETUP_CONCURRENCY = 16
BODY = "Hello from the {role} of conversation {i}, message {n}: could you check my order, please?"


# -- the server under test ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int | None) -> list[int]:
    """pid and all its descendants: `serve --workers N` forks its workers from one parent."""
    if pid is None:
        return []
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def tree_total(pid: int | None, measure: Callable[[int], float | int | None]) -> Any:
    """A measure summed over a process and its descendants; None when none could be read."""
    values = [v for v in map(measure, process_tree(pid)) if v is not None]
    return sum(values) if values else None


def processes_named(comm: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
    return found


def socket_fds(pid: int) -> int:
    """Open sockets of a process: client connections, plus its database, Redis and listening
    sockets; enough to see how the kernel spread the clients over the workers."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                count += os.readlink(fd).startswith("socket:")
    return count


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_fields() -> list[int]:
    """The machine's CPU time since boot by kind, in ticks: user, nice, system, idle, iowait,
    irq, softirq, steal (/proc/stat's first line)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by all cores together since boot, from /proc/stat."""
    fields = _cpu_fields()[:7]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave this virtual machine's cores to others since boot: on a
    shared host it moves a run's latency far more than any change to the server does."""
    fields = _cpu_fields()
    return (fields[7] if len(fields) > 7 else 0) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A server in a subprocess, on a free port, logging to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def launch(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT)

    async def start(self, url: str) -> None:
        self.process = self.launch()
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited at start:\n{self.log_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url + "/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"server did not start in 30 s:\n{self.log_text()[-3000:]}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def problems(self) -> list[str]:
        """Log lines that speak of errors, tracebacks or warnings."""
        marks = (" ERROR ", " CRITICAL ", "Traceback", " WARNING ", "Exception")
        return [line for line in self.log_text().splitlines() if any(m in line for m in marks)]

    async def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 5)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def agent_name(g: int) -> str:
    """Each agent socket signs in as its own agent: one agent's tabs all follow all of that
    agent's conversations, which is not what --per-agent means to measure."""
    return AGENT_NAME if g == 0 else f"{AGENT_NAME}{g}"


async def postgres_admin(admin_url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> Any:
    """A fresh PostgreSQL database for one run; its URL. Dropped afterwards."""
    name = "chatbench_" + os.urandom(6).hex()
    await postgres_admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(admin_url)._replace(path="/" + name).geturl()
    finally:
        await postgres_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Target:
    """One server configuration to measure."""

    name: str
    baseline: bool = False
    postgres: bool = False
    workers: int | None = None  # `serve --workers N` with a Redis broadcast; None: memory://


def run_redis_url(base: str, name: str) -> str:
    """--redis with a key and channel prefix of this run's own, so it shares Redis with nobody."""
    parts = urlsplit(base)
    prefix = f"chatbench-{os.getpid()}-{name}-{os.urandom(3).hex()}:"
    query = "&".join(q for q in (parts.query, urlencode({"prefix": prefix})) if q)
    return parts._replace(query=query).geturl()


def pinned(cpus: str | None) -> list[str]:
    """The argv prefix that runs a server on these CPUs only (`taskset -c`), or nothing."""
    return ["taskset", "-c", cpus] if cpus else []


async def start_chatserver(tmp: Path, agents: int = 1, database_url: str | None = None,
                           workers: int | None = None, broadcast_url: str | None = None,
                           cpus: str | None = None) -> tuple[ServerProcess, str]:
    port = free_port()
    env = child_env({"CHATSERVER_DATA_DIR": str(tmp / "data"),
                     "CHATSERVER_LIMITS_EXEMPT": "127.0.0.1",
                     **({"CHATSERVER_DATABASE_URL": database_url} if database_url else {}),
                     **({"CHATSERVER_BROADCAST_URL": broadcast_url} if broadcast_url else {})})
    argv = [*pinned(cpus), sys.executable, "-m", "chatserver", "serve", "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    server = ServerProcess(argv, env, tmp / "chatserver.log")
    url = f"http://127.0.0.1:{port}"
    await server.start(url)
    gate = asyncio.Semaphore(4)  # a few at once: each CLI start and argon2 hash takes a second

    async def add_agent(g: int) -> str:
        async with gate:
            add = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "chatserver", "user", "add", agent_name(g), "--role",
                "agent", "--password-stdin", cwd=REPO, env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(add.communicate((PASSWORD + "\n").encode()), 120)
        return "" if add.returncode == 0 else (
            f"user add failed ({add.returncode}): {err.decode()}{out.decode()}")

    failures = [f for f in await asyncio.gather(*(add_agent(g) for g in range(agents))) if f]
    if failures:
        await server.stop()
        raise RuntimeError(failures[0])
    return server, url


async def start_baseline(tmp: Path, cpus: str | None = None) -> tuple[ServerProcess, str]:
    port = free_port()
    server = ServerProcess([*pinned(cpus), sys.executable, str(BENCH / "baseline.py"),
                            "--port", str(port)],
                           child_env({}), tmp / "baseline.log")
    url = f"http://127.0.0.1:{port}"
    await server.start(url)
    return server, url


# -- clients --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Conn:
    """One client socket and the conversations whose frames may arrive on it."""

    ws: ClientConnection | RawWebSocket
    role: str  # "visitor" or "agent"
    convs: set[str]
    closing: bool = False


@dataclass(eq=False)
class Stream:
    """One side of one conversation: its messages, at most `in_flight` of them un-acked."""

    index: int
    role: str
    conv: str
    conn: Conn
    window: asyncio.Semaphore
    extra: dict[str, str]
    prefix: str
    sent: int = 0
    template: list[str] = field(default_factory=list)  # the frame's JSON, split where n goes
    last_relayed: int = 0
    kick: Callable[[], Any] | None = None  # --raw flat out: send the next message at once


@dataclass
class Tally:
    """What happened to every message of a run; the receive loops and the senders update it."""

    pending: dict[str, tuple[Stream, float]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    received: set[str] = field(default_factory=set)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"visitor": [], "agent": []})
    streams: dict[str, Stream] = field(default_factory=dict)
    window_end: float = math.inf
    acked_in_window: int = 0
    relayed_in_window: int = 0
    duplicates: int = 0
    reordered: int = 0
    misrouted: int = 0
    other_tab: int = 0
    stray_acks: int = 0
    stray_messages: int = 0
    send_failures: int = 0
    late_sends: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    waiters: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    unsettled: set[str] = field(default_factory=set)  # sent, and not yet both acked and relayed
    stopped: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def on_send(self, stream: Stream, cmid: str, now: float) -> None:
        self.pending[cmid] = (stream, now)
        self.unsettled.add(cmid)

    def settle(self, cmid: str) -> None:
        self.unsettled.discard(cmid)
        if self.stopped and not self.unsettled:
            self.settled.set()

    def stop(self) -> None:
        self.stopped = True
        if not self.unsettled:
            self.settled.set()

    def on_ack(self, cmid: str, now: float) -> None:
        entry = self.pending.pop(cmid, None)
        if entry is None:
            self.stray_acks += 1
            return
        stream, sent_at = entry
        self.latencies[stream.role].append(now - sent_at)
        self.acked.add(cmid)
        if now <= self.window_end:
            self.acked_in_window += 1
        stream.window.release()
        if cmid in self.received:
            self.settle(cmid)
        if stream.kick is not None:
            stream.kick()

    def on_message(self, conn: Conn, frame: dict[str, Any], now: float) -> None:
        cmid = frame.get("client_msg_id")
        if not isinstance(cmid, str) or cmid[:1] == conn.role[:1]:
            return  # a system message, or the echo of this side's own message
        prefix, _, n = cmid.rpartition(".")
        stream = self.streams.get(prefix + ".")
        if stream is None or not n.isdigit():
            self.stray_messages += 1
            return
        if frame.get("conversation_id", stream.conv) != stream.conv or (
            stream.conv not in conn.convs and conn.role == "visitor"
        ):
            self.misrouted += 1  # a message shown in another conversation: never acceptable
            return
        if stream.conv not in conn.convs:
            self.other_tab += 1  # another socket of the same agent follows this conversation too
            return
        if cmid in self.received:
            self.duplicates += 1
            return
        self.received.add(cmid)
        if cmid in self.acked:
            self.settle(cmid)
        if int(n) <= stream.last_relayed:
            self.reordered += 1
        stream.last_relayed = max(stream.last_relayed, int(n))
        if now <= self.window_end:
            self.relayed_in_window += 1


def handle_frame(conn: Conn, tally: Tally, raw: str | bytes) -> None:
    """One frame received on a socket."""
    frame = json_loads(raw)
    kind = frame.get("type")
    if kind == "ack":
        tally.on_ack(str(frame.get("client_msg_id")), CLOCK())
    elif kind == "message":
        tally.on_message(conn, frame, CLOCK())
    elif kind == "status":
        waiter = tally.waiters.get(str(frame.get("conversation_id")))
        if waiter is not None and not waiter.done() and frame.get("status") == "active":
            waiter.set_result(None)
    elif kind == "error":
        code = f"{conn.role}:{frame.get('code')}"
        tally.errors[code] += 1
        waiter = tally.waiters.get(str(frame.get("conversation_id")))
        if waiter is not None and not waiter.done():
            waiter.set_exception(RuntimeError(f"{code}: {frame.get('message')}"))


async def receive(conn: Conn, tally: Tally) -> None:
    """Read every frame of one socket until it closes."""
    ws = conn.ws
    try:
        if isinstance(ws, RawWebSocket):  # frames come by callback: no await per frame
            ws.on_text(lambda text: handle_frame(conn, tally, text))
            await ws.wait_closed()
        else:
            async for raw in ws:
                handle_frame(conn, tally, raw)
    except CLOSED:
        pass
    finally:
        if not conn.closing:
            tally.closes[f"{conn.role}:{ws.close_code}"] += 1


async def open_ws(url: str, cookie: str = "", raw: bool = False
                  ) -> ClientConnection | RawWebSocket:
    if raw:
        return await connect_raw(url, cookie, open_seconds=30, max_size=2**20)
    return await connect(url, additional_headers={"Cookie": cookie} if cookie else None,
                         open_timeout=30, close_timeout=2, ping_interval=None, compression=None,
                         max_size=2**20)


async def first_frame(ws: ClientConnection | RawWebSocket, kind: str) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if frame.get("type") != kind:
        raise RuntimeError(f"expected a {kind} frame first, got {frame}")
    return frame


def cookie_header(http: httpx.AsyncClient) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in http.cookies.jar)


async def limited(items: list[int], job: Callable[[int], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(i: int) -> Any:
        async with gate:
            return await job(i)

    return list(await asyncio.gather(*(one(i) for i in items)))


class Clients:
    """Every socket opened in a run, each with its reader task; closes them all at the end."""

    def __init__(self, tally: Tally, raw: bool = False) -> None:
        self.tally = tally
        self.raw = raw
        self.conns: list[Conn] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self, url: str, cookie: str = "") -> ClientConnection | RawWebSocket:
        return await open_ws(url, cookie, self.raw)

    def add(self, ws: ClientConnection | RawWebSocket, role: str, convs: set[str]) -> Conn:
        conn = Conn(ws, role, convs)
        self.conns.append(conn)
        self.tasks.append(asyncio.create_task(receive(conn, self.tally)))
        return conn

    async def close(self) -> None:
        for conn in self.conns:
            conn.closing = True
        await asyncio.gather(*(c.ws.close() for c in self.conns), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class Setup:
    # index, conv, visitor, agent, agent frame extra
    pairs: list[tuple[int, str, Conn, Conn, dict[str, str]]]
    agent_sockets: int


def group_members(n: int, per_agent: int, group: int) -> list[int]:
    """The conversations (0..n-1) of agent socket `group`: a client process sets up whole groups,
    so that each socket's every frame is checked by the process that sent the other side."""
    return list(range(group * per_agent, min(n, (group + 1) * per_agent)))


async def setup_chatserver(url: str, n: int, per_agent: int, tally: Tally,
                           clients: Clients, groups: list[int] | None = None) -> Setup:
    """Visitors, agent sockets and claims for `groups` (all by default) of the n conversations."""
    if groups is None:
        groups = list(range(-(-n // per_agent)))
    ws_url = "ws" + url.removeprefix("http")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.get("/api/policy")
        response.raise_for_status()
        version = response.json()["version"]

    async def visitor(i: int) -> Conn:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            response = await http.post("/api/consent", json={"policy_version": version})
            if response.status_code != 200:
                raise RuntimeError(f"consent: {response.status_code} {response.text}")
            response = await http.post("/api/visitor", json={
                "name": f"Bench Visitor {i}", "email": f"visitor{i}@bench.example.com",
                "company": "Bench Ltd",
            })
            if response.status_code != 200:
                raise RuntimeError(f"visitor: {response.status_code} {response.text}")
            cookie = cookie_header(http)
        ws = await clients.open(ws_url + "/ws/visitor", cookie)
        welcome = await first_frame(ws, "welcome")
        return clients.add(ws, "visitor", {str(welcome["conversation_id"])})

    indices = [i for g in groups for i in group_members(n, per_agent, g)]
    visitors: list[Conn] = await limited(indices, visitor)
    convs = [next(iter(v.convs)) for v in visitors]
    if len(set(convs)) != len(indices):
        raise RuntimeError("two visitors were given the same conversation")
    conv_of = dict(zip(indices, convs, strict=True))
    visitor_of = dict(zip(indices, visitors, strict=True))

    async def agent(g: int) -> Conn:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            response = await http.post("/api/staff/login",
                                       json={"username": agent_name(g), "password": PASSWORD})
            if response.status_code != 200:
                raise RuntimeError(
                    f"agent login: {response.status_code} {response.text} (with --url, create the "
                    f"agent first: python -m chatserver user add {AGENT_NAME} --role agent)")
            cookie = cookie_header(http)
        ws = await clients.open(ws_url + "/ws/agent", cookie)
        await first_frame(ws, "queue")
        return clients.add(ws, "agent", {conv_of[i] for i in group_members(n, per_agent, g)})

    # Every agent socket opens before any claim: a socket that opens later also follows the
    # conversations its agent claimed before (as a second browser tab would), which would blur
    # "one agent socket per --per-agent conversations".
    agents: list[Conn] = await limited(groups, agent)
    agent_of = dict(zip(groups, agents, strict=True))
    loop = asyncio.get_running_loop()
    for g, conn in agent_of.items():
        for i in group_members(n, per_agent, g):
            tally.waiters[conv_of[i]] = loop.create_future()
            await conn.ws.send(json.dumps({"type": "claim", "conversation_id": conv_of[i]}))
    await asyncio.wait_for(asyncio.gather(*tally.waiters.values()), 120)
    tally.waiters.clear()
    pairs = [(i, conv_of[i], visitor_of[i], agent_of[i // per_agent],
              {"conversation_id": conv_of[i]}) for i in indices]
    return Setup(pairs, len(agents))


async def setup_baseline(url: str, n: int, clients: Clients, per_agent: int = 1,
                         groups: list[int] | None = None) -> Setup:
    """One room of two sockets per conversation of `groups` (all by default)."""
    ws_url = "ws" + url.removeprefix("http")
    if groups is None:
        groups = list(range(-(-n // per_agent)))
    indices = [i for g in groups for i in group_members(n, per_agent, g)]

    async def room(i: int) -> tuple[Conn, Conn]:
        name = f"room{i}"
        pair: list[Conn] = []
        for role in ("visitor", "agent"):  # one after the other: both are in the room when done
            ws = await clients.open(f"{ws_url}/ws/{name}")
            await first_frame(ws, "welcome")
            pair.append(clients.add(ws, role, {name}))
        return pair[0], pair[1]

    rooms: list[tuple[Conn, Conn]] = await limited(indices, room)
    pairs: list[tuple[int, str, Conn, Conn, dict[str, str]]] = [
        (i, next(iter(v.convs)), v, a, {}) for i, (v, a) in zip(indices, rooms, strict=True)]
    return Setup(pairs, len(indices))


# -- traffic --------------------------------------------------------------------------------------


def frame_template(stream: Stream) -> list[str]:
    """The JSON of the stream's message frame, split where the message number goes: each send
    joins it around str(n) instead of building and encoding a dict (the same text json.dumps
    gives, at a fraction of the client's CPU)."""
    mark = "\x00n\x00"
    frame = {"type": "message", **stream.extra,
             "body": BODY.format(role=stream.role, i=stream.index, n=mark),
             "client_msg_id": f"{stream.prefix}{mark}"}
    return json.dumps(frame).split(json.dumps(mark)[1:-1])


async def send_stream(stream: Stream, tally: Tally, start: float, stop_at: float,
                      rate: float | None) -> None:
    """One side of one conversation over the window. A sender waiting for its window when the
    window ends is woken by release_at_stop(), sees the time and returns."""
    clock = CLOCK
    interval = 1 / rate if rate else 0.0
    due = start + random.uniform(0, interval)  # noqa: S311 - spreads the senders' phases
    ws = stream.conn.ws
    window = stream.window
    parts = stream.template or frame_template(stream)
    prefix = stream.prefix
    while True:
        if rate:
            if due >= stop_at:
                return
            await asyncio.sleep(max(0.0, due - clock()))
        if clock() >= stop_at:
            return
        await window.acquire()
        now = clock()
        if now >= stop_at:
            window.release()
            return
        if rate:
            if now - due > interval:
                tally.late_sends += 1
            due += interval
        stream.sent += 1
        n = str(stream.sent)
        cmid = prefix + n
        tally.on_send(stream, cmid, now)
        try:
            await ws.send(n.join(parts))
        except CLOSED:
            tally.send_failures += 1
            tally.pending.pop(cmid, None)
            tally.settle(cmid)
            return


def send_now(stream: Stream, tally: Tally, stop_at: float) -> None:
    """--raw flat out: the stream's next message, written at once (from the ack that freed its
    slot), so that no task wakes per message; at most --in-flight un-acked as with send_stream."""
    now = CLOCK()
    ws = stream.conn.ws
    if now >= stop_at or not isinstance(ws, RawWebSocket):
        stream.kick = None
        return
    stream.sent += 1
    n = str(stream.sent)
    cmid = stream.prefix + n
    tally.on_send(stream, cmid, now)
    try:
        ws.write_text(n.join(stream.template))
    except RawClosed:
        tally.send_failures += 1
        tally.pending.pop(cmid, None)
        tally.settle(cmid)
        stream.kick = None


async def flat_out_raw(streams: list[Stream], tally: Tally, stop_at: float,
                       in_flight: int) -> None:
    """Every stream fills its window, then each ack sends the next message, until stop_at."""
    for stream in streams:
        stream.kick = lambda stream=stream: send_now(stream, tally, stop_at)
        for _ in range(in_flight):
            if stream.kick is not None:
                send_now(stream, tally, stop_at)
    await asyncio.sleep(max(0.0, stop_at - CLOCK()))
    for stream in streams:
        stream.kick = None


def release_at_stop(streams: list[Stream]) -> None:
    """At the end of the window: wake every sender waiting for a free slot, so that it stops."""
    for stream in streams:
        stream.window.release()


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return round(sorted_values[index] * 1000, 2)


def summary(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {"p50": percentile(ordered, 50), "p99": percentile(ordered, 99),
            "max": percentile(ordered, 100)}


def mib(kib: int | None) -> float | None:
    return round(kib / 1024, 1) if kib is not None else None


async def run_once(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    """One run against one target."""
    if not target.postgres:
        return await _run_once(args, target, None)
    async with postgres_database(args.postgres) as database_url:
        return await _run_once(args, target, database_url)


async def _run_once(args: argparse.Namespace, target: Target, database_url: str | None
                    ) -> dict[str, Any]:
    server: ServerProcess | None = None
    rss_samples: dict[str, list[int]] = {"setup": [], "traffic": []}
    phase = "setup"
    sampler: asyncio.Task[None] | None = None
    server_cpus, _ = split_pin(args.pin)
    result: dict[str, Any] = {
        "bench": target.name, "conversations": args.conversations, "duration_s": args.duration,
        "rate_per_side": args.rate, "in_flight": args.in_flight, "workers": target.workers,
        "per_agent": args.per_agent, "raw": args.raw, "pin": args.pin,
    }
    broadcast_url = run_redis_url(args.redis, target.name) if target.workers else None
    with tempfile.TemporaryDirectory(prefix="chatbench-") as tmp_name:
        tmp = Path(tmp_name)
        parts: list[dict[str, Any]] = []
        try:
            if args.url:
                url, pid = args.url.rstrip("/"), args.pid
            else:
                agents = -(-args.conversations // args.per_agent)
                server, url = await (
                    start_baseline(tmp, server_cpus) if target.baseline
                    else start_chatserver(tmp, agents, database_url, target.workers,
                                          broadcast_url, server_cpus))
                pid = server.pid
            idle = tree_total(pid, rss_kib)

            async def sample() -> None:
                # the process tree is read again every 10th sample only: a walk of /proc takes
                # tens of milliseconds on a busy machine, CPU charged to the client
                tree: list[int] = []
                for n in itertools.count():
                    if n % 10 == 0:
                        tree = process_tree(pid)
                    values = [v for v in map(rss_kib, tree) if v is not None]
                    if values:
                        rss_samples[phase].append(sum(values))
                    await asyncio.sleep(SAMPLE_SECONDS)

            sampler = asyncio.create_task(sample())
            window: dict[str, Any] = {}
            redis_pids = processes_named("redis-server") if broadcast_url else []

            async def measure_window(start: float) -> None:
                """Server, client and machine CPU over the window, from its start to its end."""
                result["loadavg_1min_before"] = round(os.getloadavg()[0], 2)
                cpu_redis_0 = sum(cpu_seconds(p) or 0 for p in redis_pids)
                cpu_server_0, cpu_parent_0 = tree_total(pid, cpu_seconds), time.process_time()
                cpu_machine_0, steal_0 = machine_busy_seconds(), steal_seconds()
                await asyncio.sleep(max(0.0, start + args.duration - CLOCK()))
                window["elapsed"] = CLOCK() - start
                cpu_server_1, cpu_parent_1 = tree_total(pid, cpu_seconds), time.process_time()
                window["machine"] = machine_busy_seconds() - cpu_machine_0
                window["steal"] = steal_seconds() - steal_0
                window["redis"] = sum(cpu_seconds(p) or 0 for p in redis_pids) - cpu_redis_0
                window["parent"] = cpu_parent_1 - cpu_parent_0
                window["server"] = (cpu_server_1 - cpu_server_0 if cpu_server_0 is not None
                                    and cpu_server_1 is not None else None)
                result["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
                result["server_processes"] = len(process_tree(pid))

            window_task: list[asyncio.Task[None]] = []

            async def begin(setups: list[dict[str, Any]]) -> float:
                """Every client is set up: note the server's state, start the window."""
                nonlocal phase
                result["setup_s"] = max(s["setup_s"] for s in setups)
                result["sockets"] = {"visitor": args.conversations,
                                     "agent": sum(s["agent_sockets"] for s in setups)}
                window["rss_start"] = tree_total(pid, rss_kib)
                result["socket_fds"] = [socket_fds(p) for p in process_tree(pid)]
                phase = "traffic"
                start = CLOCK() + (0.2 if len(setups) > 1 else 0.0)  # time to tell every client
                window_task.append(asyncio.create_task(measure_window(start)))
                await asyncio.sleep(0)  # the window's first CPU readings come before the traffic
                return start

            groups = list(range(-(-args.conversations // args.per_agent)))
            if args.clients == 1:
                parts = [await drive(args, target.baseline, url, groups, begin)]
            else:
                parts = await drive_in_processes(args, target.baseline, url, groups, begin)
            await window_task[0]
            rss_end = tree_total(pid, rss_kib)
        finally:
            if sampler is not None:
                sampler.cancel()
            if server is not None:
                result["server_alive_at_end"] = server.alive()
                await server.stop()
                problems = server.problems()
                result["server_log_problems"] = len(problems)
                result["server_log_examples"] = problems[:5]
        merged = merge_parts(parts)
        elapsed = window["elapsed"]
        server_cpu = window["server"]
        # the client: every client process over its traffic, and this one's sampling
        client_cpu = merged["client_cpu_s"] + (window["parent"] if args.clients > 1 else 0.0)
        machine_cpu = window["machine"]
        latencies = merged.pop("latencies")
        everything = latencies["visitor"] + latencies["agent"]
        relayed_in_window = merged.pop("relayed_in_window")
        acked_in_window = merged.pop("acked_in_window")
        result.update({
            "clients": len(parts),
            **{k: merged[k] for k in (
                "sent", "sent_visitor", "sent_agent", "acked", "unacked", "relayed", "lost",
                "lost_examples", "duplicates", "reordered", "misrouted", "other_agent_socket",
                "stray_acks", "stray_messages", "send_failures", "late_sends")},
            "drain_s": round(max(0.0, max(p["drain_end"] for p in parts)
                                 - (merged["window_end"])), 2),
            "acked_per_s": round(acked_in_window / args.duration, 1),
            "relayed_per_s": round(relayed_in_window / args.duration, 1),
            "ack_ms": summary(everything),
            "ack_ms_visitor": summary(latencies["visitor"]),
            "ack_ms_agent": summary(latencies["agent"]),
            "rss_mib": {"idle": mib(idle), "start": mib(window["rss_start"]),
                        "peak": mib(max([*rss_samples["traffic"], window["rss_start"] or 0,
                                         rss_end or 0]) if pid else None),
                        "end": mib(rss_end),
                        "setup_peak": mib(max(rss_samples["setup"], default=None))},
            "server_cpu_pct": round(100 * server_cpu / elapsed) if server_cpu is not None
            else None,
            "client_cpu_pct": round(100 * client_cpu / elapsed),
            # everything else on the machine meanwhile (other jobs skew the figures)
            "other_cpu_pct": round(100 * (machine_cpu - client_cpu - (server_cpu or 0)) / elapsed),
            # the shared redis-server (other sessions' tests use it too); part of "other"
            "redis_cpu_pct": round(100 * window["redis"] / elapsed) if redis_pids else None,
            # the cores' time taken by the hypervisor for other machines (100 = a whole core)
            "steal_pct": round(100 * window["steal"] / elapsed),
            # CPU per message relayed in the window: what the client costs against the server
            "server_cpu_us_per_msg": round(1e6 * server_cpu / relayed_in_window, 1)
            if server_cpu is not None and relayed_in_window else None,
            "client_cpu_us_per_msg": round(1e6 * client_cpu / relayed_in_window, 1)
            if relayed_in_window else None,
            "cores": os.cpu_count(),
            "errors": merged["errors"],
            "unexpected_closes": merged["unexpected_closes"],
        })
    return result


async def drive(args: argparse.Namespace, baseline: bool, url: str, groups: list[int],
                begin: Callable[[list[dict[str, Any]]], Awaitable[float]]) -> dict[str, Any]:
    """One client: set up the conversations of `groups`, wait for the window to start (begin),
    run the traffic, drain, close; what happened, in figures merge_parts() adds up."""
    tally = Tally()
    clients = Clients(tally, args.raw)
    part: dict[str, Any] = {}
    try:
        t_setup = time.perf_counter()
        async with asyncio.timeout(120 + args.conversations):
            if not baseline:
                setup = await setup_chatserver(url, args.conversations, args.per_agent, tally,
                                               clients, groups)
            else:
                setup = await setup_baseline(url, args.conversations, clients, args.per_agent,
                                             groups)
        streams: list[Stream] = []
        for i, conv, visitor, agent, extra in setup.pairs:
            for role, conn, frame_extra in (("visitor", visitor, {}), ("agent", agent, extra)):
                stream = Stream(i, role, conv, conn, asyncio.Semaphore(args.in_flight),
                                frame_extra, f"{role[0]}{i}.")
                stream.template = frame_template(stream)
                streams.append(stream)
                tally.streams[stream.prefix] = stream
        start = await begin([{"setup_s": round(time.perf_counter() - t_setup, 2),
                              "agent_sockets": setup.agent_sockets}])
        stop_at = start + args.duration
        tally.window_end = stop_at
        await asyncio.sleep(max(0.0, start - CLOCK()))
        cpu_0 = time.process_time()
        if args.raw and not args.rate:
            await flat_out_raw(streams, tally, stop_at, args.in_flight)
        else:
            stopper = asyncio.get_running_loop().call_later(max(0.0, stop_at - CLOCK()),
                                                            release_at_stop, streams)
            await asyncio.gather(*(send_stream(s, tally, start, stop_at, args.rate)
                                   for s in streams))
            stopper.cancel()
        part["client_cpu_s"] = time.process_time() - cpu_0
        tally.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.settled.wait(), args.drain)
        part["drain_end"] = CLOCK()
        part["window_end"] = stop_at
        lost = tally.acked - tally.received
        part.update({
            "sent": sum(s.sent for s in streams),
            "sent_visitor": sum(s.sent for s in streams if s.role == "visitor"),
            "sent_agent": sum(s.sent for s in streams if s.role == "agent"),
            "acked": len(tally.acked),
            "unacked": len(tally.pending),
            "relayed": len(tally.received),
            "lost": len(lost),
            "lost_examples": sorted(lost)[:5],
            "duplicates": tally.duplicates,
            "reordered": tally.reordered,
            "misrouted": tally.misrouted,
            "other_agent_socket": tally.other_tab,
            "stray_acks": tally.stray_acks,
            "stray_messages": tally.stray_messages,
            "send_failures": tally.send_failures,
            "late_sends": tally.late_sends,
            "acked_in_window": tally.acked_in_window,
            "relayed_in_window": tally.relayed_in_window,
            "latencies": tally.latencies,
        })
    finally:
        await clients.close()
    part["errors"] = dict(tally.errors)
    part["unexpected_closes"] = dict(tally.closes)
    return part


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several client processes as one run's."""
    merged: dict[str, Any] = {"latencies": {"visitor": [], "agent": []}, "lost_examples": [],
                              "errors": Counter(), "unexpected_closes": Counter(),
                              "window_end": max(p["window_end"] for p in parts)}
    for part in parts:
        for key, value in part.items():
            if key == "latencies":
                for role, values in value.items():
                    merged["latencies"][role].extend(values)
            elif key in ("errors", "unexpected_closes"):
                merged[key].update(value)
            elif key == "lost_examples":
                merged[key] = sorted(merged[key] + value)[:5]
            elif key not in ("drain_end", "window_end"):
                merged[key] = merged.get(key, 0) + value
    merged["errors"] = dict(merged["errors"])
    merged["unexpected_closes"] = dict(merged["unexpected_closes"])
    return merged


# -- several client processes ---------------------------------------------------------------------


def client_process(conn: Any, args: argparse.Namespace, baseline: bool, url: str,
                   groups: list[int]) -> None:
    """A client process (multiprocessing, spawned): its share of the groups, on its own loop.
    It says ("ready", setup) when set up, waits for the start time, and ends with ("done", part)
    or ("failed", reason)."""

    async def begin(setups: list[dict[str, Any]]) -> float:
        conn.send(("ready", setups[0]))
        start: float = await asyncio.to_thread(conn.recv)
        return start

    try:
        part = asyncio.run(drive(args, baseline, url, groups, begin))
    except BaseException as exc:  # tell the parent why, rather than leave it waiting
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("done", part))
    finally:
        conn.close()


def receive_from(conn: Any, timeout: float) -> tuple[str, Any]:
    if not conn.poll(timeout):
        return "failed", f"no word from a client process in {timeout:.0f} s"
    try:
        message: tuple[str, Any] = conn.recv()
    except EOFError:
        return "failed", "a client process ended without a word"
    return message


async def drive_in_processes(args: argparse.Namespace, baseline: bool, url: str,
                             groups: list[int],
                             begin: Callable[[list[dict[str, Any]]], Awaitable[float]]
                             ) -> list[dict[str, Any]]:
    """--clients N: the agent groups dealt over N processes (each group with all its visitors),
    set up in parallel, started at one time, their figures returned for merge_parts()."""
    context = multiprocessing.get_context("spawn")  # never fork a process with a running loop
    shares = [groups[k::args.clients] for k in range(min(args.clients, len(groups)))]
    processes, pipes = [], []
    for share in shares:
        mine, theirs = context.Pipe()
        process = context.Process(target=client_process, args=(theirs, args, baseline, url, share),
                                  daemon=True)
        process.start()
        theirs.close()
        processes.append(process)
        pipes.append(mine)
    try:
        setup_limit = 180 + args.conversations
        readies = await asyncio.gather(*(asyncio.to_thread(receive_from, p, setup_limit)
                                         for p in pipes))
        failures = [what for kind, what in readies if kind != "ready"]
        if failures:
            raise RuntimeError(f"client process: {failures[0]}")
        start = await begin([what for _, what in readies])
        for pipe in pipes:
            pipe.send(start)
        ends = await asyncio.gather(*(asyncio.to_thread(
            receive_from, p, args.duration + args.drain + 60) for p in pipes))
        failures = [what for kind, what in ends if kind != "done"]
        if failures:
            raise RuntimeError(f"client process: {failures[0]}")
        return [what for _, what in ends]
    finally:
        for process in processes:
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.kill()
        for pipe in pipes:
            pipe.close()


def split_pin(pin: str | None) -> tuple[str | None, str | None]:
    """--pin SERVER:CLIENT (CPU lists for taskset -c), or none."""
    if not pin:
        return None, None
    server, _, client = pin.partition(":")
    return server or None, client or None


def cpu_list(text: str) -> set[int]:
    """A taskset CPU list: 1, 0,1 or 0-3."""
    cpus: set[int] = set()
    for item in text.split(","):
        first, _, last = item.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def pin_spec(text: str) -> str:
    server, sep, client = text.partition(":")
    try:
        if not sep or not server or not client:
            raise ValueError
        cpu_list(server), cpu_list(client)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: SERVER_CPUS:CLIENT_CPUS, e.g. 0:1") from None
    return text



# -- reporting ------------------------------------------------------------------------------------


def failed(r: dict[str, Any]) -> bool:
    return bool(r.get("lost") or r.get("misrouted") or r.get("unacked") or r.get("send_failures")
                or r.get("errors") or r.get("unexpected_closes") or r.get("duplicates")
                or r.get("reordered") or r.get("server_alive_at_end") is False)


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def report(r: dict[str, Any]) -> str:
    shape = f"{r['rate_per_side']} msg/s per side" if r["rate_per_side"] else "flat out"
    a, v, g, rss = r["ack_ms"], r["ack_ms_visitor"], r["ack_ms_agent"], r["rss_mib"]
    lines = [
        f"{r['bench']}: {r['conversations']} conversations, {r['duration_s']} s, {shape}, "
        f"{r['in_flight']} in flight per side, sockets {r['sockets']['visitor']} visitor + "
        f"{r['sockets']['agent']} agent (setup {r['setup_s']} s, drain {r['drain_s']} s)",
        f"  messages    sent {r['sent']} ({r['sent_visitor']} visitor, {r['sent_agent']} agent)  "
        f"acked {r['acked']}  relayed {r['relayed']}  "
        f"LOST {r['lost']}  unacked {r['unacked']}  dup {r['duplicates']}  "
        f"reordered {r['reordered']}  misrouted {r['misrouted']}",
        f"  throughput  {r['acked_per_s']} acked/s  {r['relayed_per_s']} relayed/s",
        f"  ack ms      p50 {fmt(a['p50'])}  p99 {fmt(a['p99'])}  max {fmt(a['max'])}   "
        f"(visitor {fmt(v['p50'])}/{fmt(v['p99'])}, agent {fmt(g['p50'])}/{fmt(g['p99'])})",
        f"  server      RSS MiB idle {fmt(rss['idle'])}, start {fmt(rss['start'])}, "
        f"peak {fmt(rss['peak'])}, end {fmt(rss['end'])} (setup peak {fmt(rss['setup_peak'])})",
        f"  cpu         server {fmt(r['server_cpu_pct'])}% of a core "
        f"({r.get('server_processes')} processes), client ({r.get('clients', 1)} "
        f"process{'es' if r.get('clients', 1) > 1 else ''}, "
        f"{'raw framing' if r.get('raw') else 'websockets'}) "
        f"{r['client_cpu_pct']}%, other processes {r['other_cpu_pct']}%, hypervisor steal "
        f"{fmt(r.get('steal_pct'))}% ({r['cores']} cores; load {r['loadavg_1min_before']} before, "
        f"{r.get('loadavg_1min_after')} at the end)",
        f"  per message server {fmt(r.get('server_cpu_us_per_msg'))} us CPU, client "
        f"{fmt(r.get('client_cpu_us_per_msg'))} us CPU (per message relayed in the window)"
        + (f"; pinned server:client CPUs {r['pin']}" if r.get("pin") else ""),
    ]
    if r.get("socket_fds") and len(r["socket_fds"]) > 1:
        lines.append(f"  processes   open sockets per process (parent first): {r['socket_fds']}")
    if r.get("redis_cpu_pct") is not None:
        lines.append(f"  redis       redis-server {r['redis_cpu_pct']}% of a core (within other)")
    if r["rate_per_side"]:
        lines.append(f"  late sends  {r['late_sends']} (window full when due)")
    trouble = {k: r[k] for k in ("errors", "unexpected_closes", "stray_acks", "stray_messages",
                                 "other_agent_socket",
                                 "send_failures", "lost_examples", "server_log_problems",
                                 "server_log_examples") if r.get(k)}
    if r.get("server_alive_at_end") is False:
        trouble["server_alive_at_end"] = False
    lines.append(f"  problems    {json.dumps(trouble) if trouble else 'none'}")
    return "\n".join(lines)


ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("ack p50 ms", lambda r: r["ack_ms"]["p50"]),
    ("ack p99 ms", lambda r: r["ack_ms"]["p99"]),
    ("ack max ms", lambda r: r["ack_ms"]["max"]),
    ("acked msgs/s", lambda r: r["acked_per_s"]),
    ("relayed msgs/s", lambda r: r["relayed_per_s"]),
    ("messages sent", lambda r: r["sent"]),
    ("messages lost", lambda r: r["lost"]),
    ("RSS start MiB", lambda r: r["rss_mib"]["start"]),
    ("RSS peak MiB", lambda r: r["rss_mib"]["peak"]),
    ("RSS end MiB", lambda r: r["rss_mib"]["end"]),
    ("server CPU %", lambda r: r["server_cpu_pct"]),
    ("client CPU %", lambda r: r["client_cpu_pct"]),
    ("server us/msg", lambda r: r.get("server_cpu_us_per_msg")),
    ("client us/msg", lambda r: r.get("client_cpu_us_per_msg")),
    ("other CPU %", lambda r: r["other_cpu_pct"]),
    ("redis CPU %", lambda r: r.get("redis_cpu_pct")),
    ("steal %", lambda r: r.get("steal_pct")),
    ("load before", lambda r: r["loadavg_1min_before"]),
    ("load at end", lambda r: r.get("loadavg_1min_after")),
]


def side_by_side(runs: list[dict[str, Any]]) -> str:
    width = 16
    lines = ["figure".ljust(width) + "".join(r["bench"].rjust(14) for r in runs)]
    for label, get in ROWS:
        lines.append(label.ljust(width) + "".join(fmt(get(r)).rjust(14) for r in runs))
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------


def worker_counts(text: str) -> list[int]:
    try:
        counts = {int(n) for n in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: worker counts separated by commas, e.g. 1,2,4"
                                         ) from None
    if not all(1 <= n <= 16 for n in counts):
        raise argparse.ArgumentTypeError("worker counts: 1 to 16")
    return sorted(counts | {1})


def targets(args: argparse.Namespace) -> list[Target]:
    """The chat server (then its --workers runs) on SQLite, on PostgreSQL, then the baseline."""
    runs = []
    for postgres in ([False] if not args.baseline or args.compare else []) + (
            [True] if args.postgres else []):
        runs.append(Target("chatserver-pg" if postgres else "chatserver", postgres=postgres))
        runs += [Target(f"{'pg-' if postgres else ''}redis-w{n}", postgres=postgres, workers=n)
                 for n in args.workers]
    if args.baseline or args.compare:
        runs.append(Target("baseline", baseline=True))
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                epilog="See bench/RESULTS.md for figures.")
    p.add_argument("--conversations", type=int, default=50, help="conversations (rooms) at once")
    p.add_argument("--duration", type=float, default=15, help="seconds of traffic")
    p.add_argument("--rate", type=float, default=None,
                   help="messages per second per side of each conversation (default: flat out)")
    p.add_argument("--in-flight", type=int, default=8, help="un-acked messages per side, at most")
    p.add_argument("--per-agent", type=int, default=50, help="conversations per agent socket")
    p.add_argument("--drain", type=float, default=15,
                   help="seconds to wait after the window for outstanding acks and relays")
    p.add_argument("--url", help="use this running server instead of starting one (127.0.0.1 only; "
                                 f"the agents {AGENT_NAME}, {AGENT_NAME}1, ... (one per agent "
                                 "socket) must exist, rate limits must be exempt)")
    p.add_argument("--pid", type=int, help="with --url: the server's pid, for RSS and CPU")
    p.add_argument("--baseline", action="store_true", help="measure bench/baseline.py instead")
    p.add_argument("--compare", action="store_true",
                   help="run the chat server, then the baseline, with the same parameters")
    p.add_argument("--postgres", metavar="ADMIN_URL",
                   help="also run the chat server on PostgreSQL, in a database made for the run "
                        "through ADMIN_URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres)")
    p.add_argument("--workers", metavar="N[,N...]", type=worker_counts, default=[],
                   help="also run `serve --workers N` with a Redis broadcast, for each N (1 is "
                        "always added: Redis against memory:// in one process); on PostgreSQL "
                        "too with --postgres")
    p.add_argument("--redis", metavar="URL", default="redis://127.0.0.1:6379/9",
                   help="Redis for --workers; each run adds a key prefix of its own "
                        "(default: %(default)s)")
    p.add_argument("--clients", type=int, default=1,
                   help="client processes (default 1); the agent sockets, each with all its "
                        "visitors, are dealt over them; one event loop each, figures merged")
    p.add_argument("--raw", action="store_true",
                   help="speak WebSocket over bare asyncio (bench/rawws.py) instead of the "
                        "websockets library: a much cheaper client per message")
    p.add_argument("--pin", nargs="?", const="0:1", type=pin_spec, metavar="SERVER:CLIENT",
                   help="run the server on these CPUs (taskset -c) and the load generator on "
                        "those (default 0:1: one core each)")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 16:
        p.error("--clients: 1 to 16")
    if not 1 <= args.conversations <= 2000:
        p.error("--conversations: 1 to 2000")
    if not 0 < args.duration <= 600:
        p.error("--duration: more than 0, at most 600 seconds")
    if args.rate is not None and not 0 < args.rate <= 1000:
        p.error("--rate: more than 0, at most 1000")
    if not 1 <= args.in_flight <= 1000 or args.per_agent < 1 or not 0 <= args.drain <= 120:
        p.error("--in-flight 1-1000, --per-agent >= 1, --drain 0-120")
    if args.url:
        parts = urlsplit(args.url)
        if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS:
            p.error("--url must be http://127.0.0.1:PORT (this tool only talks to this machine)")
        if args.compare or args.postgres or args.workers:
            p.error("--compare, --postgres and --workers start servers themselves; leave out "
                    "--url")
    if args.workers and args.baseline and not args.compare:
        p.error("--workers runs the chat server; leave out --baseline (or use --compare)")
    if args.pid is not None and not args.url:
        p.error("--pid goes with --url")
    return args


async def amain(args: argparse.Namespace) -> int:
    runs = []
    for target in targets(args):
        try:
            result = await run_once(args, target)
        except Exception as exc:  # a server that would not start or set up: say so, plainly
            print(f"{target.name}: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        runs.append(result)
        print(report(result), flush=True)
        print(json.dumps(result, separators=(",", ":")), flush=True)
    if len(runs) > 1:
        print(side_by_side(runs), flush=True)
    return 1 if any(failed(r) for r in runs) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, client_cpus = split_pin(args.pin)
    if client_cpus:  # inherited by the client processes of --clients
        os.sched_setaffinity(0, cpu_list(client_cpus))
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
