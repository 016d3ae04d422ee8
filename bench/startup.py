"""Start-up time: from spawning `python -m chatserver serve` to its first /healthz 200.

    python bench/startup.py                      # empty, then 1,000,000 messages; 5 runs each
    python bench/startup.py --messages 0 --runs 9
    python bench/startup.py --importtime         # also the slowest imports of one start

Each run spawns the server on a free port and polls GET /healthz every 5 ms until it answers 200;
the time from the spawn to that answer is the figure (the server is stopped after each run, with
SIGTERM). The first run on an empty data folder creates it (database, migrations, secret key,
bundled policy): it is reported apart ("first start"); the median is over the later runs, which
start on the folder as a restart does. With --messages N, a second folder is seeded with N
messages (--per-conversation each; all but --open of the conversations closed) by plain SQLite
inserts into the schema the server made, and the same is measured on it. None of those messages
is in the full-text index (it is kept by the server, in the background), so the first start on
the folder also finds a million messages to index: it indexes them while it serves. As the
reference, the bare interpreter's start (`python -c pass`) and the import of the app's modules
alone are timed too, and the server's CPU time (user + system) at its first 200 is given beside
each wall time: on a crowded machine it is the steadier figure. --bytecode says whether
compiled modules are cached between starts. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.005
TIMEOUT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PYCACHE: dict[str, str | None] = {"prefix": None}  # set: bytecode cached in this folder


def env_for(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    if PYCACHE["prefix"]:  # as an installed package runs: modules compiled once, then cached
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE["prefix"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["CHATSERVER_DATA_DIR"] = str(data)
    return env


def healthz(port: int) -> int | None:
    """The status of one GET /healthz over a plain socket; None while nobody listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
    except OSError:
        return None
    with contextlib.suppress(IndexError, ValueError):
        return int(head.split(b" ", 2)[1])
    return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU: list[float] = []  # the server's CPU seconds at its first 200, one per start


def one_start(data: Path, extra: list[str] | None = None) -> tuple[float, str]:
    """Seconds from spawn to the first /healthz 200, and the server's output."""
    port = free_port()
    argv = [sys.executable, *(extra or []), "-m", "chatserver", "serve", "--port", str(port)]
    log = data.parent / f"serve-{port}.log"
    with open(log, "wb") as out:
        started = time.perf_counter()
        server = subprocess.Popen(argv, cwd=REPO, env=env_for(data), stdout=out,
                                  stderr=subprocess.STDOUT)
        try:
            while time.perf_counter() - started < TIMEOUT_SECONDS:
                if healthz(port) == 200:
                    elapsed = time.perf_counter() - started
                    CPU.append(cpu_seconds(server.pid))
                    break
                if server.poll() is not None:
                    raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
                time.sleep(POLL_SECONDS)
            else:
                raise RuntimeError("no /healthz 200 in time")
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return elapsed, log.read_text(errors="replace")


