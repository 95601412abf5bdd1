"""The WSGI entry for gunicorn: `middleware.web.wsgi:app`, built from $CARRYOVER_CONFIG.

`carryover serve --processes N` runs it; operators who run gunicorn themselves use

    CARRYOVER_CONFIG=/etc/carryover/config.yaml carryover db upgrade
    CARRYOVER_CONFIG=/etc/carryover/config.yaml gunicorn --worker-class gevent \\
        --workers 4 --worker-connections 3500 --bind 127.0.0.1:8080 middleware.web.wsgi:app

with gevent workers, so that an open screen-pop costs a greenlet and not a thread, and
without --preload: gevent must patch the standard library in each web process before
psycopg is imported, or psycopg's waits block every other request of the process.
Its web processes run no worker: run `carryover worker` beside them.

The app is built on first access (PEP 562), in the web process that serves it, so importing
this module has no side effect.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from flask import Flask

from middleware.config import config_path, load_config
from middleware.installation import Installation, build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.logs import configure_logging
from middleware.store.tables import migrations_applied

NEEDS_MIGRATIONS = "the database needs migrations: run `carryover db upgrade` first"


def build_web_app() -> Flask:
    """Build the web app of one web process, without a worker; refuse an unmigrated store."""
    from middleware.web.app import create_app

    registry = PluginRegistry.from_entry_points()
    core = build_installation(load_config(config_path(None), registry.schemas()), registry)
    configure_logging(core.config.logging)
    if not migrations_applied(core.engine):
        raise RuntimeError(NEEDS_MIGRATIONS)
    core.live.limit_streams(core.config.server["pop_streams"])
    end_streams_on_sigterm(core)
    core.wakeups.start()  # on PostgreSQL: the workers' changes reach this process's pops
    return create_app(core=core)


def end_streams_on_sigterm(core: Installation) -> None:
    """Make SIGTERM also end the open pop streams, then let the server's own handler run.

    gunicorn's worker stops accepting on SIGTERM and waits for open requests to finish; a pop
    stream would otherwise stay open for pop.stream_s and be cut at the graceful timeout.
    Ended, each stream's page reconnects at once, to a process that is still serving.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # no server of ours: SIGTERM keeps ending the process at once
        return
    # The handler only sets an event: under gevent it runs inside the event loop, where
    # starting a thread or taking a contended lock is refused.
    signalled = threading.Event()

    def end_on_signal() -> None:
        signalled.wait()
        core.live.end_streams()

    def on_sigterm(signum: int, frame: Any) -> None:
        signalled.set()
        previous(signum, frame)

    threading.Thread(target=end_on_signal, name="carryover-end-streams", daemon=True).start()
    signal.signal(signal.SIGTERM, on_sigterm)


def __getattr__(name: str) -> Flask:
    """Build `app` when gunicorn first asks for it, once per process."""
    if name != "app":
        raise AttributeError(name)
    app = build_web_app()
    globals()["app"] = app
    return app
