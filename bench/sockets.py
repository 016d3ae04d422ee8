"""Memory per open visitor socket: N real visitors, each with its socket open, on one process.

    python bench/sockets.py --sockets 10000               # 4 client processes by default
    python bench/sockets.py --sockets 2000 --clients 2 --agent

It starts its own server (`python -m chatserver serve`, a fresh data folder, limits exempt for
127.0.0.1, the connection cap raised to fit N, the socket idle timeout raised so that sockets
opened first are not closed while the last ones open: the clients send nothing once open).
Every visitor is real: consent to the current policy (POST /api/consent), the pre-chat form
(POST /api/visitor), then /ws/visitor until its `welcome`; each has a conversation of its own,
queued. The visitors are opened by --clients processes of this script, so that the client is not
the bottleneck, each with its open-file limit raised to the hard limit.

The server's RSS (VmRSS) and PSS (/proc/<pid>/smaps_rollup) are read once it is up and idle,
after a warm-up of --warmup visitors (first requests import and cache what every later one
reuses), when half the sockets are open and when all are: KiB per socket is the growth from the
warm-up to N over the sockets opened in between (handshakes, sessions, conversations and every
per-socket object included), and the marginal figure from N/2 to N. With --agent, one agent
dashboard socket is open throughout and the size of the `queue` frame it receives on connecting
is reported (it lists open conversations). One JSON line ends the report. Only 127.0.0.1 is
contacted; every phase has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import (  # noqa: E402  (bench/load.py, beside this file)
    PASSWORD,
    REPO,
    ServerProcess,
    child_env,
    free_port,
    rss_kib,
)

CONCURRENCY = 32  # per client process
RETRIES = 3
RETRIED = [0]
OPEN_SECONDS = 600


def pss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


class NoCookies(DefaultCookiePolicy):
    """The shared client keeps no cookie: each visitor sends its own by header."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


# -- a client process ----------------------------------------------------------------------------


def header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


async def open_visitor(http: httpx.AsyncClient, ws_url: str, version: str, i: int
                       ) -> ClientConnection:
    """One visitor from consent to welcome; tried again (a fresh visitor) after a dropped
    connection: the server closes an idle keep-alive connection as a request may be leaving
    on it, a race that a machine this crowded hits now and then."""
    for attempt in range(RETRIES):
        try:
            return await _open_visitor(http, ws_url, version, i)
        except (httpx.TransportError, OSError):
            if attempt == RETRIES - 1:
                raise
            RETRIED[0] += 1
    raise AssertionError("unreachable")


async def _open_visitor(http: httpx.AsyncClient, ws_url: str, version: str, i: int
                        ) -> ClientConnection:
    response = await http.post("/api/consent", json={"policy_version": version})
    response.raise_for_status()
    cookies = dict(response.cookies.items())
    response = await http.post("/api/visitor", headers={"Cookie": header(cookies)}, json={
        "name": f"Socket Visitor {i}", "email": f"socket{i}@bench.example.com",
        "company": "Bench Ltd"})
    response.raise_for_status()
    cookies.update(response.cookies.items())  # the form may renew the session cookie
    cookie = header(cookies)
    ws = await connect(ws_url + "/ws/visitor", additional_headers={"Cookie": cookie},
                       open_timeout=60, close_timeout=2, ping_interval=None, compression=None,
                       max_size=2**20)
    frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
    if frame.get("type") != "welcome":
        raise RuntimeError(f"expected welcome, got {frame}")
    return ws


async def client(url: str, first: int, count: int) -> None:
    """Open `count` visitors, say `open <n>` on stdout, hold them until stdin says anything,
    then close them. Per-request cookies: one small keep-alive pool serves every visitor."""
    raise_open_files()
    ws_url = "ws" + url.removeprefix("http")
    sockets: list[ClientConnection] = []
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        version = (await http.get("/api/policy")).json()["version"]
        gate = asyncio.Semaphore(CONCURRENCY)
        http.cookies.jar.set_policy(NoCookies())  # each visitor's cookie is its own

        async def one(i: int) -> None:
            async with gate:
                sockets.append(await open_visitor(http, ws_url, version, i))

        await asyncio.gather(*(one(i) for i in range(first, first + count)))
    print(f"open {len(sockets)} {RETRIED[0]}", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    print("closed", flush=True)


# -- the conductor -------------------------------------------------------------------------------


class Clients:
    """--clients processes of this script, each opening its share of visitors."""

    def __init__(self, url: str, first: int, total: int, processes: int) -> None:
        share = [total // processes + (1 if p < total % processes else 0)
                 for p in range(processes)]
        self.procs: list[subprocess.Popen[str]] = []
        self.retried = 0
        start = first
        for n in share:
            if n:
                self.procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--client", url, str(start), str(n)],
                    cwd=REPO, env=child_env({}), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    text=True))
            start += n

    def wait_open(self) -> int:
        opened = 0
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line.startswith("open "):
                raise RuntimeError(f"a client failed (exit {p.poll()})")
            opened += int(line.split()[1])
            self.retried += int(line.split()[2])
        return opened

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.write("close\n")
                p.stdin.flush()
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def socket_fds(pid: int) -> int:
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir()
               if os.readlink(fd).startswith("socket:"))


