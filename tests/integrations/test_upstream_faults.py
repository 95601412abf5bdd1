"""Slow and failing upstreams: notes exactly once, pauses for every worker, budgets, leases,
retries by time, and lanes that keep one stalled upstream from holding up the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select, update

from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.zendesk import FakeZendesk
from middleware.installation import Installation, build_installation
from middleware.notes.outbox import ATTEMPTING
from middleware.process.worker import Worker
from middleware.store.queue import DEAD, DONE, NOTE_BUDGET, PENDING, UNKNOWN_OUTCOME
from middleware.store.tables import deliveries, utcnow, writes
from middleware.web.app import create_app
from tests.actions import ConfigFactory
from tests.payloads import cti_body, zendesk_event
from tests.values import SF_ORG, SF_SESSION

GRACE_S = 3.0  # unknown_outcome_grace_s in these tests
TIMEOUT_S = 0.5  # the upstreams' timeout_s in these tests
TICKETS = (5141, 5149, 5158, 5160)


@pytest.fixture
def fake_salesforce() -> Iterator[FakeSalesforce]:
    """Serve a fake Salesforce org whose session the installation uses."""
    with FakeSalesforce(session_id=SF_SESSION, org_id=SF_ORG) as fake:
        yield fake


@pytest.fixture
def faulty_config(make_config: ConfigFactory) -> ConfigFactory:
    """Return the factory of configurations with short timeouts and a short grace."""

    def build(database_url: str, zendesk_url: str, salesforce_url: str, **worker: Any) -> Any:
        """Return a configuration with short timeouts and a short grace, for compressed faults."""
        settings = {"backoff_base_s": 0.0, "lease_s": 30, "unknown_outcome_grace_s": GRACE_S,
                    "poll_interval_s": 0.05, **worker}  # fmt: skip
        return make_config(
            database_url, zendesk_url, {"timeout_s": TIMEOUT_S}, phone=True,
            salesforce={"instance_url": salesforce_url, "timeout_s": TIMEOUT_S},
            worker=settings,
        )  # fmt: skip

    return build


@pytest.fixture
def faulty_core(
    database_url: str,
    fake_zendesk: FakeZendesk,
    fake_salesforce: FakeSalesforce,
    faulty_config: ConfigFactory,
) -> Iterator[Installation]:
    """An installation of Zendesk, Salesforce and the phone, with short timeouts."""
    built = build_installation(faulty_config(database_url, fake_zendesk.url, fake_salesforce.url))
    yield built
    built.dispose()


def another_process(core: Installation) -> Installation:
    """Build a second installation on the same store, as another worker process would."""
    return build_installation(core.config)


def the_write(core: Installation, write_id: int) -> Any:
    with core.engine.connect() as conn:
        return conn.execute(select(writes).where(writes.c.id == write_id)).one()


def write_rows(core: Installation) -> list[Any]:
    with core.engine.connect() as conn:
        return list(conn.execute(select(writes).order_by(writes.c.id)))


def notes_on(target: str, ref: str, zendesk: FakeZendesk, salesforce: FakeSalesforce) -> list:
    """Return the notes Carryover wrote on a ticket or case, as the upstream has them."""
    if target == "zendesk":
        return zendesk.notes(int(ref))
    return [
        c for c in salesforce.comments(ref) if "[Carryover ref " in (c.get("CommentBody") or "")
    ]


def writes_sent(fake: Any) -> list[tuple]:
    """Return the note writes an upstream received (Zendesk PUTs, Salesforce comment POSTs)."""
    return [r for r in fake.requests_log if r[0] in ("PUT", "POST") and "/oauth2/" not in r[1]]


def apply_late(monkeypatch: pytest.MonkeyPatch, fake: Any, delay_s: float) -> list[float]:
    """Make the upstream apply each write `delay_s` after it arrived, and only then answer.

    Returns the monotonic times at which writes were applied.
    """
    applied: list[float] = []
    original: Callable[..., Any] = fake._api

    def late(request: Any, received: float) -> Any:
        if request.method in ("PUT", "POST"):
            time.sleep(delay_s)
            answer = original(request, received)
            applied.append(time.monotonic())
            return answer
        return original(request, received)

    monkeypatch.setattr(fake, "_api", late)
    return applied


def later(seconds: float) -> Any:
    """Move the clock `seconds` ahead (it keeps ticking from there)."""
    return time_machine.travel(datetime.now(UTC) + timedelta(seconds=seconds), tick=True)


def make_due(core: Installation) -> None:
    """Make every queued row due now (the upstream pauses stay as they are)."""
    past = utcnow() - timedelta(seconds=1)
    with core.engine.begin() as conn:
        conn.execute(update(writes).values(next_attempt_at=past))
        conn.execute(update(deliveries).values(next_attempt_at=past))


# -- 1. an answer that never came is not a "no" -------------------------------------------


@pytest.mark.parametrize("target", ["zendesk", "salesforce"])
def test_a_write_applied_after_the_timeout_is_found_not_written_again(
    faulty_core, fake_zendesk, fake_salesforce, monkeypatch, target, queue_note
):
    """A write the upstream applies after the client gave up is looked for after the grace."""
    fake = fake_zendesk if target == "zendesk" else fake_salesforce
    ref = "5149" if target == "zendesk" else fake_salesforce.add_case("Card charged twice")
    write_id = queue_note(faulty_core, target, ref)
    applied = apply_late(monkeypatch, fake, delay_s=TIMEOUT_S * 3)
    worker = Worker(faulty_core, name="w")

    worker.drain()  # the write times out: its outcome is unknown
    row = the_write(faulty_core, write_id)
    assert (row.status, row.waiting_for) == (ATTEMPTING, UNKNOWN_OUTCOME)
    assert abs((row.next_attempt_at - row.attempted_at).total_seconds() - GRACE_S) < 1.0
    assert "looking for the note" in row.last_error

    make_due(faulty_core)  # taken over before the grace (another worker, a replay): it waits
    worker.drain()
    assert len(writes_sent(fake)) == 1
    assert the_write(faulty_core, write_id).waiting_for == UNKNOWN_OUTCOME
    deadline = time.monotonic() + 5
    while not applied and time.monotonic() < deadline:
        time.sleep(0.05)
    assert applied, "the upstream never applied the write"

    with later(GRACE_S + 1):
        worker.drain()
    assert len(notes_on(target, ref, fake_zendesk, fake_salesforce)) == 1
    assert len(writes_sent(fake)) == 1  # found upstream, not sent again
    row = the_write(faulty_core, write_id)
    assert (row.status, row.waiting_for, row.last_error) == (DONE, None, None)


@pytest.mark.parametrize("target", ["zendesk", "salesforce"])
def test_a_write_lost_on_the_way_is_written_after_the_grace(
    faulty_core, fake_zendesk, fake_salesforce, monkeypatch, target, queue_note
):
    """A write that timed out and never arrived is written again once the grace has passed."""
    fake = fake_zendesk if target == "zendesk" else fake_salesforce
    ref = "5149" if target == "zendesk" else fake_salesforce.add_case("Card charged twice")
    write_id = queue_note(faulty_core, target, ref)
    original = fake._api
    lost: list[bool] = []

    def lose_first(request: Any, received: float) -> Any:
        if request.method in ("PUT", "POST") and not lost:
            lost.append(True)
            time.sleep(TIMEOUT_S * 2)  # held, then dropped unapplied
            raise ConnectionAbortedError("dropped")
        return original(request, received)

    monkeypatch.setattr(fake, "_api", lose_first)
    worker = Worker(faulty_core, name="w")
    worker.drain()
    assert the_write(faulty_core, write_id).status == ATTEMPTING
    with later(GRACE_S + 1):
        make_due(faulty_core)
        faulty_core.health._forget()
        with faulty_core.engine.begin() as conn:  # the pause after the timeout is over too
            conn.execute(update(writes).values(next_attempt_at=utcnow()))
        worker.drain()
        if the_write(faulty_core, write_id).status != DONE:  # the timeout's pause, 1 s
            with later(2):
                worker.drain()
    assert len(notes_on(target, ref, fake_zendesk, fake_salesforce)) == 1
    assert the_write(faulty_core, write_id).status == DONE


def test_a_connection_never_made_is_retried_without_waiting_for_the_grace(
    database_url, faulty_config, queue_note
):
    """No connection means nothing was sent: the write stays pending, with no grace to wait."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    core = build_installation(faulty_config(database_url, closed_url, closed_url))
    try:
        write_id = queue_note(core, "zendesk", "5149")
        Worker(core, name="w").drain()
        row = the_write(core, write_id)
        assert row.status == PENDING and row.waiting_for != UNKNOWN_OUTCOME
        assert row.attempts == 1 and row.attempted_at is None  # tried, known not to be written
        assert "unreachable" in row.last_error
        assert (row.next_attempt_at - utcnow()).total_seconds() < 1.0
        assert core.health.status("zendesk").paused_for(utcnow()) <= 1.0
    finally:
        core.dispose()


