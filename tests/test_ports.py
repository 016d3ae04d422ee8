"""The test servers' ports: a port handed to one test process is not handed to another while
its server starts (two pytest-xdist workers, or both passes of .ci/run, run side by side)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .support import claim_port, free_port

ROOT = Path(__file__).resolve().parent.parent


def test_a_port_another_test_process_claimed_is_not_handed_out_again() -> None:
    port = free_port()  # the next port up is as good a stranger as any
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from tests.support import claim_port; "
         f"print(claim_port({port + 1}), flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        assert claim_port(port + 1) is False  # held by the other process
    finally:
        holder.communicate("", timeout=10)
    assert claim_port(port + 1) is True  # its process ended: the claim went with it
