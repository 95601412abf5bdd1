"""Many upstream calls in flight: within the bound, one ticket's notes in turn, pauses kept,
lookups made ahead, and every note once when a worker is killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from devkit.simulators.zendesk import FakeZendesk
from middleware.config import ConfigError, parse_config
from middleware.installation import Installation, build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.notes.outbox import MARKER_PATTERN
from middleware.process.worker import Worker
from middleware.store.queue import DONE, PAUSED_UPSTREAM, PENDING
from middleware.store.tables import writes
from middleware.web.app import create_app
from tests.actions import ConfigFactory
from tests.payloads import zendesk_event
from tests.values import ANN, ZENDESK_EMAIL, ZENDESK_SECRET, ZENDESK_TOKEN

CONCURRENCY = 3
TICKETS = tuple(range(7001, 7009))
ROOT = Path(__file__).resolve().parents[2]


def note_path(ticket: int) -> str:
    return f"/api/v2/tickets/{ticket}.json"


def note_puts(fake: FakeZendesk) -> list[str]:
    """Return the paths of the note writes the fake received, in the order they came."""
    return [path for method, path, _body, _at in fake.requests_log if method == "PUT"]


def note_rows(core: Installation) -> list:
    with core.engine.connect() as conn:
        return list(conn.execute(select(writes).order_by(writes.c.id)))


@pytest.fixture
def tickets(fake_zendesk: FakeZendesk) -> tuple[int, ...]:
    """Add the tickets the notes go to."""
    for ticket in TICKETS:
        fake_zendesk.add_ticket(ticket, ANN, f"ticket {ticket}")
    return TICKETS


@pytest.fixture
def fanout_core(
    database_url: str, fake_zendesk: FakeZendesk, make_config: ConfigFactory
) -> Iterator[Installation]:
    """An installation of Zendesk whose worker keeps at most CONCURRENCY calls in flight."""
    config = make_config(database_url, fake_zendesk.url,
                         worker={"backoff_base_s": 0.0, "lease_s": 30,
                                 "upstream_concurrency": CONCURRENCY})  # fmt: skip
    built = build_installation(config)
    yield built
    built.dispose()


def test_notes_go_out_at_once_within_the_bound_and_one_tickets_in_turn(
    fanout_core, fake_zendesk, tickets, queue_note
):
    """Notes to different tickets are written at once, never more than the bound; the notes
    to one ticket one after the other, in the order they were queued."""
    first, *others = tickets[:5]
    for text in ("one", "two", "three"):
        queue_note(fanout_core, "zendesk", str(first), text)
    for ticket in others:
        queue_note(fanout_core, "zendesk", str(ticket))
    fake_zendesk.delay_seconds = 0.2  # every note is still in flight when the next ones go

    Worker(fanout_core, name="w").drain()

    assert [c["body"].splitlines()[0] for c in fake_zendesk.notes(first)] == ["one", "two", "three"]
    assert all(len(fake_zendesk.notes(t)) == 1 for t in others)
    assert fake_zendesk.most_in_flight_per_path[note_path(first)] == 1
    assert 2 <= fake_zendesk.most_in_flight <= CONCURRENCY
    assert {row.status for row in note_rows(fanout_core)} == {DONE}


def test_a_429_pauses_every_note_not_yet_sent(fanout_core, fake_zendesk, tickets, queue_note):
    """After a 429, no note of the batch is sent until Retry-After; then each goes once."""
    for ticket in tickets:
        queue_note(fanout_core, "zendesk", str(ticket))
    fake_zendesk.rate_limit(seconds=3600, retry_after=30)
    worker = Worker(fanout_core, name="w")

    worker.drain()

    assert len(note_puts(fake_zendesk)) == 1  # the one that met the 429
    rows = note_rows(fanout_core)
    assert all(r.status == PENDING and r.attempts == 0 for r in rows)
    assert {r.waiting_for for r in rows} == {PAUSED_UPSTREAM}
    assert fanout_core.health.paused_for("zendesk") > 20

    fake_zendesk.clear_faults()
    fanout_core.health.resume("zendesk")
    with fanout_core.engine.begin() as conn:
        conn.execute(writes.update().values(next_attempt_at=writes.c.created_at))
    worker.drain()
    assert all(len(fake_zendesk.notes(t)) == 1 for t in tickets)
    assert sorted(note_puts(fake_zendesk)[1:]) == sorted(note_path(t) for t in tickets)


def test_lookups_are_made_ahead_and_deliveries_recorded_in_order(
    fanout_core, fake_zendesk, hooks_for
):
    """A batch's requesters are looked up at once, before the deliveries are recorded in the
    order they came: each requester is read once, and the timeline has every ticket."""
    hooks = hooks_for(create_app(core=fanout_core).test_client())
    requesters = range(8447388091001, 8447388091007)
    for n, requester in enumerate(requesters):
        fake_zendesk.add_user(requester, f"Customer {n}", email=f"customer{n}@example.com")
        body = zendesk_event("ticket_created__mail.json", event_id=f"ahead-{n}",
                             requester_id=str(requester), id=str(7100 + n))  # fmt: skip
        assert hooks.zendesk(body).status_code == 200
    fake_zendesk.delay_seconds = 0.2

    Worker(fanout_core, name="w").drain()

    reads = [path for method, path, _b, _t in fake_zendesk.requests_log if method == "GET"]
    asked = [(urlsplit(p).path, parse_qs(urlsplit(p).query)) for p in reads]
    assert sorted((path, q["ids"], q["include"]) for path, q in asked) == [
        ("/api/v2/users/show_many.json", [str(r)], ["identities"]) for r in requesters
    ]
    assert fake_zendesk.most_in_flight >= 2
    with fanout_core.engine.connect() as conn:
        statuses = conn.execute(select(fanout_core.inbox.table.c.status)).scalars().all()
    assert statuses == [DONE] * len(requesters)


def test_upstream_concurrency_is_checked_naming_the_key():
    """A concurrency of 0 or past the most a worker keeps open stops the start, naming the key."""
    schemas = PluginRegistry.from_entry_points().schemas()
    for value in (0, 129):
        with pytest.raises(ConfigError, match="worker.upstream_concurrency"):
            parse_config({"worker": {"upstream_concurrency": value}}, schemas)
    assert parse_config({"worker": {"upstream_concurrency": 128}}, schemas)


@pytest.fixture
def worker_process(
    tmp_path: Path, database_url: str, fake_zendesk: FakeZendesk
) -> Iterator[Callable]:
    """Start `carryover worker` processes (at most CONCURRENCY calls at once); kill any left."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"database_url: '{database_url}'\n"
        "worker: {lease_s: 2, poll_interval_s: 0.2, backoff_base_s: 0.1,\n"
        f"         unknown_outcome_grace_s: 3, upstream_concurrency: {CONCURRENCY}}}\n"
        "allow_private_upstreams: true\n"
        "integrations:\n"
        "  zendesk:\n"
        f"    url: {fake_zendesk.url}\n"
        f"    email: {ZENDESK_EMAIL}\n"
        f"    api_token: {ZENDESK_TOKEN}\n"
        f"    webhook_secret: '{ZENDESK_SECRET}'\n"
    )
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        with (tmp_path / f"worker-{len(started)}.log").open("w") as log:  # read it on failure
            process = subprocess.Popen(
                [sys.executable, "-m", "middleware.cli", "worker", "--config", str(config)],
                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_a_worker_killed_with_notes_in_flight_leaves_each_note_written_once(
    core, fake_zendesk, tickets, queue_note, worker_process
):
    """kill -9 while several notes are in flight: the next worker writes each exactly once."""
    for ticket in tickets:
        queue_note(core, "zendesk", str(ticket))
    # The notes reach Zendesk and are applied after the kill, within the grace after which
    # the next worker looks for them.
    fake_zendesk.delay_seconds = 1
    doomed = worker_process()
    wait_for(lambda: fake_zendesk.most_in_flight >= 2, 30, "notes in flight at once")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    assert 2 <= fake_zendesk.most_in_flight <= CONCURRENCY

    fake_zendesk.delay_seconds = 0
    worker_process()
    wait_for(lambda: all(r.status == DONE for r in note_rows(core)), 30, "every note to be settled")
    time.sleep(0.5)
    assert all(len(fake_zendesk.notes(t)) == 1 for t in tickets)
    markers = [MARKER_PATTERN.search(c["body"]).group(1)
               for t in tickets for c in fake_zendesk.notes(t)]  # fmt: skip
    assert len(set(markers)) == len(tickets)
