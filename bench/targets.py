"""Every performance target of issue 13, measured in one go on one commit: a markdown table.

    python bench/targets.py                                   # all five, about 15 minutes
    python bench/targets.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    python bench/targets.py --only 1,2 --repeats 1            # a subset, quicker

It runs the other bench scripts as subprocesses, reads the JSON line each prints and sets each
figure against its goal:

1. flat-out messages/s of the chat server against bench/baseline.py (the bare relay on the same
   uvicorn stack), 100 conversations, 10 per agent socket, 8 in flight per side, --repeats runs
   (median of the per-run ratios; PostgreSQL beside it with --postgres); and one agent socket
   carrying 50 conversations flat out, which must keep pace with its 50 visitors;
2. ack p99 at a steady 2,000 msgs/s (100 conversations, 10 msgs/s per side), SQLite (and
   PostgreSQL), median over --repeats runs;
3. server memory per open visitor socket with 10,000 of them (bench/sockets.py);
4. flat-out throughput of `serve --workers 1` and `--workers 2` with the Redis broadcast;
5. start-up to the first /healthz 200, empty and with a million messages (bench/startup.py),
   and the memory growth of a 100,000-message export (bench/export.py).

The load generator is bench/load.py with --raw (bench/rawws.py: WebSocket over bare asyncio) and,
by default, --pin 0:1: the server on CPU 0, the generator on CPU 1, as issue 13 measured. The
--workers runs (4) are not pinned: more workers need the cores. PostgreSQL's and Redis' own
processes are never pinned. Every command run and its JSON lines go to --log (a JSONL file) so the
table can be checked against them. A script missing from a checkout (sockets.py and startup.py
came with the 10,000-socket and start-up work) gives a row saying so instead of a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

Row = tuple[str, str, str, str]  # target, goal, measured, met or missed by how much


def git(*argv: str) -> str:
    try:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


class Runner:
    """Runs bench scripts, logs every command and its JSON lines, keeps the time."""

    def __init__(self, log: Path | None) -> None:
        self.log = log.open("a") if log else None
        self.started = time.monotonic()

    def run(self, script: str, argv: list[str], timeout: float) -> tuple[int, list[dict[str, Any]]]:
        command = [sys.executable, str(BENCH / script), *argv]
        shown = " ".join(["python", f"bench/{script}", *argv])
        print(f"[{time.monotonic() - self.started:6.0f} s] {shown}", file=sys.stderr, flush=True)
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                             if p)}
        try:
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=timeout)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = -1, str(exc.stdout or ""), f"timed out after {timeout:.0f} s"
        found = []
        for line in out.splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        if code not in (0, 1):
            print(f"  exit {code}: {err.strip()[-600:]}", file=sys.stderr, flush=True)
        if self.log:
            self.log.write(json.dumps({"command": shown, "exit": code, "results": found,
                                       "stderr_tail": err[-2000:]}) + "\n")
            self.log.flush()
        return code, found


def by_name(results: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in results if r.get("bench") == name), None)


def broken(r: dict[str, Any]) -> bool:
    """Any guarantee of load.py's checks broken in this run."""
    return bool(r.get("lost") or r.get("misrouted") or r.get("unacked") or r.get("duplicates")
                or r.get("reordered") or r.get("errors") or r.get("unexpected_closes")
                or r.get("send_failures") or r.get("server_alive_at_end") is False)


def verdict(value: float | None, goal: float, higher_is_better: bool, unit: str = "") -> str:
    if value is None:
        return "not measured"
    ok = value >= goal if higher_is_better else value <= goal
    times = f"{value / goal:.2f}x the goal" if goal else ""
    return f"met ({times})" if ok else f"missed by {abs(value - goal):.3g}{unit} ({times})"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_runs(values: list[float], digits: int = 0) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def stolen(server: list[float], relay: list[float]) -> str:
    """The hypervisor's steal in each run (% of a core), which moves latency by itself."""
    return f"; steal {fmt_runs(server)}%, relay runs {fmt_runs(relay)}%"


def guard(results: list[dict[str, Any]]) -> str:
    bad = [r["bench"] for r in results if broken(r)]
    return f" **guarantees broken in: {', '.join(bad)}**" if bad else ""


