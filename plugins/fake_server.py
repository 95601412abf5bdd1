"""A local HTTP server in a background thread: the base of the fake upstream services."""

from __future__ import annotations

import ssl
import threading
from typing import Any, Self

from werkzeug.serving import WSGIRequestHandler, make_server


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
