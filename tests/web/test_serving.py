"""Serving under slow and idle connections: webhooks keep flowing, trickles and idlers are cut off.

The server under test is the real `carryover serve`, in a process of its own on a free local
port, with a short request deadline (or a short idle timeout) so that the tests stay short.
Every connection the tests open goes to 127.0.0.1 and is closed when they end.
"""

from __future__ import annotations

import http.client
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from middleware.config import SERVER, validate_section
from middleware.web.serving import CLEANUP_INTERVAL_S
from tests.payloads import fixture_bytes, zendesk_headers
from tests.values import ZENDESK_SECRET

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 3.0
ANSWER_WITHIN_S = 2.0  # webhooks answer in milliseconds; this is room for a loaded machine
TRICKLING_HEADERS = 150  # each sends a request line, then a header byte now and then
TRICKLING_BODIES = 100  # each sends whole headers, then a body byte now and then
IDLE = 150  # each connects and sends nothing
# More than waitress's default connection_limit (100), which idle keep-alive connections used
# to fill until their channel timeout (120 s by default) freed them.
KEPT_ALIVE = 150  # each makes one request, reads the answer and stays open
SHORT_CHANNEL_TIMEOUT_S = 2
SLOW_BODY_HEADERS = (b"POST /hooks/zendesk HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 99\r\n\r\n{")  # fmt: skip
TRICKLE_EVERY_S = 0.4
# The loop finds late requests every CLEANUP_INTERVAL_S and wakes at least once a second.
CLOSED_WITHIN_S = REQUEST_TIMEOUT_S + CLEANUP_INTERVAL_S + 1.0 + 2.0  # + room for a slow pass
IDLE_CLOSED_WITHIN_S = SHORT_CHANNEL_TIMEOUT_S + CLEANUP_INTERVAL_S + 1.0 + 2.0


@dataclass
class Served:
    """A running `carryover serve`: its port and its output."""

    port: int
    log: Path

    def connect(self) -> socket.socket:
        """Open a connection to the server."""
        return socket.create_connection((HOST, self.port), timeout=5)


