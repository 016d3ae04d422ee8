"""The `chatserver` command: parse, call, print. Every subcommand works on the configured store."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from . import __version__, audit, logformat, passwords, privacy
from .consent import Policies
from .errors import ChatError, DatabaseError
from .settings import SETTINGS, Settings, SettingsError, load, sqlite_file
from .staff_names import DEFAULT_DISPLAY_NAME, check_display_name, check_sign_in_name
from .storage import POSTGRES_SCHEMES, Store, describe, open_store, sqlite_path, transfer

WS_MAX_BYTES = 64 * 1024


def _settings(args: argparse.Namespace, *, create: bool = False) -> Settings:
    """Settings for a command. Only `serve` creates a data folder; every other command needs the
    server's, and says on stderr which one it uses (stdout stays clean for `export`'s JSON)."""
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    settings = load(overrides, create=create)
    if not create:
        print(f"chatserver: using {where(settings)}", file=sys.stderr, flush=True)
    return settings


def where(settings: Settings) -> str:
    """The data folder and database in words, without a password in the database URL."""
    database = sqlite_file(settings.database_url)
    if database is not None:
        if database.parent == settings.data_dir:
            return f"data folder {settings.data_dir} (database {database.name})"
        return f"database {database}"
    parts = urlsplit(settings.database_url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    # The data folder still holds the secret key and the audit anchor, which the database needs.
    return f"database {urlunsplit(parts)} (secret key in data folder {settings.data_dir})"


async def _open(settings: Settings) -> Store:
    return await open_store(settings.database_url, pool_size=settings.database_pool_size)


async def _check_database(settings: Settings) -> None:
    """Open (and migrate) the database once before serving, so a database that cannot be used
    stops the start with one line instead of a failed startup's traceback."""
    await (await _open(settings)).close()


async def _with_store(settings: Settings, job: Callable[[Store], Awaitable[int]]) -> int:
    store = await _open(settings)
    try:
        await audit.attach(store, settings)
        await Policies(store).ensure_default()
        return await job(store)
    finally:
        await audit.detach(store)
        await store.close()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import serving, workers
    from .app import allowed_hosts, create_app

    settings = _settings(args, create=True)
    refused = workers.refusal(args.workers, settings.broadcast_url)
    if refused:
        print(f"chatserver: {refused}", file=sys.stderr, flush=True)
        return 2
    host = "localhost" if args.host in {"127.0.0.1", "::1", "0.0.0.0", "::"} else args.host  # noqa: S104
    settings.extra["public_url"] = f"http://{host}:{args.port}"
    asyncio.run(_check_database(settings))
    logformat.configure(settings.log_level, settings.log_format)
    capacity = serving.Capacity.fit(settings.max_connections, serving.open_file_limit())
    if capacity.max_connections < settings.max_connections:
        print(f"At most {capacity.max_connections} connections: the open-file limit leaves no "
              "room for CHATSERVER_MAX_CONNECTIONS", flush=True)
    database = sqlite_file(settings.database_url)
    first = ", created now" if database is not None and not database.exists() else ""
    print(f"chatserver {__version__}: using {where(settings)}{first}; "
          f"open {settings.extra['public_url']}/", flush=True)
    print(f"Answering for hosts: {allowed_hosts(settings).describe()} "
          "(CHATSERVER_ALLOWED_HOSTS)", flush=True)
    if os.environ.get("FORWARDED_ALLOW_IPS") and not settings.trusted_proxies:
        print("FORWARDED_ALLOW_IPS is not read: name your proxies in CHATSERVER_TRUSTED_PROXIES",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        ws_max_size=WS_MAX_BYTES,
        ws_per_message_deflate=False,
        access_log=False,
        server_header=False,
        log_config=None,
        # uvicorn logs each socket handshake with the client's IP at info level: only its
        # warnings and errors reach our log, unless debugging.
        log_level="debug" if settings.log_level == "debug" else "warning",
        timeout_keep_alive=settings.keepalive_seconds,  # type: ignore[arg-type]  # a float works
        backlog=capacity.backlog,
        # Forwarded headers are read by the app, from CHATSERVER_TRUSTED_PROXIES only
        # (proxies.py), never from uvicorn's FORWARDED_ALLOW_IPS with its loopback default.
        proxy_headers=False,
    )
    # Deadlines and caps on every connection (see serving.py); trusted proxies are not capped
    # per address.
    gate = serving.gate_for(settings, capacity)
    config.http, config.ws = serving.protocols(gate, serving.Deadlines(
        settings.header_timeout_seconds, settings.body_timeout_seconds))
    if args.workers == 1:
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else workers.STARTUP_FAILURE
    folder = workers.metrics_folder()
    sock = config.bind_socket()

    def serve(index: int, sock: socket.socket) -> None:
        settings.extra["worker"] = index
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        if not server.started:
            raise SystemExit(workers.STARTUP_FAILURE)

    return workers.run(args.workers, serve, sock, folder)


