from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from chatserver.consent import bundled_policy
from chatserver.storage import open_store
from chatserver.storage.base import Store

from . import databases
from .mailbox import Mailbox
from .support import Agent, Server, Visitor

_names = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """The PostgreSQL databases made during the run are dropped at its end."""
    yield
    databases.drop_all()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """One fresh PostgreSQL database for this test run (skipped without PostgreSQL, failed on CI)."""
    databases.require_postgres()
    return databases.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database, once for each store: store tests run on both."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'chat.db'}"
    url: str = request.getfixturevalue("postgres_url")
    databases.empty_database(url)
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An empty store with the bundled policy published, on each database in turn; a module
    that needs another kind (a clock of its own, say) defines its own `store`."""
    opened = await open_store(store_url)
    await opened.publish_policy(bundled_policy())
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One running server shared by the tests that do not care about its settings."""
    srv = Server(tmp_path_factory.mktemp("shared") / "data",
                 env={"CHATSERVER_LIMITS_EXEMPT": "127.0.0.1"})
    srv.start()
    srv.add_staff("admin", "admin")
    srv.add_staff("agent", "agent")
    srv.add_staff("agent2", "agent")
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a server of the test's own, with extra environment settings."""
    started: list[Server] = []

    def make(**env: str) -> Server:
        srv = Server(tmp_path / f"data{len(started)}", env=env)
        started.append(srv.start())
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
async def visitor(server: Server) -> AsyncIterator[Visitor]:
    v = Visitor(server)
    await v.start(name=f"Visitor {next(_names)}", email=f"v{next(_names)}@example.com")
    yield v
    await v.aclose()


@pytest.fixture
async def agent(server: Server) -> AsyncIterator[Agent]:
    a = await Agent(server, "agent").login()
    yield a
    await a.aclose()


@pytest.fixture
async def admin(server: Server) -> AsyncIterator[Agent]:
    a = await Agent(server, "admin").login()
    yield a
    await a.aclose()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on a free port that keeps every mail it is given."""
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()


# Modules that run identically whatever database the servers use: they start no server (the
# in-process defences always open SQLite), they run their store on both databases already in the
# README's pass, every server they start is on PostgreSQL already (several processes need it), or
# they test the edge before the store.
# The PostgreSQL pass of .ci/run skips them, saying so, to stay within budget.
SAME_ON_EVERY_DATABASE = frozenset({
    "test_defences_access", "test_defences_audit", "test_defences_auth", "test_defences_consent",
    "test_defences_edge", "test_defences_limits", "test_defences_sessions", "test_docs",
    "test_protocol", "test_quality", "test_settings", "test_mail_store", "test_retention",
    "test_storage_postgres", "test_storage_postgres_compact", "test_storage_postgres_upgrade",
    "test_storage_privacy", "test_storage_search", "test_storage_staff", "test_storage_shared",
    "test_storage_sqlite", "test_ports", "test_processes", "test_failover", "test_shared_presence",
    "test_failover_through_nginx",
    # The HTTP and WebSocket edge, below anything that reads or writes the store: slow and
    # malformed connections, WebSocket framing, origins, forwarded headers, hosts.
    "test_wsprotocol", "test_connections", "test_defences_origins", "test_proxies", "test_edge",
})

# The browser tests drive the pages, which reach the database only through the routes and frames
# that the server-level tests check on each database. The PostgreSQL pass keeps the two whole
# journeys (customer and agent, and a handover between agents) and leaves the rest of the pages
# to the README's pass.
BROWSER_ON_POSTGRES = frozenset({"test_widget_to_dashboard", "test_dashboard_handover"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not databases.SERVER_DATABASE:
        return
    same = pytest.mark.skip(reason="the same on every database; run by the pass without "
                                   "CHATSERVER_TEST_DATABASE")
    page = pytest.mark.skip(reason="a page over routes the server-level tests check on this "
                                   "database; run by the pass without CHATSERVER_TEST_DATABASE")
    for item in items:
        if item.module is None:
            continue
        package, _, module = item.module.__name__.rpartition(".")
        if module in SAME_ON_EVERY_DATABASE:
            item.add_marker(same)
        elif package.endswith("browser") and module not in BROWSER_ON_POSTGRES:
            item.add_marker(page)
