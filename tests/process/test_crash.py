"""A real `carryover serve` process killed right after acknowledging loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from devkit.simulators.zendesk import FakeZendesk
from middleware.store.tables import deliveries, make_engine
from tests.payloads import fixture_bytes, zendesk_headers
from tests.values import ZENDESK_EMAIL, ZENDESK_SECRET, ZENDESK_TOKEN

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def serve(tmp_path: Path, database_url: str, fake_zendesk: FakeZendesk) -> Iterator[Callable]:
    """Start `carryover serve` processes on one config; kill any left at the end."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"database_url: '{database_url}'\n"
        "worker: {lease_s: 2, poll_interval_s: 0.2, backoff_base_s: 0.1}\n"
        "allow_private_upstreams: true\n"
        "integrations:\n"
        "  zendesk:\n"
        f"    url: {fake_zendesk.url}\n"
        f"    email: {ZENDESK_EMAIL}\n"
        f"    api_token: {ZENDESK_TOKEN}\n"
        f"    webhook_secret: '{ZENDESK_SECRET}'\n"
    )
    started: list[subprocess.Popen] = []

    def start() -> str:
        port = free_port()
        with (tmp_path / f"serve-{len(started)}.log").open("w") as log:  # read it on failure
            process = subprocess.Popen(
                [sys.executable, "-m", "middleware.cli", "serve", "--config", str(config),
                 "--port", str(port)],
                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert process.poll() is None, "carryover serve exited"
            try:
                return requests.get(f"{url}/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_for(up, 20, "carryover serve to answer /healthz")
        return url

    start.processes = started  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_killed_right_after_the_ack_everything_is_processed_after_restart(
    serve, fake_zendesk, database_url
):
    """kill -9 right after a 200, before the worker could finish: a restart writes the note."""
    engine = make_engine(database_url)

    def statuses() -> list[str]:
        with engine.connect() as conn:
            query = select(deliveries.c.status).order_by(deliveries.c.id)
            return list(conn.execute(query).scalars())

    def post(url: str, name: str) -> None:
        body = fixture_bytes(name)
        response = requests.post(f"{url}/hooks/zendesk", data=body, headers=zendesk_headers(body))
        assert response.status_code == 200

    try:
        first = serve()  # the customer's first ticket is processed normally
        post(first, "ticket_created__mail.json")
        wait_for(lambda: statuses() == ["done"], 20, "the first ticket to be processed")

        fake_zendesk.delay_seconds = 5  # the next worker is still waiting on Zendesk...
        second = serve()
        post(second, "ticket_created__facebook_message.json")
        post(second, "ticket_comment_added.json")
        doomed = serve.processes[1]
        doomed.send_signal(signal.SIGKILL)  # ...when the process dies
        doomed.wait()
        assert statuses()[1:] != ["done", "done"]
        assert fake_zendesk.notes(5149) == []

        fake_zendesk.delay_seconds = 0
        serve()
        wait_for(
            lambda: statuses() == ["done"] * 3 and len(fake_zendesk.notes(5149)) == 1,
            30,
            "every delivery to be processed and the note written",
        )
        time.sleep(0.5)
        assert len(fake_zendesk.notes(5149)) == 1
        assert fake_zendesk.notes(5141) == []
    finally:
        engine.dispose()