NO_TERMINAL = ("No terminal to ask for the password: pipe it in with --password-stdin, or add "
               "staff from the admin console's Staff tab.")


def _read_password(from_stdin: bool) -> str | None:
    """The new password, from stdin or asked twice on the terminal; None when there is no
    terminal to ask on (cron, CI, a pipe), where getpass would read stdin or fail."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        return None
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Again: ")
    except EOFError:
        return None
    if again != first:
        raise SystemExit("The two passwords differ.")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not 1 <= len(name) <= 100 or any(ch.isspace() for ch in name):
        print("A name is 1-100 characters without spaces.", file=sys.stderr)
        return 2
    settings = _settings(args)  # before the prompt: a wrong folder fails before any typing
    password = _read_password(args.password_stdin)
    if password is None:
        print(NO_TERMINAL, file=sys.stderr)
        return 2
    reason = passwords.check_policy(password, name)
    if reason:
        print(reason, file=sys.stderr)
        return 2

    async def job(store: Store) -> int:
        everyone = await store.list_staff()
        check_sign_in_name(name, everyone)
        display_name = check_display_name(args.display_name, name, everyone)
        staff = await store.add_staff(name, args.role, passwords.hash_password(password),
                                      display_name)
        await audit.record(store, actor="cli", action="staff.create", target=f"staff:{staff.id}",
                           detail={"role": staff.role})
        print(f"added {staff.name} ({staff.role}), shown to customers as {staff.display_name!r}")
        return 0

    return asyncio.run(_with_store(settings, job))


def cmd_user_list(args: argparse.Namespace) -> int:
    async def job(store: Store) -> int:
        for staff in await store.list_staff():
            print(f"{staff.name}\t{staff.role}\t{staff.state}")
        return 0

    return asyncio.run(_with_store(_settings(args), job))


def cmd_policy_publish(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        print(f"Cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2

    async def job(store: Store) -> int:
        policy = await Policies(store).publish(
            text, version=args.version, summary=args.summary,
            effective_date=args.effective_date or date.today().isoformat(),
        )
        await audit.record(store, actor="cli", action="policy.publish",
                           target=f"policy:{policy.version}", detail={"sha256": policy.sha256})
        print(f"published policy {policy.version} ({policy.sha256[:12]}); it is now current")
        return 0

    return asyncio.run(_with_store(_settings(args), job))


def cmd_purge(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def job(store: Store) -> int:
        result = await privacy.purge(store, None, settings, dry_run=args.dry_run, actor="cli")
        counts = result["counts"]
        verb = "would wipe" if args.dry_run else "wiped"
        print(f"{verb}: {counts['accounts']} accounts ({counts['messages']} messages), "
              f"{counts['sessions_without_details']} sessions without details, "
              f"{counts['closed_conversations']} closed conversations, "
              f"{counts['access_events']} access records, "
              f"{counts['staff_sign_ins']} staff sign-in records, "
              f"{counts['audit_entries']} audit entries")
        return 0

    return asyncio.run(_with_store(settings, job))


def cmd_export(args: argparse.Namespace) -> int:
    async def job(store: Store) -> int:
        customers = await store.customers_by_email(args.email)
        if not customers:
            print("no customer has that email", file=sys.stderr)
            return 1
        documents = [await privacy.export_document(store, c.id) for c in customers]
        for customer in customers:
            await audit.record(store, actor="cli", action="customer.export",
                               target=f"customer:{customer.id}")
        # One customer: the same document as GET /api/me/export; several: a list of them.
        out = documents[0] if len(documents) == 1 else documents
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0

    return asyncio.run(_with_store(_settings(args), job))


def cmd_erase(args: argparse.Namespace) -> int:
    async def job(store: Store) -> int:
        customers = await store.customers_by_email(args.email)
        if not customers:
            print("no customer has that email", file=sys.stderr)
            return 1
        for customer in customers:
            result = await privacy.erase(store, None, customer.id, reason="cli", actor="cli")
            print(f"erased {result['id']}: {result['conversations']} conversations, "
                  f"{result['messages']} messages, {result['sessions']} sessions")
        return 0

    return asyncio.run(_with_store(_settings(args), job))


def cmd_audit_verify(args: argparse.Namespace) -> int:
    async def job(store: Store) -> int:
        report = await audit.check(store)
        span = f", ids {report.first_id} to {report.last_id}" if report.entries else ""
        if report.intact:
            print(f"audit log intact: {report.entries} entries{span}")
        else:
            where = (f" at entry {report.first_broken_id}"
                     if report.first_broken_id is not None else "")
            print(f"audit log broken{where}: {report.problem}")
        if report.anchor is not None:
            print(f"anchor: entry {report.anchor.seq}, hash {report.anchor.hash[:16]}")
        print("checked:")
        for line in report.checked or ["nothing could be checked"]:
            print(f"  - {line}")
        print("cannot prove:")
        for line in report.cannot_prove:
            print(f"  - {line}")
        return 0 if report.intact else 1

    return asyncio.run(_with_store(_settings(args), job))


def _sqlite_source(settings: Settings) -> Path:
    if not settings.database_url.startswith("sqlite:"):
        raise ChatError("The configured database (CHATSERVER_DATABASE_URL) is not SQLite; this "
                        "command works on the SQLite database.", code="not_sqlite")
    return sqlite_path(settings.database_url)


def cmd_migrate_to(args: argparse.Namespace) -> int:
    settings = _settings(args)
    source = _sqlite_source(settings)
    target = args.url
    if urlparse(target).scheme not in POSTGRES_SCHEMES:
        print("migrate-to: give a postgresql://user@host:port/database URL", file=sys.stderr)
        return 2

    async def job() -> transfer.Summary:
        await _check_database(settings)  # the source at the current schema version
        return await transfer.copy_sqlite_to_postgres(source, target)

    try:
        summary = asyncio.run(job())
    except ChatError as exc:  # a DatabaseError here is about the target, not the setting
        print(f"migrate-to {describe(target)}: {exc.message}", file=sys.stderr)
        return 2
    print(f"copied {source} to {describe(target)}:")
    for table, count in summary.counts.items():
        print(f"  {table}: {count} rows")
    print(f"audit log intact: {summary.audit_entries} entries, last hash "
          f"{summary.audit_last_hash[:16] or '-'}")
    print(f"next: stop the server, set CHATSERVER_DATABASE_URL={describe(target)} "
          "(with its password, if any) and start it again")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from .storage.sqlite.backup import BackupFailed, backup

    settings = _settings(args)
    if not settings.database_url.startswith("sqlite:"):
        print("backup copies the SQLite database; for PostgreSQL use pg_dump", file=sys.stderr)
        return 2
    source = Path(settings.database_url[len("sqlite://"):])
    if str(source).startswith("//"):
        source = Path(str(source)[1:])
    target = Path(args.file).expanduser().resolve()
    if target.exists():
        print(f"backup: {target} exists; not overwritten", file=sys.stderr)
        return 2
    try:
        head = backup(source, target)
    except (BackupFailed, sqlite3.Error, OSError) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    anchor = target.with_name(target.name + ".anchor")
    if head is not None:
        seq, size, digest = head
        anchor.write_text(audit.anchor_text(settings, seq, digest), encoding="utf-8")
        print(f"backed up {source} to {target} ({size} bytes, integrity ok); the audit "
              f"anchor for this copy is {anchor}")
    else:
        print(f"backed up {source} to {target} (integrity ok; the audit log is empty)")
    return 0


def parser() -> argparse.ArgumentParser:
    env_help = "\n".join(f"  {s.env}: {s.help} (default: {s.default or 'see text'})"
                         for s in SETTINGS.values())
    p = argparse.ArgumentParser(
        prog="chatserver", description="A privacy-first live chat server.",
        epilog="Settings come from flags, then these environment variables:\n" + env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("--data-dir", help="overrides CHATSERVER_DATA_DIR")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="processes serving the port (more than 1 needs a shared "
                       "CHATSERVER_BROADCAST_URL: redis:// or postgresql://)")
    serve.set_defaults(func=cmd_serve)

    user = sub.add_parser("user", help="staff accounts").add_subparsers(dest="action",
                                                                         required=True)
    add = user.add_parser("add", help="create an agent or admin")
    add.add_argument("name")
    add.add_argument("--role", choices=["agent", "admin"], required=True)
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input instead of a prompt")
    add.add_argument("--display-name", default=DEFAULT_DISPLAY_NAME,
                     help="the name customers see (never the sign-in name; default: "
                     f"{DEFAULT_DISPLAY_NAME!r})")
    add.set_defaults(func=cmd_user_add)
    user.add_parser("list", help="name, role and state of every staff account").set_defaults(
        func=cmd_user_list)

    policy = sub.add_parser("policy", help="privacy-policy versions").add_subparsers(
        dest="action", required=True)
    publish = policy.add_parser("publish", help="publish a new version (Markdown file)")
    publish.add_argument("file")
    publish.add_argument("--version", required=True)
    publish.add_argument("--summary", required=True, help="short summary of the changes")
    publish.add_argument("--effective-date", help="YYYY-MM-DD (default: today)")
    publish.set_defaults(func=cmd_policy_publish)

    purge = sub.add_parser("purge", help="apply the retention rules now; prints counts only")
    purge.add_argument("--dry-run", action="store_true", help="count, change nothing")
    purge.set_defaults(func=cmd_purge)
    export = sub.add_parser("export", help="print a customer's data as JSON")
    export.add_argument("--email", required=True)
    export.set_defaults(func=cmd_export)
    erase = sub.add_parser("erase", help="terminate a customer's account and wipe its data now")
    erase.add_argument("--email", required=True)
    erase.set_defaults(func=cmd_erase)

    backup_cmd = sub.add_parser("backup", help="a consistent copy of the SQLite database, "
                                "taken while the server runs")
    backup_cmd.add_argument("file", help="where the copy goes (FILE.anchor gets its audit anchor)")
    backup_cmd.set_defaults(func=cmd_backup)

    audit_cmd = sub.add_parser("audit", help="the audit log").add_subparsers(dest="action",
                                                                             required=True)
    audit_cmd.add_parser("verify", help="check the hash chain").set_defaults(
        func=cmd_audit_verify)

    migrate = sub.add_parser(
        "migrate-to", help="copy everything from the SQLite database to an empty PostgreSQL one")
    migrate.add_argument("url", help="postgresql://user@host:port/database (must be empty)")
    migrate.set_defaults(func=cmd_migrate_to)
    return p


def main(argv: list[str] | None = None) -> int:
    # The database holds personal data: files we create are readable by our user only.
    os.umask(0o077)
    args = parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except DatabaseError as exc:
        print(f"CHATSERVER_DATABASE_URL: {exc.message}", file=sys.stderr)
        return 2
    except (SettingsError, ChatError) as exc:
        print(getattr(exc, "message", str(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