# -- the targets ----------------------------------------------------------------------------------


def load_args(args: argparse.Namespace, *extra: str) -> list[str]:
    common = ["--duration", str(args.duration), "--raw", "--clients", str(args.clients)]
    if args.pin:
        common += ["--pin", args.pin]
    return [*common, *extra]


def target_1(args: argparse.Namespace, runner: Runner) -> list[Row]:
    runs: list[dict[str, Any]] = []
    rates: dict[str, list[float]] = {"chatserver": [], "chatserver-pg": [], "baseline": []}
    ratios: dict[str, list[float]] = {"chatserver": [], "chatserver-pg": []}
    steal: dict[str, list[float]] = {"chatserver": [], "chatserver-pg": [], "baseline": []}
    for _ in range(args.repeats):
        extra = ["--postgres", args.postgres] if args.postgres else []
        code, found = runner.run("load.py", load_args(
            args, "--compare", "--conversations", "100", "--per-agent", "10", "--in-flight", "8",
            *extra), timeout=600)
        runs += found
        base = by_name(found, "baseline")
        for name in ("chatserver", "chatserver-pg", "baseline"):
            r = by_name(found, name)
            if r:
                rates[name].append(r["relayed_per_s"])
                steal[name].append(r.get("steal_pct") or 0)
                if base and name != "baseline" and base["relayed_per_s"]:
                    ratios[name].append(r["relayed_per_s"] / base["relayed_per_s"])
    rows: list[Row] = []
    for name, label in (("chatserver", "SQLite"), ("chatserver-pg", "PostgreSQL")):
        if name == "chatserver-pg" and not args.postgres:
            continue
        ratio = median(ratios[name])
        measured = (f"{ratio:.2f}x (runs {fmt_runs(ratios[name], 2)}; chat server "
                    f"{fmt_runs(rates[name])} msgs/s, relay {fmt_runs(rates['baseline'])}"
                    f"{stolen(steal[name], steal['baseline'])})"
                    if ratio is not None else "no figure (see the log)")
        rows.append((f"1. flat-out msgs/s against the bare relay, {label}",
                     ">= 0.6x the relay" if name == "chatserver" else "stated beside SQLite",
                     measured + guard([r for r in runs if r["bench"] == name]),
                     verdict(ratio, 0.6, True, "x") if name == "chatserver" else "-"))
    # one agent socket carrying 50 conversations, flat out: it keeps pace with its visitors
    code, found = runner.run("load.py", load_args(
        args, "--conversations", "50", "--per-agent", "50", "--in-flight", "8"), timeout=400)
    r = by_name(found, "chatserver")
    if r and r["sent_visitor"]:
        pace = r["sent_agent"] / r["sent_visitor"]
        measured = (f"agent side sent {pace:.2f}x what the 50 visitors sent ({r['sent_agent']} vs "
                    f"{r['sent_visitor']}); ack p99 agent {r['ack_ms_agent']['p99']} ms, visitor "
                    f"{r['ack_ms_visitor']['p99']} ms; {r['relayed_per_s']} msgs/s" + guard([r]))
        rows.append(("1. one agent socket with 50 conversations, flat out",
                     "not the bottleneck: its side sends >= 0.9x the visitors'",
                     measured, verdict(pace, 0.9, True, "x")))
    else:
        rows.append(("1. one agent socket with 50 conversations", "not the bottleneck",
                     f"no figure (exit {code}; see the log)", "not measured"))
    return rows


