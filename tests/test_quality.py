"""The code passes ruff and mypy, and `pip install .` ships the pages and assets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    """ruff finds nothing in the package, tests and bench."""
    paths = [p for p in ("chatserver", "tests", "bench") if (ROOT / p).is_dir()]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", *paths],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    """mypy --strict finds nothing in the package."""
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_wheel_ships_static_templates_migrations_and_policy(tmp_path: Path) -> None:
    """The built wheel holds static/, templates/, the SQL migrations and the bundled policy."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    [wheel] = tmp_path.glob("chatserver-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("chatserver/static/widget.js", "chatserver/templates/widget.html",
                     "chatserver/templates/_base.html",
                     "chatserver/storage/migrations/001_initial.sql",
                     "chatserver/storage/postgres/migrations/001_initial.sql",
                     "chatserver/bundled/privacy-policy-1.01.md"):
        assert expected in names, expected


def test_widget_stays_small() -> None:
    """The embed, the widget's script and its styles stay under 44 KB together, unminified.

    40 KB until the chat outlived the page (issue 11: reconnect on the next page, unread badge,
    read marks, offline wording, transcript by mail); /chat's page layout has its own file.
    42 KB until the satisfaction rating after the end (issue 12) and the blocked notice."""
    sizes = [(ROOT / "static" / name).stat().st_size
             for name in ("widget.js", "widget-app.js", "widget.css")]
    assert sum(sizes) < 44 * 1024, sizes
