"""Serve the web app with waitress, bounded so that slow or idle clients cannot starve webhooks.

waitress reads every connection in one event loop and hands a request to a thread only once
it has arrived whole, so slow clients cost no threads; but it stops accepting connections at
`connection_limit` (100 by default), and a client that trickles a byte now and then keeps
`channel_timeout` from ever firing. A hundred such clients used to hold every slot, and
`/healthz` and every webhook timed out for as long as they trickled. Here:

- the limit is `server.connection_limit` (1000 by default), and the open-files limit is
  raised to fit it (each connection is a file descriptor);
- the loop uses poll(): waitress's default, select(), fails on descriptors past 1023;
- a request must arrive whole, headers and body, within `server.request_timeout_s` of its
  first byte, or its connection is closed (waitress has no such deadline of its own);
- idle connections are closed after `server.channel_timeout_s`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from middleware.ingest.hooks import MAX_BODY_BYTES

log = logging.getLogger(__name__)
# How often the server looks for connections past their deadlines: the deadline then holds
# within about a second (waitress's default of 30 s would let a trickle live 30 s longer).
CLEANUP_INTERVAL_S = 1
# Descriptors the process needs besides client connections: the store's connections (one or
# two per thread), log and SQLite files, waitress's trigger pipe, the listening socket.
FILES_PER_THREAD = 2
FILES_BESIDES = 64
# waitress buffers a body whole (to a temporary file past 512 KiB) before the app sees it; a
# body far past the app's own limit is refused by waitress right away, without being stored.
# Bodies a little over MAX_BODY_BYTES still reach the app, which answers its JSON 413.
MAX_BUFFERED_BODY_BYTES = 2 * MAX_BODY_BYTES
# After SIGTERM, how long a web process under gunicorn lets its requests finish: a webhook
# takes milliseconds, pop streams end at once (see middleware/web/wsgi.py).
GRACEFUL_TIMEOUT_S = 30


class DeadlineChannel(HTTPChannel):
    """A waitress connection that remembers when its pending request's first byte came."""

    request_started: float | None = None  # monotonic time; None while no request is pending

    def received(self, data: bytes) -> bool:
        """Parse the bytes, and stamp a request that began in them."""
        pending = self.request
        result: bool = super().received(data)
        if self.request is None:  # nothing half-received: every request so far is whole
            self.request_started = None
        elif self.request is not pending:  # a new request began in these bytes
            self.request_started = time.monotonic()
        return result


class DeadlineServer(TcpWSGIServer):
    """A waitress server that also closes connections whose request is late in arriving."""

    channel_class = DeadlineChannel

    def __init__(self, *args: Any, request_timeout_s: float, **kwargs: Any) -> None:
        self.request_timeout_s = request_timeout_s
        super().__init__(*args, **kwargs)

    def maintenance(self, now: float) -> None:
        """Close idle connections (waitress) and those whose request is past its deadline."""
        super().maintenance(now)
        cutoff = time.monotonic() - self.request_timeout_s
        late = [
            channel
            for channel in self.active_channels.values()
            # A connection with a request in progress is the app's, not the client's, delay.
            if not channel.requests
            and channel.request_started is not None
            and channel.request_started < cutoff
        ]
        for channel in late:
            channel.will_close = True  # the loop closes it on its next pass
        if late:  # once a pass, not once a connection: a flood must not flood the log too
            log.warning(
                "closed %d connection(s) whose request did not arrive within %g s",
                len(late), self.request_timeout_s,
            )  # fmt: skip


def fit_open_files(connection_limit: int, threads: int) -> int:
    """Raise the open-files limit for connection_limit; return the connections that fit."""
    needed = connection_limit + threads * FILES_PER_THREAD + FILES_BESIDES
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return connection_limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return connection_limit
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. macOS caps the soft limit below an infinite hard one
        target = soft
    return max(1, min(connection_limit, target - (needed - connection_limit)))


def build_server(
    app: Any, settings: Mapping[str, Any], host: str, port: int
) -> DeadlineServer | MultiSocketServer:
    """Build the waitress server of `carryover serve` from the `server` settings (not started)."""
    connection_limit = fit_open_files(settings["connection_limit"], settings["threads"])
    if connection_limit < settings["connection_limit"]:
        print(
            f"carryover: server.connection_limit {settings['connection_limit']} does not fit the "
            f"open-files limit (ulimit -n): serving at most {connection_limit} connections; "
            "raise ulimit -n (LimitNOFILE= under systemd)",
            file=sys.stderr,
        )
    adj = Adjustments(
        host=host,
        port=port,
        threads=settings["threads"],
        connection_limit=connection_limit,
        channel_timeout=settings["channel_timeout_s"],
        cleanup_interval=CLEANUP_INTERVAL_S,
        asyncore_use_poll=True,
        max_request_body_size=MAX_BUFFERED_BODY_BYTES,
        ident="carryover",
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    # As waitress.create_server does: one listener per address the host resolves to (a name
    # such as localhost can give IPv4 and IPv6), sharing one loop and one pool of threads.
    timeout = settings["request_timeout_s"]
    servers = [
        DeadlineServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo,
                       request_timeout_s=timeout)
        for sockinfo in adj.listen
    ]  # fmt: skip
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)


def serve(app: Any, settings: Mapping[str, Any], host: str, port: int) -> None:
    """Serve the app until interrupted."""
    server = build_server(app, settings, host, port)
    server.print_listen("Serving on http://{}:{}")
    server.run()


def gunicorn_command(settings: Mapping[str, Any], host: str, port: int) -> list[str]:
    """Return the gunicorn command that serves `middleware.web.wsgi:app` in several processes.

    gevent workers: an open pop stream waits as a greenlet, so thousands cost memory, not
    threads. Each process takes server.pop_streams streams on top of server.connection_limit
    other connections, so open pops never crowd out webhooks.
    """
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gevent",
        "--workers", str(settings["processes"]),
        "--worker-connections", str(settings["connection_limit"] + settings["pop_streams"]),
        "--bind", bind,
        "--keep-alive", str(settings["channel_timeout_s"]),
        "--graceful-timeout", str(GRACEFUL_TIMEOUT_S),
        "--no-control-socket",  # one per machine by default: a second gunicorn would clash
        "middleware.web.wsgi:app",
    ]  # fmt: skip


def serve_processes(settings: Mapping[str, Any], host: str, port: int, config: Path | None) -> None:
    """Replace this process with gunicorn serving the app in server.processes web processes.

    A fresh interpreter, not a fork of this one: gevent must patch the standard library
    before psycopg is first imported, which this process has already done.
    """
    streams = settings["connection_limit"] + settings["pop_streams"]
    connections = fit_open_files(streams, 1)  # the limit is inherited by gunicorn's processes
    if connections < streams:
        print(
            f"carryover: server.connection_limit + server.pop_streams ({streams}) do not fit the "
            f"open-files limit (ulimit -n): raise ulimit -n (LimitNOFILE= under systemd)",
            file=sys.stderr,
        )
    environment = dict(os.environ)
    if config is not None:
        environment["CARRYOVER_CONFIG"] = str(config.resolve())
    sys.stdout.flush()
    sys.stderr.flush()
    command = gunicorn_command(settings, host, port)
    os.execve(command[0], command, environment)
