"""Several web processes: `serve --processes`, the WSGI entry, gunicorn, the live board."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from sqlalchemy import func, select

from middleware.cli import main
from middleware.config import ConfigError, parse_config
from middleware.reads import live
from middleware.reads.live import LiveUpdates
from middleware.store.tables import deliveries, make_engine
from middleware.web import wsgi
from middleware.web.serving import gunicorn_command
from tests.payloads import cti_body, cti_headers
from tests.values import AGENT_KEY, CTI_SECRET, PG_URL

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = "a-secret-key-shared-by-every-web-process"
needs_postgres = pytest.mark.skipif(not PG_URL, reason="CARRYOVER_TEST_DATABASE_URL is not set")


def write_config(tmp_path: Path, database_url: str, **top: Any) -> Path:
    """Write a web-only configuration with the CTI integration and an agent key."""
    raw = {
        "database_url": database_url,
        "secret_key": SECRET_KEY,
        "agent_api_keys": [AGENT_KEY],
        "worker": {"enabled": False},
        "integrations": {"cti": {"secret": CTI_SECRET}},
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until check() holds; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stored_deliveries(database_url: str) -> int:
    """Count the deliveries in the store."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(deliveries)).scalar_one())
    finally:
        engine.dispose()


# -- serve --processes and server.processes -----------------------------------------------------
@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Catch what `carryover serve` would hand gunicorn, and fail if it served in-process."""
    calls: list[dict[str, Any]] = []

    def serve_processes(settings: dict[str, Any], host: str, port: int, config: Any) -> None:
        calls.append({"processes": settings["processes"], "port": port, "config": config})

    def serve(*_: Any) -> None:
        raise AssertionError("served in this process")

    monkeypatch.setattr("middleware.web.serving.serve_processes", serve_processes)
    monkeypatch.setattr("middleware.web.serving.serve", serve)
    return calls


def test_processes_from_the_configuration_serve_under_gunicorn(
    tmp_path, database_url, forked, capsys
):
    """server.processes 3 hands the app to gunicorn and says no worker runs in the web processes."""
    config = write_config(tmp_path, database_url, server={"processes": 3, "port": 8282})
    assert main(["serve", "--config", str(config)]) == 0
    assert forked == [{"processes": 3, "port": 8282, "config": config}]
    out = capsys.readouterr().out
    assert "serving on http://127.0.0.1:8282" in out
    assert "in 3 web processes; they run no worker: run `carryover worker` beside them" in out


def test_the_option_overrides_the_configured_processes(tmp_path, database_url, forked):
    """--processes wins over server.processes."""
    config = write_config(tmp_path, database_url, server={"processes": 3})
    assert main(["serve", "--config", str(config), "--processes", "2"]) == 0
    assert [call["processes"] for call in forked] == [2]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_no_process_is_refused_naming_the_option_and_key(
    tmp_path, database_url, forked, capsys, value
):
    """--processes below 1 ends serve with status 2, naming --processes and server.processes."""
    config = write_config(tmp_path, database_url)
    assert main(["serve", "--config", str(config), "--processes", value]) == 2
    assert "--processes: must be at least 1 (server.processes)" in capsys.readouterr().err
    assert forked == []


@pytest.mark.parametrize("key", ["processes", "pop_streams"])
def test_server_processes_and_streams_must_be_numbers(key):
    """server.processes and server.pop_streams are whole numbers (0 is refused with the rest)."""
    with pytest.raises(ConfigError, match=rf"^server\.{key}: expected int"):
        parse_config({"server": {key: "two"}}, {})


@needs_postgres
def test_several_processes_on_postgresql_need_a_shared_secret_key(
    tmp_path, postgres_url, forked, capsys
):
    """Without secret_key each process would sign pop links with its own key: refused."""
    config = write_config(tmp_path, postgres_url, secret_key=None)
    assert main(["serve", "--config", str(config), "--processes", "2"]) == 2
    assert "several web processes need secret_key set" in capsys.readouterr().err
    assert forked == []


def test_one_process_keeps_waitress(tmp_path, database_url, monkeypatch, capsys):
    """server.processes 1 (the default) serves in this process, as `make run` always did."""
    served: list[int] = []
    monkeypatch.setattr("middleware.web.serving.serve", lambda app, s, h, port: served.append(port))
    assert main(["serve", "--config", str(write_config(tmp_path, database_url))]) == 0
    assert served == [8080] and "web processes" not in capsys.readouterr().out


def test_the_gunicorn_command_uses_gevent_and_room_for_the_streams():
    """Each process takes pop_streams connections besides connection_limit; IPv6 is bracketed."""
    settings = {"processes": 4, "connection_limit": 1000, "pop_streams": 2500,
                "channel_timeout_s": 75}  # fmt: skip
    command = gunicorn_command(settings, "::1", 9000)

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert command[:3] == [sys.executable, "-m", "gunicorn"]
    assert option("--worker-class") == "gevent" and option("--workers") == "4"
    assert option("--worker-connections") == "3500" and option("--bind") == "[::1]:9000"
    assert command[-1] == "middleware.web.wsgi:app"


# -- the WSGI entry ------------------------------------------------------------------------------
@pytest.fixture
def entry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], Any]]:
    """Return a loader of `middleware.web.wsgi:app` for a config file, built afresh each time."""
    built: list[Any] = []

    def load(config: Path) -> Any:
        monkeypatch.setenv("CARRYOVER_CONFIG", str(config))
        monkeypatch.delitem(wsgi.__dict__, "app", raising=False)
        app = wsgi.app
        built.append(app)
        return app

    yield load
    for app in built:
        app.extensions["carryover"].dispose()


def test_the_wsgi_entry_serves_webhooks_from_the_configured_store(tmp_path, database_url, entry):
    """middleware.web.wsgi:app, built from $CARRYOVER_CONFIG, stores a signed CTI webhook."""
    app = entry(write_config(tmp_path, database_url))
    body = cti_body("newCall.json")
    response = app.test_client().post("/hooks/cti", data=body, headers=cti_headers(body))
    assert (response.status_code, response.get_json()) == (200, {})
    assert stored_deliveries(database_url) == 1


def test_the_wsgi_entry_runs_no_worker_and_takes_the_configured_streams(
    tmp_path, database_url, entry
):
    """The web process listens for other processes' changes but runs no worker; its stream
    limit is server.pop_streams."""
    before = {thread.name for thread in threading.enumerate()}
    app = entry(write_config(tmp_path, database_url, server={"pop_streams": 2}))
    core = app.extensions["carryover"]
    # The listener of other processes' wake-ups (on PostgreSQL), and no worker's threads.
    listener = {"carryover-listen"} if core.wakeups.enabled else set()
    assert {thread.name for thread in threading.enumerate()} - before == listener
    assert [core.live.open_stream() for _ in range(3)] == [True, True, False]


def test_the_wsgi_entry_refuses_a_store_without_migrations(tmp_path, entry):
    """A web process never migrates (several would race): it names the command that does."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'new.db'}")
    with pytest.raises(RuntimeError, match="run `carryover db upgrade` first"):
        entry(config)