def target_2(args: argparse.Namespace, runner: Runner) -> list[Row]:
    p99: dict[str, list[float]] = {"chatserver": [], "chatserver-pg": [], "baseline": []}
    kept: dict[str, list[float]] = {"chatserver": [], "chatserver-pg": [], "baseline": []}
    steal: dict[str, list[float]] = {"chatserver": [], "chatserver-pg": [], "baseline": []}
    runs: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        extra = ["--postgres", args.postgres] if args.postgres else []
        code, found = runner.run("load.py", load_args(
            args, "--compare", "--conversations", "100", "--per-agent", "10", "--rate", "10",
            *extra), timeout=600)
        runs += found
        for name in p99:
            r = by_name(found, name)
            if r and r["ack_ms"]["p99"] is not None:
                p99[name].append(r["ack_ms"]["p99"])
                kept[name].append(r["acked_per_s"])
                steal[name].append(r.get("steal_pct") or 0)
    rows: list[Row] = []
    relay = median(p99["baseline"])
    for name, label, goal in (("chatserver", "SQLite", 3.0), ("chatserver-pg", "PostgreSQL", 10.0)):
        if name == "chatserver-pg" and not args.postgres:
            continue
        value = median(p99[name])
        measured = (f"{value:.1f} ms (runs {fmt_runs(p99[name], 1)}; acked "
                    f"{fmt_runs(kept[name])} msgs/s; relay p99 "
                    f"{relay if relay is None else round(relay, 1)} ms"
                    f"{stolen(steal[name], steal['baseline'])})"
                    if value is not None else "no figure (see the log)")
        rows.append((f"2. ack p99 at 2,000 msgs/s, 100 conversations, {label}",
                     f"<= {goal:g} ms", measured + guard([r for r in runs if r["bench"] == name]),
                     verdict(value, goal, False, " ms")))
    return rows


def target_3(args: argparse.Namespace, runner: Runner) -> list[Row]:
    if not (BENCH / "sockets.py").exists():
        # a checkout from before bench/sockets.py (10,000 visitor sockets, memory per socket)
        return [("3. 10,000 visitor sockets, memory each", "<= 40 KiB per socket",
                 "not measured: bench/sockets.py is not in this checkout (hook)", "not measured")]
    code, found = runner.run("sockets.py", ["--sockets", str(args.sockets), "--agent"],
                             timeout=1500)
    r = by_name(found, "sockets")
    if not r:
        return [("3. 10,000 visitor sockets, memory each", "<= 40 KiB per socket",
                 f"no figure (exit {code}; see the log)", "not measured")]
    per = r.get("rss_kib_per_socket")
    queue = (f"; agent's queue frame {r['queue_bytes_at_full']} bytes with every conversation "
             "open" if "queue_bytes_at_full" in r else "")
    return [(f"3. {r.get('opened')} visitor sockets on one process, memory each",
             "<= 40 KiB per socket (handshakes included)",
             f"RSS {per} KiB per socket (PSS {r.get('pss_kib_per_socket')}, marginal RSS "
             f"{r.get('rss_kib_per_socket_marginal')}){queue}",
             verdict(per, 40.0, False, " KiB"))]


def target_4(args: argparse.Namespace, runner: Runner) -> list[Row]:
    argv = ["--duration", str(args.duration), "--raw", "--clients", str(args.clients),
            "--conversations", "100", "--per-agent", "10", "--in-flight", "8", "--workers", "2"]
    code, found = runner.run("load.py", argv, timeout=600)  # not pinned: workers need the cores
    w1, w2, mem = by_name(found, "redis-w1"), by_name(found, "redis-w2"), by_name(found, "chatserver")
    if not (w1 and w2 and w1["relayed_per_s"]):
        return [("4. --workers 1 and 2 (Redis broadcast)", "throughput grows with the cores",
                 f"no figure (exit {code}; see the log)", "not measured")]
    growth = w2["relayed_per_s"] / w1["relayed_per_s"]
    measured = (f"1 worker {w1['relayed_per_s']} msgs/s, 2 workers {w2['relayed_per_s']} "
                f"({growth:.2f}x); one process on memory:// "
                f"{mem['relayed_per_s'] if mem else '-'}; not pinned, generator on the same "
                "2 cores" + guard([r for r in found if r["bench"] != "baseline"]))
    return [("4. --workers 1 and 2 (Redis broadcast)", "2 workers > 1 worker (grows with cores)",
             measured, verdict(growth, 1.0, True, "x"))]


