"""A call that got no answer is said in an admin's words, naming the host, not urllib3's repr."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NameResolutionError

from middleware.errors import NotApplied
from middleware.integrations.upstreams import call_failed


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def failure_of(call) -> requests.RequestException:
    with pytest.raises(requests.RequestException) as caught:
        call()
    return caught.value


def test_a_refused_connection_names_the_address_and_was_not_sent():
    port = closed_port()
    exc = failure_of(lambda: requests.get(f"http://127.0.0.1:{port}/api", timeout=2))
    error = call_failed("Zendesk", exc)
    assert isinstance(error, NotApplied)
    assert str(error) == (
        f"Zendesk unreachable: 127.0.0.1:{port} refused the connection (nothing listens there)"
    )


def test_a_name_that_cannot_be_resolved_says_so_in_plain_words():
    url = "https://acme-example.zendesk.com/api/v2/users/me.json"
    reason = NameResolutionError("acme-example.zendesk.com", None, socket.gaierror(-2, "no"))  # type: ignore[arg-type]
    exc = requests.ConnectionError(
        MaxRetryError(None, url, reason), request=requests.Request("GET", url).prepare()
    )  # type: ignore[arg-type]
    error = call_failed("Zendesk", exc)
    assert isinstance(error, NotApplied)
    assert str(error) == (
        "Zendesk unreachable: the name acme-example.zendesk.com could not be found "
        "(check the URL, or this server's DNS)"
    )
    assert "HTTPSConnectionPool" not in str(error) and "Errno" not in str(error)


def test_a_server_that_never_answers_may_have_applied_the_call(silent_port):
    exc = failure_of(lambda: requests.get(f"http://127.0.0.1:{silent_port}/", timeout=0.2))
    error = call_failed("Salesforce", exc)
    assert not isinstance(error, NotApplied)  # it may still apply what it received
    assert str(error) == (
        f"Salesforce did not answer in time: 127.0.0.1:{silent_port} sent no answer within "
        "the timeout"
    )


def test_a_tls_handshake_with_a_plain_server_fails_with_its_reason(silent_port):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer_in_plain_http() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer_in_plain_http, daemon=True)
    thread.start()
    exc = failure_of(lambda: requests.get(f"https://127.0.0.1:{port}/", timeout=2))
    thread.join(timeout=2)
    server.close()
    error = call_failed("Zendesk", exc)
    assert isinstance(error, NotApplied)
    assert str(error).startswith(
        f"Zendesk unreachable: the TLS handshake with 127.0.0.1:{port} failed ("
    )
