"""A local HTTP server in a background thread: the base of the fake upstream services."""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from typing import Any, Self

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

# The read-only page where a simulated tool shows what its agents would see.
AGENT_PATHS = frozenset({"/", "/agent"})
AGENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>{title}</title><style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:52rem;color:#222}}
section{{border:1px solid #ccc;border-radius:6px;padding:.4rem 1rem;margin:1rem 0}}
h2{{font-size:17px;margin:.4rem 0}} .meta{{color:#666;font-size:13px;margin:.2rem 0}}
article{{border-left:3px solid #9bc;padding:.1rem .8rem;margin:.6rem 0}}
.internal{{background:#fff6d5;border-color:#e0b000}}
pre{{white-space:pre-wrap;font:inherit;margin:.3rem 0}}
</style></head><body><h1>{title}</h1>
{body}
</body></html>
"""


class QuietHandler(WSGIRequestHandler):
    """Keep werkzeug's per-request access log out of test, benchmark and demo output."""

    def log(self, type: str, message: str, *args: Any) -> None:
        """Log nothing."""


class FakeServer:
    """Serve the subclass's WSGI app (`_wsgi`) on a local port until stop() (an extension point)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        # Bind now, so that `url` is known before start(): seeded records and logins name it.
        self._server = make_server(host, port, self._wsgi, True, request_handler=QuietHandler,
                                   ssl_context=ssl_context)  # fmt: skip
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{host}:{self._server.server_port}"
        self._thread: threading.Thread | None = None

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        raise NotImplementedError

    def start(self) -> Self:
        """Serve requests in a daemon thread and return self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, daemon=True)
            self._thread.start()
        return self

    def _serve(self) -> None:
        # A short poll interval makes stop() quick: shutdown waits for the next poll.
        self._server.serve_forever(poll_interval=0.02)

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class FakeUpstream(FakeServer):
    """A fake vendor API with an agent's view: logs every API request, can answer slowly.

    Subclasses set `requests_log`, `delay_seconds` and an `_lock` (an RLock) before calling
    this constructor, and implement `_agent_view()` and `_api(request, received)`.
    """

    requests_log: list[tuple[str, str, bytes, float]]  # (method, path?query, body, monotonic)
    delay_seconds: float  # how long each API request waits before it is answered
    _lock: threading.RLock

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        # How many API requests were being answered at once, at most: all of them, and
        # those to one path (a note to a ticket).
        self.most_in_flight = 0
        self.most_in_flight_per_path: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        super().__init__(host, port, ssl_context)

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        if request.method == "GET" and request.path in AGENT_PATHS:
            # A person's page, not the API: no log entry, no usage, no injected failure.
            return self._agent_view()(environ, start_response)
        received = time.monotonic()
        query = request.query_string.decode("latin-1")
        path = f"{request.path}?{query}" if query else request.path
        with self._lock:
            self.requests_log.append((request.method, path, request.get_data(), received))
            self._count_in_flight(path, 1)
        try:
            if self.delay_seconds > 0:
                time.sleep(self.delay_seconds)
            response = self._api(request, received)
        finally:
            with self._lock:
                self._count_in_flight(path, -1)
        return response(environ, start_response)

    def _count_in_flight(self, path: str, change: int) -> None:
        """Count a request in (1) or out (-1), keeping the most seen at once (under _lock)."""
        self._in_flight[path] += change
        self._in_flight[""] += change  # every path
        self.most_in_flight = max(self.most_in_flight, self._in_flight[""])
        self.most_in_flight_per_path[path] = max(
            self.most_in_flight_per_path[path], self._in_flight[path]
        )

    def _agent_view(self) -> Response:
        raise NotImplementedError

    def _api(self, request: Request, received: float) -> Response:
        raise NotImplementedError


class AppServer(FakeServer):
    """Serve a given WSGI app (e.g. Carryover's own) on a local port, for tests."""

    def __init__(self, app: Any) -> None:
        self.app = app
        super().__init__()

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        return self.app(environ, start_response)


def agent_page(title: str, sections: str, empty: str) -> Response:
    """Return a simulated tool's agent view: its records' sections, or `empty` when none."""
    page = AGENT_PAGE.format(title=title, body=sections or f"<p>{empty}</p>")
    return Response(page, content_type="text/html; charset=utf-8")