def free_port() -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_serve(folder: Path, server: dict[str, float]) -> Iterator[Served]:
    """Run `carryover serve` with Zendesk connected, no worker and these server settings."""
    port = free_port()
    config = {
        "public_url": f"http://{HOST}:{port}",
        "database_url": f"sqlite:///{folder / 'carryover.db'}",
        "worker": {"enabled": False},  # webhooks are stored and acknowledged, nothing more
        "server": server,
        "integrations": {
            "zendesk": {
                "url": "https://acme.zendesk.com",  # never called: no worker
                "email": "bot@example.com",
                "api_token": "unused",
                "webhook_secret": ZENDESK_SECRET,
            }
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    log = folder / "serve.log"
    command = [sys.executable, "-m", "middleware.cli", "serve", "--config",
               str(folder / "config.yaml"), "--host", HOST, "--port", str(port)]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    served = Served(port, log)
    try:
        wait_until_serving(served, process)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Run `carryover serve` with the default limits and a short request deadline."""
    with running_serve(
        tmp_path_factory.mktemp("serving"), {"request_timeout_s": REQUEST_TIMEOUT_S}
    ) as running:
        yield running


@pytest.fixture
def served_with_short_idle_timeout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Run `carryover serve` that closes connections idle for SHORT_CHANNEL_TIMEOUT_S."""
    settings = {"channel_timeout_s": SHORT_CHANNEL_TIMEOUT_S}
    with running_serve(tmp_path_factory.mktemp("idle"), settings) as running:
        yield running


def wait_until_serving(served: Served, process: subprocess.Popen[bytes]) -> None:
    """Block until /healthz answers; fail with the server's output if it never does."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if request(served, "GET", "/healthz")[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"carryover serve did not answer:\n{served.log.read_text(errors='replace')}")


def request(served: Served, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int | str, float]:  # fmt: skip
    """Send one request on a new connection; return its status (or "timed out") and seconds."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(HOST, served.port, timeout=ANSWER_WITHIN_S)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        response.read()
    except TimeoutError:
        return "timed out", time.monotonic() - started
    finally:
        connection.close()
    return response.status, time.monotonic() - started


def closed_by_server(sock: socket.socket) -> bool:
    """Tell whether the server closed the connection (it never sends these a reply)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1024) == b""
    except OSError:  # reset
        return True


def trickle(sock: socket.socket) -> bool:
    """Send one more byte; False when the server has closed the connection."""
    try:
        sock.send(b"a")
    except OSError:
        return False
    return not closed_by_server(sock)


def test_server_defaults_hold_hundreds_of_connections_and_enforce_a_deadline():
    """By default: 127.0.0.1:8080, 1000 connections, idle ones closed at 75 s, late requests
    at 10 s; one process (waitress), which under several would hold 2,500 pops each."""
    settings = validate_section("server", {}, SERVER)
    assert settings == {"host": "127.0.0.1", "port": 8080, "threads": 40,
                        "connection_limit": 1000, "channel_timeout_s": 75,
                        "request_timeout_s": 10.0, "processes": 1,
                        "pop_streams": 2500}  # fmt: skip


def test_webhooks_flow_while_hundreds_of_connections_trickle_or_idle(served):
    """With 250 connections trickling and 150 idle, webhooks answer; trickles end at a deadline."""
    sockets: list[socket.socket] = []
    first_byte = time.monotonic()
    try:
        trickling = []
        for _ in range(TRICKLING_HEADERS):
            sock = served.connect()
            sock.sendall(b"POST /hooks/zendesk HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            trickling.append(sock)
        for _ in range(TRICKLING_BODIES):
            sock = served.connect()
            sock.sendall(SLOW_BODY_HEADERS)
            trickling.append(sock)
        sockets += trickling
        idle = [served.connect() for _ in range(IDLE)]
        sockets += idle
        opened = time.monotonic()

        body = fixture_bytes("ticket_created__mail.json")
        answers = {}
        open_while_answering = 0
        closed_at: dict[socket.socket, float] = {}
        while len(closed_at) < len(trickling) and time.monotonic() - opened < CLOSED_WITHIN_S:
            for sock in trickling:
                if sock not in closed_at and not trickle(sock):
                    closed_at[sock] = time.monotonic() - opened
            if not answers and time.monotonic() - opened >= 1.0:  # every trickle has trickled
                answers["healthz"] = request(served, "GET", "/healthz")
                answers["webhook"] = request(served, "POST", "/hooks/zendesk", body,
                                             zendesk_headers(body))  # fmt: skip
                open_while_answering = len(trickling) - len(closed_at)
            time.sleep(TRICKLE_EVERY_S)

        assert answers["healthz"][0] == 200
        assert answers["webhook"][0] == 200
        assert max(seconds for _, seconds in answers.values()) < ANSWER_WITHIN_S
        assert open_while_answering == len(trickling)
        assert len(closed_at) == len(trickling), "trickling connections left open"
        # None before its deadline: the first byte of the first trickle went at first_byte.
        assert min(closed_at.values()) >= REQUEST_TIMEOUT_S - (opened - first_byte)
        assert max(closed_at.values()) < CLOSED_WITHIN_S
        assert not any(closed_by_server(sock) for sock in idle)  # idle ones wait for 75 s
        assert request(served, "GET", "/healthz")[0] == 200
    finally:
        for sock in sockets:
            sock.close()


def kept_alive_after_one_request(served: Served) -> socket.socket:
    """Open a connection, GET /healthz on it, read the answer and return it still open."""
    sock = served.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    response = http.client.HTTPResponse(sock, method="GET")
    response.begin()
    response.read()
    assert response.status == 200
    assert not response.will_close  # HTTP/1.1: the server keeps it open for the next request
    return sock


def test_webhooks_answer_while_hundreds_of_keep_alive_connections_idle(served):
    """With 150 keep-alive connections idle after one request each, a webhook answers 200."""
    kept_alive: list[socket.socket] = []
    try:
        for _ in range(KEPT_ALIVE):
            kept_alive.append(kept_alive_after_one_request(served))
        body = fixture_bytes("ticket_created__mail.json")
        status, seconds = request(served, "POST", "/hooks/zendesk", body, zendesk_headers(body))
        assert status == 200
        assert seconds < ANSWER_WITHIN_S
        assert not any(closed_by_server(sock) for sock in kept_alive)  # still idle, still open
    finally:
        for sock in kept_alive:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_channel_timeout(
    served_with_short_idle_timeout,
):
    """A keep-alive connection idle for server.channel_timeout_s is closed by the server."""
    with kept_alive_after_one_request(served_with_short_idle_timeout) as sock:
        answered = time.monotonic()
        closed_after = None
        while time.monotonic() - answered < IDLE_CLOSED_WITHIN_S:
            if closed_by_server(sock):
                closed_after = time.monotonic() - answered
                break
            time.sleep(0.05)
    assert closed_after is not None, "the idle connection was left open"
    # Not before its timeout (the server's last activity came before `answered`), and soon after.
    assert SHORT_CHANNEL_TIMEOUT_S - 0.1 <= closed_after < IDLE_CLOSED_WITHIN_S


def test_a_keep_alive_connection_gets_a_new_deadline_for_each_request(served):
    """A connection whose requests each arrive in time is never cut, however long it lives."""
    with served.connect() as sock:
        for attempt in range(2):
            if attempt:  # the connection now lives past the deadline of its first request
                time.sleep(REQUEST_TIMEOUT_S / 2 + CLEANUP_INTERVAL_S)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(REQUEST_TIMEOUT_S / 2)  # half the deadline, then the rest
            sock.sendall(b"\r\n")
            response = http.client.HTTPResponse(sock, method="GET")
            response.begin()
            response.read()
            assert response.status == 200
            assert not response.will_close


FIT_OPEN_FILES = """
import resource, sys
from middleware.web.serving import fit_open_files
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
fitted = fit_open_files(1000, 40)
print(fitted, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no open-files limit to raise")
@pytest.mark.parametrize(
    ("soft", "hard", "fitted", "raised_to"),
    [
        (256, 4096, 1000, 1144),  # the soft limit is raised to what 1000 connections need
        (256, 512, 368, 512),  # the hard limit is too low: as many as fit under it
        (4096, 4096, 1000, 4096),  # enough already: left alone
    ],
)
def test_the_open_files_limit_is_raised_for_the_connection_limit(soft, hard, fitted, raised_to):
    """1000 connections and 40 threads need 1144 files: the soft limit rises, or fewer fit."""
    import resource

    ceiling = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if ceiling != resource.RLIM_INFINITY and hard > ceiling:
        pytest.skip(f"this machine's hard open-files limit is {ceiling}")
    # In a process of its own: the limits of the test process stay as they are.
    result = subprocess.run(
        [sys.executable, "-c", FIT_OPEN_FILES, str(soft), str(hard)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert result.stdout.split() == [str(fitted), str(raised_to)]
