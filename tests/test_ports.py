"""The test servers' ports: a port handed to one test process is not handed to another while
its server starts (two pytest-xdist workers, or both passes of .ci/run, run side by side)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .support import claim_port

ROOT = Path(__file__).resolve().parent.parent


def test_a_port_another_test_process_claimed_is_not_handed_out_again() -> None:
    """A port free_port handed to another process is refused here until that process ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from tests.support import free_port; "
         "print(free_port(), flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        assert claim_port(port) is False  # the other process holds it
    finally:
        holder.communicate("", timeout=10)
    assert claim_port(port) is True  # its process ended: the claim went with it