def seed(database: Path, messages: int, per_conversation: int, open_conversations: int) -> None:
    """N messages by plain inserts, in the server's own schema (made by a first start)."""
    db = sqlite3.connect(database)
    db.execute("PRAGMA journal_mode=WAL")
    conversations = -(-messages // per_conversation)
    stamp = "2026-11-30T12:00:00.000000+00:00"
    with db:
        customers, convs = [], []
        for n in range(conversations):
            customer, conv = uuid.uuid4().hex, uuid.uuid4().hex
            count = min(per_conversation, messages - n * per_conversation)
            status = "queued" if n >= conversations - open_conversations else "closed"
            customers.append((customer, f"Customer {n}", f"c{n}@example.com", "Bench", stamp,
                              stamp, stamp))
            convs.append((conv, customer, status, stamp, None if status != "closed" else stamp,
                          count, stamp))
        db.executemany("INSERT INTO customers (id, name, email, company, created_at, updated_at,"
                       " last_active_at) VALUES (?, ?, ?, ?, ?, ?, ?)", customers)
        db.executemany("INSERT INTO conversations (id, customer_id, status, created_at,"
                       " closed_at, last_seq, last_message_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       convs)

        def rows() -> Any:
            for conv, customer, _, _, _, count, _ in convs:
                for seq in range(1, count + 1):
                    yield (conv, seq, "visitor", customer,
                           f"message {seq} of a start-up benchmark, with some words to index",
                           f"m{seq}", stamp)

        db.executemany("INSERT INTO messages (conversation_id, seq, sender, sender_id, body,"
                       " client_msg_id, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows())
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def timed(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, cwd=REPO, env=env_for(REPO / "nowhere"), check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(data: Path, runs: int) -> dict[str, Any]:
    CPU.clear()
    times = [one_start(data)[0] for _ in range(runs)]
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": [round(t, 3) for t in times],
            "cpu_median_s": round(statistics.median(CPU), 3)}


def importtime(data: Path, top: int = 15) -> list[str]:
    """The slowest imports (cumulative, microseconds) of one start, from -X importtime."""
    _, output = one_start(data, ["-X", "importtime"])
    rows = []
    for line in output.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.removeprefix("import time:").split("|", 2)
            with contextlib.suppress(ValueError):
                rows.append((int(cumulative), name.rstrip()))
    rows.sort(reverse=True)
    return [f"{us / 1000:8.1f} ms {name}" for us, name in rows[:top]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--per-conversation", type=int, default=50)
    parser.add_argument("--open", type=int, default=100, help="conversations left open")
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--bytecode", choices=("cached", "as-is"), default="cached",
                        help="cached (default): the server's modules are compiled once into a "
                        "temporary PYTHONPYCACHEPREFIX, as an installed package's are; as-is: "
                        "the environment decides (PYTHONDONTWRITEBYTECODE=1 compiles every "
                        "module at every start)")
    args = parser.parse_args()
    result: dict[str, Any] = {"load_before": os.getloadavg()[0], "bytecode": args.bytecode}
    pycache = tempfile.TemporaryDirectory()
    if args.bytecode == "cached":
        PYCACHE["prefix"] = pycache.name
    result["python_c_pass_s"] = round(timed([sys.executable, "-c", "pass"], args.runs), 3)
    result["import_app_s"] = round(timed([sys.executable, "-c",
                                          "import chatserver.cli, chatserver.app"], args.runs), 3)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty" / "data"
        empty.parent.mkdir()
        result["first_start_s"] = round(one_start(empty)[0], 3)
        result["empty"] = measure(empty, args.runs)
        if args.importtime:
            result["slowest_imports"] = importtime(empty)
        if args.messages:
            full = Path(tmp) / "full" / "data"
            full.parent.mkdir()
            one_start(full)  # the schema
            started = time.perf_counter()
            seed(full / "chat.db", args.messages, args.per_conversation, args.open)
            result["seed_s"] = round(time.perf_counter() - started, 1)
            result["database_mb"] = round((full / "chat.db").stat().st_size / 2**20, 1)
            result["messages"] = args.messages
            result["seeded"] = measure(full, args.runs)
    result["load_after"] = os.getloadavg()[0]
    print(f"python -c pass: {result['python_c_pass_s']} s; importing the app: "
          f"{result['import_app_s']} s (medians)")
    print(f"first start (creates the data folder): {result['first_start_s']} s")
    for name in ("empty", "seeded"):
        if name in result:
            r = result[name]
            what = (f"{args.messages} messages, {result['database_mb']} MB"
                    if name == "seeded" else "empty")
            print(f"{what}: median {r['median_s']} s (min {r['min_s']}, max {r['max_s']}) "
                  f"over {args.runs} starts; server CPU at its first 200: median "
                  f"{r['cpu_median_s']} s")
    for line in result.get("slowest_imports", []):
        print("  " + line)
    print(f"load {result['load_before']:.2f} -> {result['load_after']:.2f}")
    print(json.dumps({"bench": "startup", **result}))
    pycache.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
