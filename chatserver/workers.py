"""`chatserver serve --workers N`: one listening socket, bound once here, served by N processes.

uvicorn's own multi-process supervisor starts its workers with multiprocessing's "spawn", which
must pickle the configuration: our HTTP and WebSocket protocol classes (the connection gate and
deadlines of serving.py) are built per server and cannot be. So the parent binds the socket,
builds the configuration once and forks: every child inherits both and runs an ordinary uvicorn
server on the shared socket, and the kernel hands each new connection to one of them.

The parent only watches. A child that exits while the parent is not stopping is replaced (after
a pause that grows while children keep dying young); a child that failed its start (uvicorn's
exit code 3: the database or the broadcast did not answer) stops the whole server instead, since
its replacements would fail the same way. SIGTERM or SIGINT to the parent stops every child
gracefully (uvicorn's own shutdown: open sockets are closed, requests finish), then the parent.
A child whose parent vanished (killed with SIGKILL) stops itself within a second.

Each process has its own connection caps (CHATSERVER_MAX_CONNECTIONS applies per process) and
its own memory; what must be shared across them is shared through the database (periodic jobs,
consent records: jobs.py, Store.start_visitor_session) and the broadcast (which is why a
process-local `memory://` broadcast is refused with more than one worker).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from . import metrics

STARTUP_FAILURE = 3  # uvicorn's exit code when the application's startup failed
SHARED_SCHEMES = {"redis", "rediss", "postgresql", "postgres"}
STOP_GRACE_SECONDS = 30.0


def refusal(workers: int, broadcast_url: str) -> str | None:
    """Why these settings cannot run `workers` processes; None when they can."""
    if workers < 1:
        return "--workers must be at least 1"
    scheme = urlsplit(broadcast_url).scheme.lower()
    if workers > 1 and scheme not in SHARED_SCHEMES:
        return (f"--workers {workers} needs a broadcast shared by processes: set "
                "CHATSERVER_BROADCAST_URL to redis://host:port/db or postgresql://... "
                f"({scheme or broadcast_url}:// reaches only its own process, so a message "
                "sent to one worker would never reach a chat open on another)")
    return None


def metrics_folder() -> str:
    """A fresh folder for prometheus_client's per-process files, named in the environment
    before any worker imports it (a folder left from an earlier run would add old counts)."""
    folder = tempfile.mkdtemp(prefix="chatserver-metrics-")
    os.environ[metrics.MULTIPROC_ENV] = folder
    return folder


def _watch_parent(parent: int) -> None:
    """In a child: stop when the parent is gone (its replacement parent is init)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Supervisor:
    def __init__(self, workers: int, serve: Callable[[int, socket.socket], None],
                 sock: socket.socket) -> None:
        self.workers = workers
        self.serve = serve  # runs worker `index` on the socket; returns when it stops
        self.sock = sock
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
        self.stopping = False
        self.failed = False
        self.deaths: list[float] = []

    def _fork(self, index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _watch_parent(parent)
                self.serve(index, self.sock)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - the traceback goes to stderr, the exit code up
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = (index, time.monotonic())

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.workers):
            self._fork(index)
        print(f"chatserver: {self.workers} worker processes "
              f"({', '.join(str(p) for p in self.children)})", flush=True)
        while not self.stopping:
            time.sleep(0.2)
            self._reap()
        return self._shutdown()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index, started = self.children.pop(pid)
            metrics.process_died(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if code == STARTUP_FAILURE:
                print(f"chatserver: worker {index} could not start (see above); stopping",
                      file=sys.stderr, flush=True)
                self.failed = True
                self.stopping = True
                return
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < 60] + [now]
            pause = min(10.0, 0.5 * 2 ** max(0, len(self.deaths) - 3))
            print(f"chatserver: worker {index} (pid {pid}) exited ({_how(code)}) after "
                  f"{now - started:.0f} s; starting another", file=sys.stderr, flush=True)
            time.sleep(pause)
            self._fork(index)

    def _shutdown(self) -> int:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)
                continue
            self.children.pop(pid, None)
        for pid in list(self.children):  # past the grace period
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        return STARTUP_FAILURE if self.failed else 0


def _how(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def run(workers: int, serve: Callable[[int, socket.socket], None], sock: socket.socket,
        folder: str) -> int:
    try:
        return Supervisor(workers, serve, sock).run()
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