HEAP = {"on": False}


def sample(pid: int) -> dict[str, int | None]:
    if HEAP["on"]:
        os.kill(pid, signal.SIGUSR1)
        time.sleep(3 + (rss_kib(pid) or 0) / 1024 / 20)  # a snapshot of a big heap takes a while
    return {"rss_kib": rss_kib(pid), "pss_kib": pss_kib(pid)}


async def settle(pid: int, seconds: float = 2.0) -> dict[str, int | None]:
    """Memory once the server has gone quiet (its last frames written, its tasks parked)."""
    await asyncio.sleep(seconds)
    return sample(pid)


async def agent_socket(url: str, env: dict[str, str]) -> tuple[ClientConnection, int]:
    add = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatserver", "user", "add", "socketagent", "--role", "agent",
        "--password-stdin", cwd=REPO, env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    await asyncio.wait_for(add.communicate((PASSWORD + "\n").encode()), 60)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post("/api/staff/login",
                            json={"username": "socketagent", "password": PASSWORD})
        r.raise_for_status()
        cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies.jar)
    ws = await connect("ws" + url.removeprefix("http") + "/ws/agent",
                       additional_headers={"Cookie": cookie}, ping_interval=None,
                       compression=None, max_size=2**26)
    first = await asyncio.wait_for(ws.recv(), 60)
    return ws, len(first)


async def queue_size_now(url: str, env: dict[str, str]) -> int:
    """A second dashboard connecting now: the size of the queue frame it is sent."""
    ws, size = await agent_socket(url, env)
    await ws.close()
    return size


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = child_env({
            "CHATSERVER_DATA_DIR": str(Path(tmp) / "data"),
            "CHATSERVER_LIMITS_EXEMPT": "127.0.0.1",
            "CHATSERVER_MAX_CONNECTIONS": str(args.sockets + args.warmup + 1000),
            "CHATSERVER_SOCKET_IDLE_SECONDS": "3600",
            "CHATSERVER_LOG_LEVEL": "warning",
            "CHATSERVER_PURGE_INTERVAL_SECONDS": "0",
            **dict(kv.split("=", 1) for kv in args.server_env),
        })
        serve = ["serve", "--port", str(port)]
        argv = ([sys.executable, __file__, "--traced-server", args.heap, *serve] if args.heap
                else [sys.executable, "-m", "chatserver", *serve])
        server = ServerProcess(argv, env, Path(tmp) / "server.log")
        url = f"http://127.0.0.1:{port}"
        await server.start(url)
        pid = server.pid
        assert pid is not None
        result: dict[str, Any] = {"sockets": args.sockets, "clients": args.clients,
                                  "server_env": args.server_env,
                                  "warmup": args.warmup, "load_before": os.getloadavg()[0]}
        groups: list[Clients] = []
        try:
            result["idle"] = await settle(pid, 1)
            agent = None
            if args.agent:
                agent, result["queue_bytes_at_start"] = await agent_socket(url, env)
            warm = Clients(url, 0, args.warmup, 1)
            groups.append(warm)
            await asyncio.to_thread(warm.wait_open)
            result["warm"] = await settle(pid)
            half = args.sockets // 2
            started = time.monotonic()
            first_half = Clients(url, args.warmup, half, args.clients)
            groups.append(first_half)
            opened = await asyncio.to_thread(first_half.wait_open)
            result["half"] = await settle(pid)
            second = Clients(url, args.warmup + half, args.sockets - half, args.clients)
            groups.append(second)
            opened += await asyncio.to_thread(second.wait_open)
            result["open_seconds"] = round(time.monotonic() - started, 1)
            result["opened"] = opened
            result["full"] = await settle(pid)
            result["socket_fds"] = socket_fds(pid)
            if args.agent:
                result["queue_bytes_at_full"] = await queue_size_now(url, env)
                assert agent is not None
                await agent.close()
            for kind in ("rss_kib", "pss_kib"):
                full, warm_v, half_v = (result["full"][kind], result["warm"][kind],
                                        result["half"][kind])
                if None not in (full, warm_v, half_v):
                    result[f"{kind}_per_socket"] = round((full - warm_v) / opened, 1)
                    result[f"{kind}_per_socket_marginal"] = round(
                        (full - half_v) / (args.sockets - half), 1)
            result["visitors_retried"] = sum(g.retried for g in groups)
            result["server_alive"] = server.alive()
            result["problems"] = server.problems()[:5]
        finally:
            for group in groups:
                group.close()
            await server.stop()
        result["load_after"] = os.getloadavg()[0]
        return result


