"""The `carryover` command: serve, worker, db upgrade, backfill, deliveries, admin, purge,
workers, export, link, demo."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from middleware.admin.audit import cli_actor, record
from middleware.config import ConfigError, check_listener, config_path, load_config
from middleware.installation import Installation, build_installation
from middleware.integrations.plugin import Plugin
from middleware.integrations.registry import PluginRegistry
from middleware.logs import configure_logging, start_logging
from middleware.process.mapping import MappingError
from middleware.store.queue import status_words
from middleware.store.sealed import installation_key
from middleware.store.tables import migrations_applied, store_revision, upgrade

if TYPE_CHECKING:
    from middleware.customers.retention import Purged

NEEDS_MIGRATIONS = "carryover: the database needs migrations: run `carryover db upgrade`"
WEBHOOK_THREADS = 8  # server threads that open screen-pops never take
SQLITE_PROCESSES = (
    "carryover: several web processes on SQLite: each commit holds its whole process (gevent), "
    "so webhooks wait in turn; use PostgreSQL for several processes"
)
DEMO_NEEDS_CHECKOUT = "carryover demo: the demo runs from a source checkout: make demo"


def _core(args: argparse.Namespace) -> Installation:
    registry = PluginRegistry.from_entry_points()
    config = load_config(config_path(args.config), registry.schemas())
    return build_installation(config, registry)


def cmd_serve(args: argparse.Namespace, core: Installation) -> int:
    """Serve the web app: with an embedded worker in one process, or in several processes."""
    configure_logging(core.config.logging)
    if core.engine.dialect.name == "sqlite":
        upgrade(core.engine)  # once, before any web process starts
    elif not migrations_applied(core.engine):
        print(NEEDS_MIGRATIONS, file=sys.stderr)
        return 2
    settings = _serve_settings(args, core)
    if settings is None:
        return 2
    integrations = ", ".join(sorted(core.registry.instances)) or "none"
    host, port = settings["host"], settings["port"]
    shown = f"[{host}]" if ":" in host else host
    served = f"carryover: serving on http://{shown}:{port} (integrations: {integrations})"
    if settings["processes"] > 1:
        if core.engine.dialect.name == "sqlite":
            print(SQLITE_PROCESSES, file=sys.stderr)
        return _serve_processes(settings, served, config_path(args.config))
    return _serve_one_process(core, settings, served)


def _serve_one_process(core: Installation, settings: dict[str, Any], served: str) -> int:
    """Serve with waitress and the embedded worker, until interrupted."""
    from middleware.process.worker import Worker
    from middleware.web.app import create_app
    from middleware.web.serving import serve

    app = create_app(core=core)
    # Each open screen-pop holds a thread; keep some for webhooks, which must never wait.
    core.live.limit_streams(min(settings["pop_streams"], settings["threads"] - WEBHOOK_THREADS))
    worker = Worker(core) if core.config.worker["enabled"] else None
    core.wakeups.start()  # on PostgreSQL: what other processes store or change wakes this one
    if worker:
        worker.start()
    print(served)
    try:
        serve(app, settings, settings["host"], settings["port"])
    finally:
        if worker:
            worker.stop()
    return 0


def _serve_processes(settings: dict[str, Any], served: str, config: Path | None) -> int:
    """Become gunicorn serving the app in several web processes, none with a worker."""
    from middleware.web.serving import serve_processes

    print(
        f"{served} in {settings['processes']} web processes; they run no worker: "
        "run `carryover worker` beside them"
    )
    serve_processes(settings, settings["host"], settings["port"], config)
    return 0  # not reached: the process is gunicorn now


def _serve_settings(args: argparse.Namespace, core: Installation) -> dict[str, Any] | None:
    """Return the server settings with --host, --port, --threads and --processes over the
    config's; None (after saying why) when they cannot serve."""
    settings = dict(core.config.server)
    for name in ("host", "port", "threads", "processes"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    try:
        check_listener(settings["host"], settings["port"], "--")
    except ConfigError as exc:
        print(f"carryover: {exc}", file=sys.stderr)
        return None
    for name in ("threads", "processes"):
        if settings[name] < 1:
            print(f"carryover: --{name}: must be at least 1 (server.{name})", file=sys.stderr)
            return None
    if settings["processes"] > 1 and installation_key(core.config) is None:
        print(
            "carryover: --processes: several web processes need secret_key set, so that "
            "a link signed by one (a pop's live stream) is accepted by the others",
            file=sys.stderr,
        )
        return None
    return settings


def cmd_worker(args: argparse.Namespace, core: Installation) -> int:
    """Run a worker only, next to web processes that share the database."""
    from middleware.process.worker import Worker

    configure_logging(core.config.logging)

    if not migrations_applied(core.engine):
        print(NEEDS_MIGRATIONS, file=sys.stderr)
        return 2
    worker = Worker(core)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    print(f"carryover: worker {worker.owner} started")
    core.wakeups.start()  # on PostgreSQL, a webhook stored by a web process wakes it at once
    worker.start()
    try:
        while not worker.stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        worker.stop()
    worker.join(timeout=15)  # a lane may be waiting on an upstream's answer
    return 0


def cmd_db_upgrade(args: argparse.Namespace, core: Installation) -> int:
    """Apply the database migrations."""
    before = store_revision(core.engine)
    upgrade(core.engine)
    after = store_revision(core.engine)
    where = core.engine.url.render_as_string()
    if before is None:
        print(f"carryover: database created, at migration {after} ({where})")
    elif before != after:
        print(f"carryover: database upgraded from migration {before} to {after} ({where})")
    else:
        print(f"carryover: database is up to date, at migration {after} ({where})")
    return 0


def _parse_ref(ref: str) -> tuple[str, int]:
    kind, _, number = ref.rpartition(":")
    if kind not in ("", "in", "out") or not number.isdigit():
        raise ValueError(f"{ref!r}: expected a delivery id (12, in:12) or a write id (out:7)")
    return (kind or "in"), int(number)


def cmd_deliveries_list(args: argparse.Namespace, core: Installation) -> int:
    """List recent inbound deliveries and outbound writes."""
    print(f"{'id':<10} {'plugin':<11} {'status':<27} detail")
    for row in core.inbox.listing(args.status, args.limit):
        detail = row.last_error or row.event_keys
        status = status_words(row.status, row.attempts)
        print(f"in:{row.id:<7} {row.plugin:<11} {status:<27} {detail}")
    for row in core.outbox.listing(args.status, args.limit):
        detail = row.last_error or f"note on {row.target_ref} ({row.purpose})"
        status = status_words(row.status, row.attempts)
        print(f"out:{row.id:<6} {row.target:<11} {status:<27} {detail}")
    return 0


def cmd_deliveries_replay(args: argparse.Namespace, core: Installation) -> int:
    """Queue deliveries or writes again: the given ids, or every dead one."""
    if not args.dead and not args.ids:
        print("carryover: give ids to replay, or --dead", file=sys.stderr)
        return 2
    try:
        refs = [_parse_ref(r) for r in args.ids]
    except ValueError as exc:
        print(f"carryover: {exc}", file=sys.stderr)
        return 2
    if args.dead:
        count = core.inbox.replay() + core.outbox.replay()
        dead = "dead deliveries and notes"  # as the deliveries page says
        record(core.engine, cli_actor(), "delivery.replay_dead", dead, f"{count} queued again")
        print(f"carryover: {count} queued again")
        return 0
    queues = {"in": core.inbox, "out": core.outbox}
    wanted = {kind: sorted({n for k, n in refs if k == kind}) for kind in queues}
    found = {kind: queues[kind].existing(ids) if ids else set() for kind, ids in wanted.items()}
    missing = [f"{kind}:{n}" for kind, ids in wanted.items() for n in ids if n not in found[kind]]
    count = sum(queues[kind].replay(sorted(ids)) for kind, ids in found.items() if ids)
    for kind, ids in found.items():
        for number in sorted(ids):
            target = f"{'delivery' if kind == 'in' else 'note'} {number}"  # as the pages say
            record(core.engine, cli_actor(), "delivery.replay", target)
    print(f"carryover: {count} queued again")
    if missing:
        print(f"carryover: no such delivery or write: {', '.join(missing)} (see `carryover "
              "deliveries list`)", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def cmd_link(args: argparse.Namespace, core: Installation) -> int:
    """Print a signed, expiring link to an agent read (for tools that can only open a URL)."""
    from middleware.reads.context_api import signed_path

    if core.secret_box is None:  # no secret_key, and no key of its own (PostgreSQL)
        print("carryover: set secret_key in the configuration to sign links", file=sys.stderr)
        return 2
    secret = core.link_secret
    pairs = [p.partition("=") for p in args.params]
    if any(not sep or not key for key, sep, _ in pairs):
        print("carryover: give parameters as NAME=VALUE, e.g. phone=+14155550142", file=sys.stderr)
        return 2
    path = signed_path(secret, args.path, {k: v for k, _, v in pairs}, args.ttl)
    print(f"{core.config.public_url}{path}")
    return 0


def cmd_admin_create(args: argparse.Namespace, core: Installation) -> int:
    """Create an admin of the web UI (the password is asked for, or read from stdin)."""
    from middleware.admin.accounts import AdminError, create_admin

    if args.username.strip() in _admin_names(core):  # said before the password is asked
        print(f"carryover: username: {args.username.strip()!r} is taken (change its password "
              f"with `carryover admin password --username {args.username.strip()}`)",
              file=sys.stderr)  # fmt: skip
        return 2
    password = _new_password(args)
    if password is None:
        return 2
    try:
        create_admin(core.engine, args.username, password)
    except AdminError as exc:
        print(f"carryover: {exc}", file=sys.stderr)
        return 2
    record(core.engine, cli_actor(), "admin.create", f"admin {args.username.strip()}")
    print(f"carryover: admin {args.username} created; log in at {core.config.public_url}/admin/")
    return 0


def cmd_admin_list(args: argparse.Namespace, core: Installation) -> int:
    """List the admins of the web UI, with their last login and open sessions."""
    from middleware.admin.accounts import Throttle, list_admins

    options = core.config.admin
    accounts = list_admins(core.engine, options["idle_timeout_s"], Throttle.from_options(options))
    if not accounts:
        print("carryover: no admins yet; create one with `carryover admin create --username NAME`")
        return 0
    print(f"{'username':<24} {'created (UTC)':<16}  {'last login (UTC)':<16}  open sessions")
    for account in accounts:
        created, last_login = _minute(account.created_at), _minute(account.last_login_at)
        states = [s for s, on in (("disabled", account.disabled_at), ("locked out", account.locked))
                  if on]  # fmt: skip
        state = f"  ({', '.join(states)})" if states else ""
        print(f"{account.username:<24} {created:<16}  {last_login:<16}  "
              f"{account.open_sessions}{state}")  # fmt: skip
    return 0


def cmd_admin_password(args: argparse.Namespace, core: Installation) -> int:
    """Change an admin's password (asked for, or read from stdin); their sessions end."""
    from middleware.admin.accounts import AdminError, set_password

    if not _admin_exists(core, args.username):
        return 2
    password = _new_password(args)
    if password is None:
        return 2
    try:
        ended = set_password(core.engine, args.username, password)
    except AdminError as exc:
        print(f"carryover: {exc}", file=sys.stderr)
        return 2
    record(core.engine, cli_actor(), "admin.password", f"admin {args.username.strip()}")
    print(f"carryover: password of {args.username} changed; {ended} open session(s) ended")
    return 0


def cmd_admin_remove(args: argparse.Namespace, core: Installation) -> int:
    """Remove an admin of the web UI; their sessions end."""
    from middleware.admin.accounts import AdminError, remove_admin

    try:
        ended = remove_admin(core.engine, args.username)
    except AdminError as exc:
        print(f"carryover: {exc}", file=sys.stderr)
        return 2
    record(core.engine, cli_actor(), "admin.remove", f"admin {args.username.strip()}")
    print(f"carryover: admin {args.username} removed; {ended} open session(s) ended")
    return 0


def cmd_admin_disable(args: argparse.Namespace, core: Installation) -> int:
    """Stop an admin from logging in (the account stays); their sessions end."""
    from middleware.admin.accounts import AdminError, disable_admin, enabled_count

    try:
        ended = disable_admin(core.engine, args.username)
    except AdminError as exc:
        print(f"carryover: {exc}", file=sys.stderr)
        return 2
    record(core.engine, cli_actor(), "admin.disable", f"admin {args.username.strip()}")
    print(f"carryover: admin {args.username.strip()} disabled; {ended} open session(s) ended")
    if not enabled_count(core.engine):
        print("carryover: no admin can log in now; `carryover admin enable --username NAME` "
              "lets one in again")  # fmt: skip
    return 0


def cmd_admin_enable(args: argparse.Namespace, core: Installation) -> int:
    """Let a disabled admin log in again."""
    from middleware.admin.accounts import AdminError, enable_admin

    try:
        changed = enable_admin(core.engine, args.username)
    except AdminError as exc:
        print(f"carryover: {exc}", file=sys.stderr)
        return 2
    if not changed:
        print(f"carryover: admin {args.username.strip()} was not disabled; nothing changed")
        return 0
    record(core.engine, cli_actor(), "admin.enable", f"admin {args.username.strip()}")
    print(f"carryover: admin {args.username.strip()} enabled; they can log in again")
    return 0


def cmd_admin_unlock(args: argparse.Namespace, core: Installation) -> int:
    """Clear an admin's failed logins, so a locked-out name can log in again at once."""
    from middleware.admin.accounts import AdminError, unlock_admin

    try:
        cleared = unlock_admin(core.engine, args.username)
    except AdminError as exc:
        print(f"carryover: {exc}", file=sys.stderr)
        return 2
    record(core.engine, cli_actor(), "admin.unlock", f"admin {args.username.strip()}",
           f"{cleared} failed login(s) forgotten")  # fmt: skip
    print(f"carryover: admin {args.username.strip()} unlocked; {cleared} failed login(s) "
          "forgotten")  # fmt: skip
    return 0


def _admin_names(core: Installation) -> set[str]:
    from middleware.admin.accounts import list_admins

    return {a.username for a in list_admins(core.engine, core.config.admin["idle_timeout_s"])}


def _admin_exists(core: Installation, username: str) -> bool:
    """Tell whether the admin exists, before asking for a password in vain."""
    if username.strip() in _admin_names(core):
        return True
    print(f"carryover: username: no admin {username.strip()!r}", file=sys.stderr)
    return False


def _new_password(args: argparse.Namespace) -> str | None:
    """Read a new password from stdin, or ask for it twice; None when the two differ."""
    import getpass

    from middleware.admin.accounts import MIN_PASSWORD_CHARS

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        asked = f"Password for {args.username} (at least {MIN_PASSWORD_CHARS} characters, hard "
        password = getpass.getpass(asked + "to guess): ")
        again = getpass.getpass("Again: ")
    except EOFError:  # stdin closed: nobody to ask
        print("\ncarryover: no password given (or pass --password-stdin)", file=sys.stderr)
        return None
    if again != password:
        print("carryover: the passwords differ", file=sys.stderr)
        return None
    return password


def _minute(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


def cmd_backfill(args: argparse.Namespace, core: Installation) -> int:
    """Import the history the tools already hold (past tickets, cases, calls), no notes."""
    from middleware.process.backfill import importable, parse_since

    configure_logging(core.config.logging)
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"carryover: --since: {exc}", file=sys.stderr)
        return 2
    available = {plugin.key: plugin for plugin in importable(core)}
    wanted = [k.strip() for k in args.only.split(",") if k.strip()] if args.only else None
    unknown = [k for k in wanted or [] if k not in available]
    if unknown or not available:
        can = ", ".join(available) or "none is configured"
        print(f"carryover: --only: {', '.join(unknown) or 'nothing'} cannot import history "
              f"(integrations that can: {can})", file=sys.stderr)  # fmt: skip
        return 2
    if core.engine.dialect.name == "sqlite":
        upgrade(core.engine)
    elif not migrations_applied(core.engine):
        print(NEEDS_MIGRATIONS, file=sys.stderr)
        return 2
    print(f"carryover: importing history since {since:%Y-%m-%d} (UTC); nothing is written to "
          "any tool")  # fmt: skip
    # The command says itself why an import stopped; the log line would say it twice.
    logging.getLogger("middleware.process.backfill").setLevel(logging.ERROR)
    results = [_backfill_one(core, available[key], since) for key in (wanted or available)]
    return 0 if all(results) else 1


def _backfill_one(core: Installation, plugin: Plugin, since: datetime) -> bool:
    """Import one integration's history with a progress line; True when it finished."""
    from middleware.errors import UpstreamError
    from middleware.process.backfill import DONE, HistoryImport, ImportBusy, ImportState
    from middleware.terminal import ProgressLine, duration

    line = ProgressLine(f"{plugin.short_title or plugin.title:<10}")
    try:
        plan = plugin.history_plan(since)
    except UpstreamError as exc:
        print(f"{plugin.title}: cannot start: {exc}", file=sys.stderr)
        return False
    if plan:
        print(f"{plugin.title}: {plan}")

    def show(state: ImportState) -> None:
        line.show(state.progress, state.records, state.rate, state.eta_s, state.waiting,
                  force=state.waiting is not None)  # fmt: skip

    stopping = threading.Event()
    job = HistoryImport(core, plugin, since, on_progress=show, stopping=stopping)
    try:
        state = job.begin()
    except ImportBusy as exc:
        print(f"{plugin.title}: {exc}", file=sys.stderr)
        return False
    record(
        core.engine,
        cli_actor(),
        "history.start",
        f"integration {plugin.key}",
        f"since {since:%Y-%m-%d}",
    )
    if job.resumed:
        print(f"{plugin.title}: continuing the import begun {state.started_at:%Y-%m-%d %H:%M} "
              f"UTC ({state.records:,} records so far)")  # fmt: skip
    previous = signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        state = job.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        line.show(state.progress, state.records, state.rate, None, force=True)
        line.end()
    calls = f"{state.api_calls:,} API call{'' if state.api_calls == 1 else 's'}"
    print(f"{plugin.title}: {'done in' if state.status == DONE else 'stopped after'} "
          f"{duration(state.elapsed_s)}: {state.imported:,} imported, {state.unchanged:,} "
          f"already imported, {state.skipped:,} skipped, {state.refused:,} refused; "
          f"{calls}")  # fmt: skip
    for reason, count in sorted(state.reasons.items(), key=lambda r: -r[1]):
        print(f"  {reason} ({count:,})")
    if state.last_error:
        print(f"{plugin.title}: {state.last_error}", file=sys.stderr)
    return state.status == DONE


def cmd_purge(args: argparse.Namespace, core: Installation) -> int:
    """Delete raw webhooks and timeline items older than the retention periods (now)."""
    from middleware.customers.retention import count_purgeable, keeps_everything, purge
    from middleware.store.tables import utcnow

    retention = core.config.retention
    print(f"carryover: keeping raw webhooks {_days(retention['deliveries_days'])} after they "
          f"are done or dead, the timeline {_days(retention['timeline_days'])} after its last "
          "change")  # fmt: skip
    if keeps_everything(retention):
        print("carryover: nothing to purge: both periods are 0 (keep for ever)")
        return 0
    if args.dry_run:
        found = count_purgeable(core.engine, retention, utcnow())
        print(f"carryover: would remove {_purged(found)} (nothing was deleted)")
        return 0
    removed = purge(core.engine, retention)
    print(f"carryover: removed {_purged(removed)}")
    return 0


def _days(days: int) -> str:
    return "for ever" if not days else f"{days} day{'' if days == 1 else 's'}"


def _purged(purged: Purged) -> str:
    """Say what a purge removed, e.g. '12 raw webhooks, 3 timeline items, 1 note, 0 customers'."""
    kinds = (("raw webhook", purged.deliveries), ("timeline item", purged.timeline_items),
             ("note", purged.notes), ("customer", purged.customers))  # fmt: skip
    return ", ".join(f"{n:,} {kind}{'' if n == 1 else 's'}" for kind, n in kinds)


def cmd_workers(args: argparse.Namespace, core: Installation) -> int:
    """List the workers of the last day: host, pid, since when, last seen, alive or silent."""
    from middleware.process.liveness import workers_seen
    from middleware.store.tables import reading, utcnow

    with reading(core.engine) as conn:
        seen = workers_seen(conn)
    if not seen:
        print("carryover: no worker has run in the last day; start one with `carryover worker`")
        return 0
    now = utcnow()
    print(f"{'host':<24} {'pid':>7}  {'kind':<8}  {'since (UTC)':<16}  {'last seen (UTC)':<19}  "
          "state")  # fmt: skip
    for worker in seen:
        state = "alive" if worker.alive(now) else "silent"
        print(f"{worker.host:<24} {worker.pid:>7}  {worker.kind:<8}  {_minute(worker.started_at)}"
              f"  {worker.seen_at:%Y-%m-%d %H:%M:%S}  {state}")  # fmt: skip
    alive = sum(worker.alive(now) for worker in seen)
    print(f"carryover: {alive} of {len(seen)} alive (a worker is silent when it missed three "
          "leases of heartbeats: stopped, hung or cut off from the store)")  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace, core: Installation) -> int:
    """Print one customer's data as JSON (the counterpart of erasing them)."""
    import json

    from middleware.customers.edits import live_customer
    from middleware.customers.export import export_customer
    from middleware.store.tables import MAX_ID, reading

    live, data = None, None
    if 0 < args.customer <= MAX_ID:  # a larger number is no customer, not a store error
        with reading(core.engine) as conn:
            live = live_customer(conn, args.customer)
            data = export_customer(conn, live) if live is not None else None
    if data is None:
        print(f"carryover: --customer: there is no customer {args.customer} (find one on the "
              "admin's Customers page)", file=sys.stderr)  # fmt: skip
        return 1
    if live != args.customer:
        print(f"carryover: customer {args.customer} was merged into {live}: exporting {live}",
              file=sys.stderr)  # fmt: skip
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Play the journeys beside simulated upstream tools (needs no account; from a checkout)."""
    demo = _checkout_demo()
    if demo is None:
        print(DEMO_NEEDS_CHECKOUT, file=sys.stderr)
        return 2
    return int(demo.run(Path(args.folder), args.port, args.pace, args.exit, args.history))


def _checkout_demo() -> ModuleType | None:
    """Import devkit.demo from the checkout beside middleware/, or None from a wheel."""
    # The core never imports the development package: a wheel has no devkit/.
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "devkit" / "demo.py").is_file():
        return None
    if importlib.util.find_spec("devkit") is None:  # e.g. `carryover` from .venv/bin
        sys.path.insert(0, str(checkout))
    return importlib.import_module("devkit.demo")


def _version() -> str:
    """Return the installed version (the checkout's, when run from one)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("carryover")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """Describe the command line."""
    parser = argparse.ArgumentParser(prog="carryover", description=__doc__)
    parser.add_argument("--version", action="version", version=f"carryover {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $CARRYOVER_CONFIG, ./config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help=cmd_serve.__doc__)
    serve.add_argument(
        "--host",
        help="address to listen on (default: server.host, 127.0.0.1; "
        "0.0.0.0 for every interface, e.g. behind a proxy on another host)",
    )
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, 8080)")
    serve.add_argument(
        "--threads", type=int,
        help="web server threads (default: server.threads, 40); each open screen-pop holds one, "
        "8 stay for webhooks",
    )  # fmt: skip
    serve.add_argument(
        "--processes", type=int,
        help="web processes (default: server.processes, 1); more than 1 serves under gunicorn, "
        "with no embedded worker",
    )  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", parents=[common], help=cmd_worker.__doc__).set_defaults(
        func=cmd_worker
    )

    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db", required=True)
    db.add_parser("upgrade", parents=[common], help=cmd_db_upgrade.__doc__).set_defaults(
        func=cmd_db_upgrade
    )

    deliveries = sub.add_parser("deliveries", help="inspect and replay deliveries")
    dsub = deliveries.add_subparsers(dest="deliveries", required=True)
    listing = dsub.add_parser("list", parents=[common], help=cmd_deliveries_list.__doc__)
    listing.add_argument("--status", choices=["pending", "attempting", "done", "dead"])
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=cmd_deliveries_list, migrated=True)
    replay = dsub.add_parser("replay", parents=[common], help=cmd_deliveries_replay.__doc__)
    replay.add_argument("ids", nargs="*", help="delivery ids (12 or in:12) or write ids (out:7)")
    replay.add_argument("--dead", action="store_true", help="replay every dead letter")
    replay.set_defaults(func=cmd_deliveries_replay, migrated=True)

    admin = sub.add_parser("admin", help="admins of the web UI")
    asub = admin.add_subparsers(dest="admin", required=True)
    asub.add_parser("list", parents=[common], help=cmd_admin_list.__doc__).set_defaults(
        func=cmd_admin_list, migrated=True
    )
    for name, command in (("create", cmd_admin_create), ("password", cmd_admin_password)):
        setting = asub.add_parser(name, parents=[common], help=command.__doc__)
        setting.add_argument("--username", required=True)
        setting.add_argument("--password-stdin", action="store_true",
                             help="read the password from the first line of stdin")  # fmt: skip
        setting.set_defaults(func=command, migrated=True)
    for name, command in (("remove", cmd_admin_remove), ("disable", cmd_admin_disable),
                          ("enable", cmd_admin_enable), ("unlock", cmd_admin_unlock)):  # fmt: skip
        changing = asub.add_parser(name, parents=[common], help=command.__doc__)
        changing.add_argument("--username", required=True)
        changing.set_defaults(func=command, migrated=True)

    backfill = sub.add_parser("backfill", parents=[common], help=cmd_backfill.__doc__)
    backfill.add_argument("--since", default="90d",
                          help="a date (2026-01-31) or days back (365d); default 90d")  # fmt: skip
    backfill.add_argument("--only", help="integrations to import, e.g. zendesk,salesforce")
    backfill.set_defaults(func=cmd_backfill)

    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--port", type=int, default=8080, help="Carryover's port (default 8080)")
    demo.add_argument(
        "--pace",
        type=float,
        default=1.5,
        help="seconds between the moments of a journey (0: as fast as it goes)",
    )
    demo.add_argument("--folder", default="var/demo", help="the demo's store (made afresh)")
    demo.add_argument("--exit", action="store_true", help="stop after the journeys")
    demo.add_argument(
        "--history",
        action="store_true",
        help="first fill the tools with a year of made-up history and import it (carryover "
        "backfill), so that the journeys' notes name the past",
    )
    demo.set_defaults(func=cmd_demo, standalone=True)

    purge = sub.add_parser("purge", parents=[common], help=cmd_purge.__doc__)
    purge.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    purge.set_defaults(func=cmd_purge, migrated=True)

    sub.add_parser("workers", parents=[common], help=cmd_workers.__doc__).set_defaults(
        func=cmd_workers, migrated=True
    )

    export = sub.add_parser("export", parents=[common], help=cmd_export.__doc__)
    export.add_argument("--customer", type=int, required=True, help="the customer's number")
    export.set_defaults(func=cmd_export, migrated=True)

    link = sub.add_parser("link", parents=[common], help=cmd_link.__doc__)
    link.add_argument("path", help="e.g. /api/v1/context")
    link.add_argument("params", nargs="+", help="NAME=VALUE, e.g. phone=+14155550142")
    link.add_argument("--ttl", type=int, default=3600, help="seconds the link stays valid")
    link.set_defaults(func=cmd_link)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the carryover command."""
    start_logging()  # until the configuration is read: serve, worker and backfill apply it
    args = build_parser().parse_args(argv)
    if getattr(args, "standalone", False):  # builds its own installations
        return int(args.func(args))
    try:
        core = _core(args)
    except (ConfigError, MappingError) as exc:
        print(f"carryover: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if getattr(args, "migrated", False) and not migrations_applied(core.engine):
            print(NEEDS_MIGRATIONS, file=sys.stderr)  # the store's tables are not there yet
            return 2
        return int(args.func(args, core))
    except KeyboardInterrupt:  # Ctrl-C at a prompt, or before a command had its own handler
        print("\ncarryover: interrupted; nothing more was done", file=sys.stderr)
        return 130
    finally:
        core.dispose()


if __name__ == "__main__":
    sys.exit(main())