def test_sigterm_ends_the_streams_then_runs_the_servers_own_handler(core):
    """A server's SIGTERM handler still runs, and every waiting stream is woken to end."""
    handled: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: handled.append(signum))
    try:
        wsgi.end_streams_on_sigterm(core)
        woken: list[tuple[int, bool]] = []
        waiter = threading.Thread(target=lambda: woken.append(core.live.wait(0, {"x"}, 60)))
        waiter.start()
        os.kill(os.getpid(), signal.SIGTERM)
        waiter.join(timeout=30)
        assert handled == [signal.SIGTERM] and woken == [(0, True)] and core.live.ending
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the live board ------------------------------------------------------------------------------
def test_a_publication_wakes_only_the_streams_of_its_topics():
    """A stream waiting for another topic sleeps on; the one whose topic changed wakes."""
    board = LiveUpdates()
    results: dict[str, tuple[int, bool]] = {}

    def wait(name: str, topic: str, timeout: float) -> None:
        results[name] = board.wait(0, {topic}, timeout)

    mine = threading.Thread(target=wait, args=("mine", "phone:+14155550142", 60))
    other = threading.Thread(target=wait, args=("other", "phone:+14155550199", 60))
    mine.start()
    other.start()
    wait_for(lambda: len(board._everyone) == 2, "both streams to wait")
    board.publish({"phone:+14155550142", "customer:7"})
    mine.join(timeout=30)
    assert results == {"mine": (1, True)} and other.is_alive()
    board.end_streams()
    other.join(timeout=30)
    assert results["other"] == (1, True) and not board._waiting


