"""Reading an upstream's shared state (paused? failing?) before each call: many calls in
flight share one read, and a change this process makes is seen at once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import event

from middleware.errors import UpstreamPaused
from middleware.integrations import upstreams
from middleware.integrations.upstreams import UpstreamHealth
from middleware.store.tables import utcnow
from tests.customers.test_identity import engine as engine  # noqa: F401 (the fixture)

CALLS = 24


def reads_of_state(engine) -> list[str]:
    """Collect the statements that read the upstream_state table."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT") and "upstream_state" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen


def at_once(calls: int, action) -> list[BaseException]:
    """Run the action in `calls` threads released together; return what they raised."""
    start, failed = threading.Barrier(calls), []

    def run() -> None:
        start.wait()
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 (reported to the test)
            failed.append(exc)

    threads = [threading.Thread(target=run) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failed


def test_calls_in_flight_that_find_the_state_stale_read_it_once(engine, monkeypatch):
    """Two dozen calls checking at once, the first time and again once it is stale, make one
    read each time: the others wait for it, or go on with the state read before."""
    health = UpstreamHealth(engine)
    health.succeeded("zendesk")  # the upstream has a row, as after its first answer
    reads = reads_of_state(engine)
    health._forget()
    reading = threading.Event()
    slow_status = health.status

    def status(target):
        reading.wait(0.2)  # the read takes long enough for every thread to arrive
        return slow_status(target)

    monkeypatch.setattr(health, "status", status)
    assert at_once(CALLS, lambda: health.check("zendesk", "Zendesk")) == []
    assert len(reads) == 1
    monkeypatch.setattr(upstreams, "CACHE_S", 0.0)  # every view is stale now
    assert at_once(CALLS, lambda: health.check("zendesk", "Zendesk")) == []
    assert len(reads) == 2


def test_a_pause_recorded_here_is_seen_by_the_next_call_at_once(engine):
    """A 429 seen by one call pauses the next ones of this process without waiting for the
    cached view to age: the pause drops it."""
    health = UpstreamHealth(engine)
    health.succeeded("zendesk")
    health.check("zendesk", "Zendesk")  # cached: not paused
    health.rate_limited("zendesk", 30.0, "Zendesk answered 429")
    with pytest.raises(UpstreamPaused):
        health.check("zendesk", "Zendesk")
    assert health.paused_for("zendesk") > 0
    status = health.status("zendesk")
    assert status is not None and status.blocked_until > utcnow() + timedelta(seconds=20)


@pytest.mark.parametrize("forgotten", ["zendesk", "salesforce", None])
def test_a_read_begun_before_a_change_is_not_what_the_waiting_calls_go_by(engine, forgotten):
    """A read of Zendesk's state is under way when this process pauses Zendesk (after a 429),
    or records a change of another upstream or of all. A call that waited for that read does
    not take it for "not paused": it reads again, and sees the pause."""
    health = UpstreamHealth(engine)
    health.succeeded("zendesk")
    health.succeeded("salesforce")
    health._forget()
    release, started = threading.Event(), threading.Event()
    real_status = health.status

    def slow_first_read(target):
        started.set()
        release.wait(5)
        return real_status(target)

    health.status = slow_first_read
    first = threading.Thread(target=lambda: at_once(1, lambda: health.paused_for("zendesk")))
    first.start()
    assert started.wait(5)
    health.status = real_status
    health.rate_limited("zendesk", 30.0, "Zendesk answered 429")  # drops what zendesk had
    if forgotten != "zendesk":
        health._forget(forgotten)  # a change of another upstream, or of all, meanwhile
    outcome: list[str] = []

    def call() -> None:
        try:
            health.check("zendesk", "Zendesk")
            outcome.append("sent")
        except UpstreamPaused:
            outcome.append("paused")

    waiting = threading.Thread(target=call)
    waiting.start()
    time.sleep(0.1)  # the call waits for the read under way
    release.set()
    first.join(5)
    waiting.join(5)
    assert outcome == ["paused"]