# -- 2. a 429 or a run of 5xx pauses the upstream for everyone ------------------------------


def test_a_429_seen_by_one_worker_pauses_the_upstream_for_the_other(
    faulty_core, fake_zendesk, fake_salesforce, queue_note
):
    """After one 429, no process calls Zendesk until Retry-After; Salesforce keeps going."""
    for ticket in TICKETS:
        queue_note(faulty_core, "zendesk", str(ticket))
    case = fake_salesforce.add_case("Card charged twice")
    fake_zendesk.fail_next(429, headers={"Retry-After": "37"}, body={"error": "TooManyRequests"})
    first = Worker(faulty_core, name="first")
    first.drain()
    assert len(writes_sent(fake_zendesk)) == 1  # the one that met the 429

    other_core = another_process(faulty_core)
    try:
        queue_note(other_core, "salesforce", case)
        make_due(other_core)
        Worker(other_core, name="second").drain()
        assert len(writes_sent(fake_zendesk)) == 1  # nothing more reached Zendesk
        assert len(notes_on("salesforce", case, fake_zendesk, fake_salesforce)) == 1
        status = other_core.health.status("zendesk")
        assert 30 < status.paused_for(utcnow()) <= 37
        assert "429" in status.reason
        waiting = [r for r in write_rows(other_core) if r.target == "zendesk"]
        assert all(r.status == PENDING and r.attempts == 0 for r in waiting)

        with later(38):
            Worker(other_core, name="second").drain()
        assert all(fake_zendesk.notes(t) for t in TICKETS)
        assert len(writes_sent(fake_zendesk)) == len(TICKETS) + 1
    finally:
        other_core.dispose()


