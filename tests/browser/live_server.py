"""The real web app served on a free local port, for the browser to talk to."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from werkzeug.serving import ThreadedWSGIServer

from devkit.fake_server import QuietHandler

CONNECTIONS_END_S = 10.0


class OneRequestPerConnection(QuietHandler):
    """Answer one request per connection, as HTTP/1.0 does.

    After each response werkzeug's development server reads what the client sent since, until
    the client closes the connection. With keep-alive, a browser following a redirect sends
    its next request on the same connection: the server then hangs in that read until the
    browser gives up, and never closes the first response.
    """

    protocol_version = "HTTP/1.0"


class LiveServer(ThreadedWSGIServer):
    """Serve the real web app on a free local port; stop() waits for its open connections."""

    def __init__(self, app: Flask) -> None:
        super().__init__("127.0.0.1", 0, app, handler=OneRequestPerConnection)
        self.url = f"http://127.0.0.1:{self.server_port}"
        self._open = 0
        self._idle = threading.Condition()
        # A short poll interval makes stop() quick: shutdown waits for the next poll.
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)  # fmt: skip

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count the connection, then serve it in a thread of its own."""
        with self._idle:
            self._open += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection and count it as finished, however it ended."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._idle:
                self._open -= 1
                self._idle.notify_all()

    def start(self) -> LiveServer:
        """Serve in a daemon thread and return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wait for the open connections (a pop's stream ends within a poll), then stop."""
        with self._idle:
            idle = self._idle.wait_for(lambda: self._open == 0, CONNECTIONS_END_S)
        self.shutdown()
        self._thread.join(timeout=5)
        self.server_close()
        # A request still running would use the store after the test disposed of it.
        assert idle, f"{self._open} connection(s) still open {CONNECTIONS_END_S} s after the test"
