"""A `chatserver serve` for a benchmark: fresh data folder, one staff account, a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

PASSWORD = "correct horse battery staple"


@dataclass
class Running:
    url: str
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def chatserver(data: Path, *, staff: str, role: str, **settings: str) -> Iterator[Running]:
    """Serve from `data` (quiet logs, no periodic purge) with `staff` able to sign in."""
    env = {**os.environ, "CHATSERVER_DATA_DIR": str(data), "CHATSERVER_LOG_LEVEL": "warning",
           "CHATSERVER_PURGE_INTERVAL_SECONDS": "0", **settings}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "chatserver", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        # Only `serve` creates the data folder's database; the account goes in after.
        subprocess.run([sys.executable, "-m", "chatserver", "user", "add", staff, "--role", role,
                        "--password-stdin"], input=PASSWORD + "\n", text=True, env=env,
                       check=True, capture_output=True)
        yield Running(url, server.pid)
    finally:
        server.terminate()
        server.wait(10)