def test_a_run_of_5xx_backs_off_for_every_item(faulty_core, fake_zendesk, queue_note):
    """During a minute of 503s, Zendesk gets a handful of probes, not one call per item a pass."""
    for ticket in TICKETS * 5:
        queue_note(faulty_core, "zendesk", str(ticket), text=f"note {len(write_rows(faulty_core))}")
    fake_zendesk.fail_next(503, count=10_000, body={"error": "Unavailable"})
    worker = Worker(faulty_core, name="w")
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        for _ in range(60):  # a pass a second for a minute
            worker.run_once()
            clock.shift(1)
    sent = len(fake_zendesk.requests_log)
    assert 3 <= sent <= 8, f"{sent} requests in a minute of 503s"
    status = faulty_core.health.status("zendesk")
    assert status.failures == sent and "503" in status.reason
    assert all(r.status == PENDING for r in write_rows(faulty_core))


# -- 3. the note budget holds across workers ----------------------------------------------


def test_two_workers_racing_never_overshoot_the_note_budget(
    database_url, fake_zendesk, fake_salesforce, make_config, queue_note
):
    """Two workers draining at once write exactly the budget's notes in the minute."""
    config = make_config(database_url, fake_zendesk.url, {"ticket_updates_per_minute": 5},
                         worker={"backoff_base_s": 0.0, "lease_s": 30})  # fmt: skip
    cores = [build_installation(config), build_installation(config)]
    try:
        for i in range(12):
            queue_note(cores[0], "zendesk", str(TICKETS[i % 4]), text=f"note {i}")
        start = threading.Barrier(2)

        def drain(core: Installation, name: str) -> None:
            start.wait()
            Worker(core, name=name).drain()

        threads = [threading.Thread(target=drain, args=(c, f"w{i}")) for i, c in enumerate(cores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(writes_sent(fake_zendesk)) == 5
        held = [r for r in write_rows(cores[0]) if r.status == PENDING]
        assert len(held) == 7
        assert all(r.waiting_for == NOTE_BUDGET and r.last_error is None for r in held)
    finally:
        for core in cores:
            core.dispose()


# -- 4. leases: renewed while alive, taken over within seconds of a death -------------------


def test_a_live_worker_keeps_its_leases_and_a_dead_ones_are_taken_over_within_the_lease(
    database_url, fake_zendesk, fake_salesforce, faulty_config, queue_note
):
    """The heartbeat keeps a busy worker's rows its own; once it stops they free in lease_s."""
    lease_s = 1.5
    config = faulty_config(database_url, fake_zendesk.url, fake_salesforce.url, lease_s=lease_s)
    core = build_installation(config)
    try:
        for ticket in TICKETS:
            queue_note(core, "zendesk", str(ticket))
        busy = Worker(core, name="busy")
        claimed = core.outbox.claim(busy.owner, lease_s, 10)
        assert len(claimed) == len(TICKETS)
        beating = threading.Thread(target=busy.heartbeat, daemon=True)
        beating.start()
        time.sleep(lease_s * 2)  # twice its lease: still its own
        assert core.outbox.claim("other", lease_s, 10) == []

        busy.stop()  # dies: no more heartbeats
        beating.join(5)
        died = time.monotonic()
        while not (taken := core.outbox.claim("other", lease_s, 10)):
            assert time.monotonic() - died < lease_s + 1.0, "not taken over within the lease"
            time.sleep(0.05)
        assert len(taken) == len(TICKETS)
        assert time.monotonic() - died <= lease_s + 0.5
    finally:
        core.dispose()


# -- 5. transient faults never become dead letters ------------------------------------------


def test_a_30_minute_outage_ends_with_no_dead_letter_and_every_note_once(
    faulty_core, fake_zendesk, fake_salesforce, hooks_for, queue_note
):
    """Half an hour of 503s (compressed with a moving clock): all waits, then all is written."""
    for ticket in TICKETS:
        queue_note(faulty_core, "zendesk", str(ticket))
    app = create_app(core=faulty_core)
    client = app.test_client()
    fake_zendesk.add_user(8447388090777, "Bo Bauer", email="bo@example.com")
    body = zendesk_event(
        "ticket_created__mail.json", event_id="outage-1", requester_id="8447388090777"
    )
    assert hooks_for(client).zendesk(body).status_code == 200  # needs a Zendesk lookup
    fake_zendesk.fail_next(503, count=100_000, body={"error": "Unavailable"})
    worker = Worker(faulty_core, name="w")
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        for _ in range(30 * 6):  # a pass every 10 s for 30 minutes
            worker.run_once()
            clock.shift(10)
        with faulty_core.engine.connect() as conn:
            dead = conn.execute(select(func.count()).select_from(writes)
                                .where(writes.c.status == DEAD)).scalar_one()  # fmt: skip
            dead += conn.execute(select(func.count()).select_from(deliveries)
                                 .where(deliveries.c.status == DEAD)).scalar_one()  # fmt: skip
        assert dead == 0
        probes = len(fake_zendesk.requests_log)
        assert probes <= 40, f"{probes} requests during the outage"

        with fake_zendesk._lock:
            fake_zendesk._failures.clear()
        for _ in range(12):  # two minutes after recovery
            worker.run_once()
            clock.shift(10)
    assert all(len(fake_zendesk.notes(t)) == 1 for t in TICKETS)
    assert all(r.status == DONE for r in write_rows(faulty_core))
    with faulty_core.engine.connect() as conn:
        statuses = set(conn.execute(select(deliveries.c.status)).scalars())
    assert statuses == {DONE}


# -- 6. a stalled upstream holds up only its own work ---------------------------------------


def test_a_stalled_upstream_does_not_hold_up_the_phone_or_salesforce(
    faulty_core, fake_zendesk, fake_salesforce, hooks_for, queue_note
):
    """While every Zendesk call hangs, a call's delivery and a Salesforce note go through.

    The ticket's lookup that meets the stall costs the deliveries one timeout; after it,
    Zendesk's deliveries wait for Zendesk and the others flow.
    """
    for ticket in TICKETS:
        queue_note(faulty_core, "zendesk", str(ticket))
    fake_zendesk.delay_seconds = TIMEOUT_S * 4  # longer than the client waits
    worker = Worker(faulty_core, name="lanes")
    worker.start()
    try:
        time.sleep(0.2)  # the Zendesk lane is now waiting on Zendesk
        case = fake_salesforce.add_case("Card charged twice")
        queue_note(faulty_core, "salesforce", case)
        client = create_app(core=faulty_core).test_client()
        fake_zendesk.add_user(8447388090777, "Bo Bauer", email="bo@example.com")
        ticket = zendesk_event("ticket_created__mail.json", event_id="stalled-1",
                               requester_id="8447388090777")  # fmt: skip
        sent = time.monotonic()
        assert hooks_for(client).zendesk(ticket).status_code == 200  # its lookup meets the stall
        assert hooks_for(client).cti(cti_body("newCall.json")).status_code == 200
        faulty_core.wake.set()
        while True:
            with faulty_core.engine.connect() as conn:
                cti = conn.execute(select(deliveries.c.status)
                                   .where(deliveries.c.plugin == "cti")).scalar_one()  # fmt: skip
            done = cti == DONE and notes_on("salesforce", case, fake_zendesk, fake_salesforce)
            if done or time.monotonic() - sent > 5:
                break
            time.sleep(0.02)
        took = time.monotonic() - sent
        assert done, "the phone or Salesforce waited for Zendesk"
        # At most the one Zendesk lookup that found the stall: then Zendesk's work waits.
        assert took < TIMEOUT_S * 2 + 0.5, f"took {took:.2f}s"
        assert not all(fake_zendesk.notes(t) for t in TICKETS)  # Zendesk is still stuck
        with faulty_core.engine.connect() as conn:
            zendesk_rows = select(deliveries.c.status).where(deliveries.c.plugin == "zendesk")
            waiting = conn.execute(zendesk_rows).scalar_one()
        assert waiting == PENDING
    finally:
        fake_zendesk.delay_seconds = 0
        worker.stop()
        worker.join(5)


def test_each_upstream_has_a_lane_and_the_rest_share_one(faulty_core):
    """Zendesk and Salesforce get a lane each; Twilio and the CTI share the last one."""
    lanes = Worker(faulty_core, name="w").lanes()
    assert [lane.upstream for lane in lanes] == ["salesforce", "zendesk", None]
    assert set(lanes[-1].others) == {"salesforce", "zendesk"}