def report(r: dict[str, Any]) -> str:
    def mib(sample: dict[str, int | None], kind: str) -> str:
        v = sample.get(kind)
        return "-" if v is None else f"{v / 1024:.1f}"

    lines = [f"{r['opened']} visitor sockets open in {r['open_seconds']} s "
             f"({r['clients']} client processes, {r['warmup']} warm-up), "
             f"{r['socket_fds']} server socket fds"]
    for name in ("idle", "warm", "half", "full"):
        lines.append(f"  {name:5} RSS {mib(r[name], 'rss_kib')} MiB, "
                     f"PSS {mib(r[name], 'pss_kib')} MiB")
    lines.append(f"  per socket: RSS {r.get('rss_kib_per_socket')} KiB "
                 f"(marginal {r.get('rss_kib_per_socket_marginal')}), "
                 f"PSS {r.get('pss_kib_per_socket')} KiB "
                 f"(marginal {r.get('pss_kib_per_socket_marginal')})")
    if "queue_bytes_at_full" in r:
        lines.append(f"  queue frame on connect: {r['queue_bytes_at_start']} bytes empty, "
                     f"{r['queue_bytes_at_full']} bytes with {r['opened'] + r['warmup']} open "
                     "conversations")
    lines.append(f"  visitors tried again after a dropped connection: {r['visitors_retried']}")
    lines.append(f"  load {r['load_before']:.2f} -> {r['load_after']:.2f}; server alive "
                 f"{r['server_alive']}; log problems {r['problems'] or 'none'}")
    return "\n".join(lines)


def traced_server(folder: str, argv: list[str]) -> None:
    """`chatserver serve` under tracemalloc: each SIGUSR1 writes a heap snapshot to `folder`.
    Tracing starts at the first (it slows imports tenfold): allocations older than that are
    not in any snapshot, which a comparison of two later ones does not need."""
    import runpy
    import signal
    import tracemalloc

    taken = [0]

    def snapshot(*_: Any) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(8)
        taken[0] += 1
        tracemalloc.take_snapshot().dump(f"{folder}/heap-{taken[0]}.snapshot")

    signal.signal(signal.SIGUSR1, snapshot)
    sys.argv = ["chatserver", *argv]
    runpy.run_module("chatserver", run_name="__main__")


def heap_report(folder: str, before: int, after: int, sockets: int) -> str:
    """The allocation sites that grew most between two snapshots, per socket."""
    import tracemalloc

    old = tracemalloc.Snapshot.load(f"{folder}/heap-{before}.snapshot")
    new = tracemalloc.Snapshot.load(f"{folder}/heap-{after}.snapshot")
    lines = []
    for group in ("lineno", "traceback"):
        stats = new.compare_to(old, group)[:15 if group == "lineno" else 6]
        total = sum(s.size_diff for s in new.compare_to(old, "filename"))
        lines.append(f"heap growth {total / 1024 / sockets:.1f} KiB per socket; top by {group}:")
        for stat in stats:
            where = stat.traceback.format(limit=1 if group == "lineno" else 8)
            lines.append(f"  {stat.size_diff / sockets:8.0f} B/socket "
                         f"{stat.count_diff / sockets:6.1f} blocks/socket  "
                         + " <- ".join(w.strip() for w in where if not w.startswith("    ")))
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        asyncio.run(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return 0
    if len(sys.argv) > 3 and sys.argv[1] == "--traced-server":
        traced_server(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--server-env", metavar="NAME=VALUE", action="append", default=[],
                        help="an environment variable for the server (repeatable), e.g. "
                        "MALLOC_ARENA_MAX=2")
    parser.add_argument("--heap", metavar="DIR",
                        help="run the server under tracemalloc, snapshot it into DIR at each "
                        "sample and print the allocation sites that grew (slows it down)")
    parser.add_argument("--agent", action="store_true",
                        help="keep an agent dashboard open; report the queue frame's size")
    args = parser.parse_args()
    raise_open_files()
    HEAP["on"] = bool(args.heap)
    r = asyncio.run(asyncio.wait_for(run(args), OPEN_SECONDS * 2))
    print(report(r))
    if args.heap:  # snapshots: 1 idle, 2 warm, 3 half, 4 full
        print(heap_report(args.heap, 2, 4, r["opened"]))
    print(json.dumps({"bench": "sockets", **r}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