def test_a_publication_made_before_the_wait_is_not_missed():
    """A change published while the stream was rendering is seen without waiting."""
    board = LiveUpdates()
    board.publish({"customer:7"})
    board.publish({"customer:8"})
    assert board.wait(1, {"customer:8"}, 60) == (2, True)
    assert board.wait(0, {"customer:7"}, 60) == (2, True)


def test_store_checks_are_booked_one_turn_apart(monkeypatch):
    """Streams whose timeout ran out check the store in turns, POLLS_PER_S a second at most."""
    monkeypatch.setattr(live, "POLLS_PER_S", 10)
    board = LiveUpdates()
    first, second, third = board._poll_turn(), board._poll_turn(), board._poll_turn()
    assert first == 0
    assert 0 < second <= 0.1 < third <= 0.2


# -- gunicorn, gevent and PostgreSQL -------------------------------------------------------------
def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_processes(tmp_path: Path, database_url: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `carryover serve --processes 2` on a free port; yield its URL and process."""
    port = free_port()
    config = write_config(tmp_path, database_url)
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "middleware.cli", "serve", "--config", str(config),
             "--port", str(port), "--processes", "2"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return requests.get(f"{url}/healthz", timeout=5).ok and len(children(process)) == 2
        except requests.RequestException:  # not listening yet, or slow to start
            return False

    try:
        wait_for(up, "two web processes to answer /healthz")
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def children(process: subprocess.Popen) -> list[str]:
    """Return the ids of a process's children (Linux /proc)."""
    path = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return path.read_text().split() if path.exists() else []


def test_two_web_processes_serve_webhooks_and_pops_and_end_cleanly_on_sigterm(
    two_processes, database_url
):
    """Under gunicorn both processes answer; SIGTERM ends an open pop and the server exits 0."""
    url, process = two_processes
    # A connection each, closed after its answer: each may land on either process, and none
    # is left idle to hold a process after SIGTERM until gunicorn's graceful timeout.
    for index in range(6):
        body = cti_body("newCall.json", callId=f"call-{index}")
        headers = cti_headers(body) | {"Connection": "close"}
        response = requests.post(f"{url}/hooks/cti", data=body, headers=headers)
        assert (response.status_code, response.json()) == (200, {})
    assert stored_deliveries(database_url) == 6
    agent = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    agent.request("GET", "/pop/events?phone=%2B14155550142",
                  headers={"Authorization": f"Bearer {AGENT_KEY}"})  # fmt: skip
    stream = agent.getresponse()
    assert stream.status == 200
    while stream.readline() != b"event: pop\n":
        pass
    process.send_signal(signal.SIGTERM)
    rest = stream.read()  # to the end of the chunked body: a cut one raises IncompleteRead
    agent.close()  # as the page does, to reconnect
    assert process.wait(timeout=30) == 0
    assert b"event: " not in rest.replace(b"event: pop", b"")


LISTEN_UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()  # first, as gunicorn's gevent worker does

    import sys, threading
    import gevent, psycopg
    from middleware.reads.live import LiveUpdates

    url = sys.argv[1]
    board = LiveUpdates()
    listening = threading.Event()

    def listen():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN carryover_test_pops")
            listening.set()
            for notify in conn.notifies(timeout=30, stop_after=1):
                board.publish({notify.payload})

    ticks = []
    def tick():
        while True:
            ticks.append(1)
            gevent.sleep(0.01)

    threading.Thread(target=listen, daemon=True).start()
    gevent.spawn(tick)
    listening.wait(30)
    before = len(ticks)
    gevent.sleep(0.2)  # the listener blocks in notifies(); the process must go on
    woken = []
    waiter = threading.Thread(target=lambda: woken.append(board.wait(0, {"phone:+1"}, 30)))
    waiter.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("NOTIFY carryover_test_pops, 'phone:+1'")
    waiter.join(30)
    print(len(ticks) > before, woken)
""")


@needs_postgres
def test_a_postgresql_listener_thread_works_under_gevent(postgres_url):
    """A psycopg LISTEN loop in a thread yields under gevent, and its publish wakes a stream."""
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    url = url.split("?")[0]  # the schema option is not needed for LISTEN/NOTIFY
    result = subprocess.run(
        [sys.executable, "-c", LISTEN_UNDER_GEVENT, url], cwd=ROOT, capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.stdout.strip() == "True [(1, True)]", result.stderr
