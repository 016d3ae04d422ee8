"""The docs name everything the code offers: settings, routes, CLI commands, frames, close codes.

Every expected name is computed from the code (the settings table, the app's route table, the
argument parser, the protocol's field table, the source text), never from a list kept here, so a
new setting, route, command, frame type or close code fails a test until it is documented.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from starlette.routing import Mount, Route, WebSocketRoute

import chatserver
from chatserver import cli, consent, errors, protocol, settings
from chatserver.app import create_app
from chatserver.storage.base import Message

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(chatserver.__file__).resolve().parent
DEPLOY = ROOT / "docs" / "deploy.md"
PROTOCOL = ROOT / "docs" / "protocol.md"

# Close codes the contract names; found in the source as bare integers.
CLOSE_CODE_RE = re.compile(r"\b(1007|1008|1009|1013|4401|4403|4429)\b")
# Any other close code the code passes around: close(N), close_code = N, CLOSE_X = N,
# end_session(hash, N).
CLOSE_USE_RE = re.compile(
    r"(?:\bclose\(\s*|close_code\s*=\s*|\bCLOSE_[A-Z_]+\s*=\s*|end_session\([^,()]+,\s*)(\d{4})\b"
)
SERVER_FRAME_RE = re.compile(r"""["']type["']\s*:\s*["']([a-z_]+)["']""")


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE)): path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _doc(path: Path) -> str:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return path.read_text(encoding="utf-8")


def _import_all() -> None:
    """Import every chatserver module, so every ChatError subclass is defined."""
    for info in pkgutil.walk_packages([str(PACKAGE)], "chatserver."):
        if info.name != "chatserver.__main__":
            importlib.import_module(info.name)


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def _subcommands(p: argparse.ArgumentParser, prefix: str = "chatserver") -> list[str]:
    """Every command path the parser accepts, e.g. 'chatserver user add'."""
    paths = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}"
                paths.append(path)
                paths.extend(_subcommands(sub, path))
    return paths


def _flags(p: argparse.ArgumentParser) -> set[str]:
    """Every long option of the parser and its subparsers, help excepted."""
    flags = set()
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags(sub)
        elif not isinstance(action, argparse._HelpAction):
            flags |= {o for o in action.option_strings if o.startswith("--")}
    return flags


def _server_frame_types() -> set[str]:
    types = set()
    for name, text in _sources().items():
        if name == "openapi.py":  # JSON Schema's "type" keyword describes values, not frames
            continue
        types |= set(SERVER_FRAME_RE.findall(text))
    sample = Message("cv_1", 1, "visitor", "c1", "A", "hi", "m1", "2026-01-01T00:00:00Z")
    types.add(sample.frame()["type"])
    types.add(protocol.error("x", "y")["type"])
    types.add(protocol.ProtocolError("x", "y").frame()["type"])
    return types


def _settings_row(doc: str, env: str) -> str | None:
    match = re.search(rf"^\|\s*`{re.escape(env)}`\s*\|.*$", doc, re.MULTILINE)
    return match.group(0) if match else None


def test_every_setting_has_a_row_in_deploy_doc() -> None:
    """Each Setting.env in SETTINGS has a table row in docs/deploy.md that shows its default."""
    doc = _doc(DEPLOY)
    assert settings.SETTINGS
    missing, wrong_default = [], []
    for spec in settings.SETTINGS.values():
        row = _settings_row(doc, spec.env)
        if row is None:
            missing.append(spec.env)
        elif spec.default and f"`{spec.default}`" not in row:
            wrong_default.append(f"{spec.env} (default `{spec.default}`)")
    assert not missing, f"settings without a row in docs/deploy.md: {missing}"
    assert not wrong_default, f"settings whose row does not show the default: {wrong_default}"


def test_every_route_is_in_deploy_doc(tmp_path: Path) -> None:
    """Every route of the Starlette app (HTTP, WebSocket and mounts) is named in docs/deploy.md."""
    doc = _doc(DEPLOY)
    app = create_app(settings.load({"data_dir": str(tmp_path)}))
    missing = []
    kinds = set()
    for route in app.routes:
        kinds.add(type(route))
        if isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                if f"`{method} {route.path}`" not in doc:
                    missing.append(f"{method} {route.path}")
        elif isinstance(route, WebSocketRoute):
            if f"`{route.path}`" not in doc:
                missing.append(f"WebSocket {route.path}")
        elif isinstance(route, Mount):
            if not re.search(r"`(?:[A-Z]+ )?" + re.escape(route.path) + r"[/`]", doc):
                missing.append(f"mount {route.path}")
        else:
            missing.append(f"unrecognised route type {type(route).__name__}")
    assert {Route, WebSocketRoute, Mount} <= kinds, "the route walk found no routes of some kind"
    assert not missing, f"routes not in docs/deploy.md: {missing}"