def target_5(args: argparse.Namespace, runner: Runner) -> list[Row]:
    rows: list[Row] = []
    if (BENCH / "startup.py").exists():
        code, found = runner.run("startup.py", ["--runs", str(args.startup_runs),
                                                "--messages", str(args.messages)], timeout=900)
        r = by_name(found, "startup")
        for key, label, goal in (("empty", "empty", 1.0),
                                 ("seeded", f"{args.messages:,} messages", 3.0)):
            value = r.get(key, {}).get("median_s") if r else None
            measured = (f"{value} s median of {args.startup_runs} (server CPU "
                        f"{r[key].get('cpu_median_s')} s)" if r and value is not None
                        else f"no figure (exit {code}; see the log)")
            rows.append((f"5. start-up to first /healthz 200, {label}", f"< {goal:g} s",
                         measured, verdict(value, goal, False, " s")))
    else:
        # a checkout from before bench/startup.py (start-up, empty and with a million messages)
        for label, goal_text in (("empty", "< 1 s"), ("a million messages", "< 3 s")):
            rows.append((f"5. start-up to first /healthz 200, {label}", goal_text,
                         "not measured: bench/startup.py is not in this checkout (hook)",
                         "not measured"))
    code, found = runner.run("export.py", ["--messages", "100000"], timeout=900)
    export = next((r for r in found if "results" in r), None)
    if export:
        growth = max(x["growth_mb"] for x in export["results"])
        detail = ", ".join(f"{x['format']} +{x['growth_mb']} MB in {x['seconds']} s"
                           for x in export["results"])
        rows.append(("5. 100,000-message export, server memory growth", "< 50 MB",
                     detail, verdict(growth, 50.0, False, " MB")))
    else:
        rows.append(("5. 100,000-message export, server memory growth", "< 50 MB",
                     f"no figure (exit {code}; see the log)", "not measured"))
    return rows


TARGETS: dict[int, Callable[[argparse.Namespace, Runner], list[Row]]] = {
    1: target_1, 2: target_2, 3: target_3, 4: target_4, 5: target_5}


def table(rows: list[Row]) -> str:
    lines = ["| target | goal | measured | met / missed |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in rows]
    return "\n".join(lines)


def only(text: str) -> list[int]:
    try:
        chosen = sorted({int(n) for n in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError("targets by number, e.g. 1,2") from None
    if not set(chosen) <= set(TARGETS):
        raise argparse.ArgumentTypeError("targets are 1 to 5")
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                epilog="See bench/RESULTS.md.")
    p.add_argument("--only", type=only, default=sorted(TARGETS), metavar="N[,N...]",
                   help="run only these targets (1-5)")
    p.add_argument("--postgres", metavar="ADMIN_URL",
                   help="also PostgreSQL for targets 1 and 2 (a database made for each run)")
    p.add_argument("--repeats", type=int, default=3, help="runs of targets 1 and 2 (median)")
    p.add_argument("--duration", type=float, default=10, help="seconds of traffic per run")
    p.add_argument("--clients", type=int, default=1, help="load generator processes")
    p.add_argument("--pin", default="0:1", help="SERVER:CLIENT CPUs for targets 1 and 2 "
                   "(taskset -c); '' to not pin (default %(default)s)")
    p.add_argument("--sockets", type=int, default=10_000, help="visitor sockets for target 3")
    p.add_argument("--messages", type=int, default=1_000_000, help="stored messages, target 5")
    p.add_argument("--startup-runs", type=int, default=3, help="starts per case, target 5")
    p.add_argument("--log", type=Path, default=Path("targets-log.jsonl"),
                   help="JSONL of every command and its results (default %(default)s)")
    args = p.parse_args(argv)
    if not 1 <= args.repeats <= 9:
        p.error("--repeats: 1 to 9")
    dirty = " (uncommitted changes in the tree)" if git("status", "--porcelain",
                                                        "--untracked-files=no") else ""
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    runner = Runner(args.log)
    rows: list[Row] = []
    for n in args.only:
        rows += TARGETS[n](args, runner)
    load_after = os.getloadavg()
    print(f"Issue 13 targets, commit `{git('rev-parse', '--short', 'HEAD')}`{dirty}, started "
          f"{started}, {time.monotonic() - runner.started:.0f} s in all")
    print(f"Machine: {machine()}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after (1 min)")
    print(f"Generator: bench/load.py --raw --clients {args.clients}"
          + (f", server:generator pinned to CPUs {args.pin} (targets 1-2)" if args.pin else "")
          + f"; {args.repeats} runs of {args.duration:g} s for targets 1-2\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