def test_every_frame_type_is_in_protocol_doc() -> None:
    """Every accepted client frame type and every built server frame type has a JSON example."""
    doc = _doc(PROTOCOL)
    client = {kind for fields in protocol._FIELDS.values() for kind in fields}
    server = _server_frame_types()
    assert client and server
    missing = sorted(t for t in client | server if f'"type": "{t}"' not in doc)
    assert not missing, f'frame types without a "type": "<name>" example: {missing}'


def test_every_client_frame_field_is_in_protocol_doc() -> None:
    """Every field a client frame may carry, for either audience, is named in docs/protocol.md."""
    doc = _doc(PROTOCOL)
    fields = {f for kinds in protocol._FIELDS.values() for names in kinds.values() for f in names}
    missing = sorted(f for f in fields if f'"{f}"' not in doc and f"`{f}`" not in doc)
    assert not missing, f"client frame fields not in docs/protocol.md: {missing}"


def test_every_close_code_is_in_protocol_doc() -> None:
    """Every WebSocket close code used in chatserver's source or errors.py is in docs/protocol.md."""
    doc = _doc(PROTOCOL)
    _import_all()
    codes: set[int] = set()
    for text in _sources().values():
        codes |= {int(c) for c in CLOSE_CODE_RE.findall(text)}
        codes |= {int(c) for c in CLOSE_USE_RE.findall(text)}
    codes |= {
        cls.close_code for cls in _subclasses(errors.ChatError) if cls.close_code is not None
    }
    assert codes
    missing = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not missing, f"close codes not in docs/protocol.md: {missing}"


def test_every_socket_error_code_is_in_protocol_doc() -> None:
    """Every ProtocolError code and every ChatError subclass's code appears in docs/protocol.md."""
    doc = _doc(PROTOCOL)
    _import_all()
    sources = _sources()
    codes = set(re.findall(r"ProtocolError\(\s*\"([a-z_]+)\"", sources["protocol.py"]))
    codes |= set(re.findall(r"protocol\.error\(\s*\"([a-z_]+)\"", sources["sockets.py"]))
    # code="..." overrides raised on the socket path: sockets, hub, and the consent check.
    socket_path = [sources["sockets.py"], sources["hub.py"],
                   inspect.getsource(consent.require_chat_consent)]
    for text in socket_path:
        codes |= set(re.findall(r"\bcode=\"([a-z_]+)\"", text))
    codes |= {
        cls.code
        for cls in _subclasses(errors.ChatError)
        if inspect.getmodule(cls) is errors
    }
    assert codes
    missing = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not missing, f"error codes not in docs/protocol.md: {missing}"


def test_every_cli_subcommand_is_in_deploy_doc() -> None:
    """Every subcommand path of chatserver.cli.parser() (e.g. chatserver user add) is in deploy.md."""
    doc = _doc(DEPLOY)
    commands = _subcommands(cli.parser())
    assert commands
    missing = [c for c in commands if f"`{c}" not in doc]
    assert not missing, f"CLI commands not in docs/deploy.md: {missing}"


def test_every_cli_flag_is_in_deploy_doc() -> None:
    """Every long option of chatserver.cli.parser() and its subcommands is in docs/deploy.md."""
    doc = _doc(DEPLOY)
    flags = _flags(cli.parser())
    assert flags
    missing = sorted(f for f in flags if f"`{f}" not in doc)
    assert not missing, f"CLI flags not in docs/deploy.md: {missing}"


@pytest.mark.parametrize("doc", [DEPLOY, PROTOCOL], ids=["deploy", "protocol"])
def test_doc_says_the_code_is_what_tests_exercise(doc: Path) -> None:
    """Each doc says that the code, not the doc, is what the tests exercise."""
    text = " ".join(_doc(doc).split())
    assert "The code, not this document, is what the test suite exercises" in text
