"""Deliveries recorded at once: one transaction for several, each settled in it; a failure
stays the failing delivery's own."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from sqlalchemy import event, select

from middleware.customers import identity
from middleware.process import pipeline
from middleware.process import worker as worker_module
from middleware.process.pipeline import Ready, record_deliveries
from middleware.store.queue import DONE, PENDING
from middleware.store.tables import deliveries, interactions
from tests.customers.test_identity import live_customers
from tests.customers.test_identity_locks import ANN, BOB, still_waiting, ticket
from tests.payloads import cti_body, zendesk_event
from tests.values import PG_URL

TICKETS = ["6001", "6002", "6003", "6004", "6005"]


def post_tickets(hooks) -> None:
    """Post one new ticket per number, all of Ann's."""
    for number in TICKETS:
        body = zendesk_event("ticket_created__mail.json", id=number, event_id=f"ev-{number}")
        assert hooks.zendesk(body).status_code == 200


def stored(core):
    """Return the deliveries in order, and the tickets recorded, by number."""
    with core.engine.connect() as conn:
        rows = conn.execute(select(deliveries).order_by(deliveries.c.id)).all()
        recorded = conn.execute(select(interactions.c.external_id, interactions.c.customer_id))
        return rows, dict(recorded.all())


def statements_of_a_drain(core, worker) -> list[str]:
    """Drain the worker; return the statements it sent, each on one line, upper case."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(" ".join(statement.split()).upper())

    event.listen(core.engine, "before_cursor_execute", record)
    try:
        worker.drain()
    finally:
        event.remove(core.engine, "before_cursor_execute", record)
    return seen


def test_deliveries_are_recorded_together_each_settled_with_its_record(
    hooks, core, worker, fake_zendesk, monkeypatch
):
    """Five tickets claimed together are recorded in one go and settled in one statement:
    each done, with its own trail."""
    batches: list[int] = []

    def counted(core, batch, finish):
        batches.append(len(batch))
        return record_deliveries(core, batch, finish)

    monkeypatch.setattr(worker_module, "record_deliveries", counted)
    post_tickets(hooks)
    settles: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("UPDATE DELIVERIES SET STATUS"):
            settles.append(statement)

    event.listen(core.engine, "before_cursor_execute", record)
    worker.drain()
    assert batches == [5]
    assert len(settles) == 1  # the five settled in one statement
    rows, recorded = stored(core)
    assert [r.status for r in rows] == [DONE] * 5
    assert sorted(recorded) == TICKETS
    assert len(set(recorded.values())) == 1  # all Ann's
    for row, number in zip(rows, TICKETS, strict=True):
        assert row.trail.count("processed") == 1
        assert number in row.trail


def test_a_batch_reads_its_holders_once_and_locks_each_customer_once(
    hooks, core, worker, fake_zendesk
):
    """Five tickets of one customer recorded together: the holders of their identities are
    read in one query, and the customer's row is locked once (PostgreSQL), not per ticket."""
    post_tickets(hooks)
    seen = statements_of_a_drain(core, worker)
    holders = [s for s in seen if s.startswith("SELECT IDENTITIES.") and "FROM IDENTITIES" in s
               and "IDENTITIES.CUSTOMER_ID, IDENTITIES.SHARED" in s]  # fmt: skip
    customer_locks = [s for s in seen if s.startswith("SELECT CUSTOMERS.ID, CUSTOMERS.MERGED_INTO")]
    assert len(holders) == 1
    assert len(customer_locks) == (1 if core.engine.dialect.name == "postgresql" else 0)
    rows, recorded = stored(core)
    assert [r.status for r in rows] == [DONE] * 5
    assert len(set(recorded.values())) == 1


def test_a_holder_merged_away_before_the_batch_locks_it_is_read_again(
    hooks, core, worker, fake_zendesk, monkeypatch
):
    """When the batch's one lock of its holders finds one merged away (another worker's
    merge committed first), what it read is forgotten, and each ticket reads its holders
    again and locks them: all five are recorded on Ann, once each."""
    post_tickets(hooks)
    worker.drain()  # Ann exists now, holding the identities
    for number in TICKETS:
        body = zendesk_event("ticket_created__mail.json", id=f"9{number}", event_id=f"2-{number}")
        assert hooks.zendesk(body).status_code == 200
    lock_customers = identity.lock_customers
    answers: list[bool] = []

    def merged_away_once(conn, ids, named=None):
        answer = lock_customers(conn, ids, named) and bool(answers)
        answers.append(answer)
        return answer

    monkeypatch.setattr(identity, "lock_customers", merged_away_once)
    worker.drain()
    rows, recorded = stored(core)
    assert [r.status for r in rows] == [DONE] * 10
    assert len(recorded) == 10 and len(set(recorded.values())) == 1
    assert answers[0] is False and len(answers) > 1  # read again, and locked again


def test_a_batch_reads_its_stored_records_at_once_and_sees_its_own_changes(
    hooks, core, worker, fake_zendesk
):
    """A ticket, a call's start and end, and another call, recorded together: their stored
    records are read in one query, none on its own, and the call's end finds the row its
    start stored moments before in the same batch (one row, ended)."""
    post_tickets(hooks)
    assert hooks.cti(cti_body("newCall.json", callId="pbx-call-1")).status_code == 200
    assert hooks.cti(cti_body("hangup.json", callId="pbx-call-1")).status_code == 200
    assert hooks.cti(cti_body("newCall.json", callId="pbx-call-2")).status_code == 200
    seen = statements_of_a_drain(core, worker)
    full_rows = [
        s for s in seen if s.startswith("SELECT INTERACTIONS.ID, INTERACTIONS.CUSTOMER_ID")
    ]
    at_once = [s for s in full_rows if "INTERACTIONS.EXTERNAL_ID) IN" in s]
    by_key = re.compile(r"WHERE INTERACTIONS.SOURCE = \S+ AND INTERACTIONS.KIND = \S+ AND "
                        r"INTERACTIONS.EXTERNAL_ID = \S+( FOR UPDATE)?$")  # fmt: skip
    one_by_one = [s for s in full_rows if by_key.search(s)]
    assert len(at_once) == 1 and one_by_one == []
    rows, _ = stored(core)
    assert [r.status for r in rows] == [DONE] * 8
    with core.engine.connect() as conn:
        calls = conn.execute(
            select(interactions.c.external_id, interactions.c.status)
            .where(interactions.c.kind == "call")
            .order_by(interactions.c.external_id)
        ).all()
    assert [c.external_id for c in calls] == ["pbx-call-1", "pbx-call-2"]
    assert calls[0].status == "completed" and calls[1].status != "completed"


def test_a_delivery_that_fails_while_recorded_with_others_fails_alone(
    hooks, core, worker, fake_zendesk, monkeypatch
):
    """One ticket whose recording fails undoes the batch; the others are then recorded one
    by one, once each, and the failing one waits for a retry with its error and no record."""
    record_event = pipeline.record_event

    def failing_on_6003(core, conn, plugin, prepared, *args, **kwargs):
        if prepared.interaction is not None and prepared.interaction.external_id == "6003":
            raise RuntimeError("the store refused ticket 6003")
        return record_event(core, conn, plugin, prepared, *args, **kwargs)

    monkeypatch.setattr(pipeline, "record_event", failing_on_6003)
    post_tickets(hooks)
    worker.drain(rounds=1)
    rows, recorded = stored(core)
    assert [r.status for r in rows] == [DONE, DONE, PENDING, DONE, DONE]
    assert "the store refused ticket 6003" in rows[2].last_error
    assert sorted(recorded) == ["6001", "6002", "6004", "6005"]
    assert [r.trail.count("processed") for r in rows] == [1, 1, 0, 1, 1]


def test_a_delivery_whose_lease_was_taken_over_is_left_and_the_others_recorded(
    hooks, core, worker, fake_zendesk, monkeypatch
):
    """A lease lost while a batch is recorded leaves that delivery to its new owner."""
    post_tickets(hooks)
    finish = worker._finish

    def taken_over(conn, recorded):
        if 2 in [row.id for row, _steps in recorded]:
            taken = deliveries.update().where(deliveries.c.id == 2)
            conn.execute(taken.values(lease_owner="other"))
        finish(conn, recorded)

    monkeypatch.setattr(worker, "_finish", taken_over)
    worker.drain(rounds=1)
    rows, recorded = stored(core)
    assert [r.status for r in rows] == [DONE, PENDING, DONE, DONE, DONE]
    assert sorted(recorded) == ["6001", "6003", "6004", "6005"]


@pytest.mark.skipif(not PG_URL, reason="CARRYOVER_TEST_DATABASE_URL is not set")
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_batches_of_the_same_customers_in_opposite_order_wait_not_deadlock(core):
    """Two workers' batches of Ann's and Bob's tickets, in opposite orders: the second waits
    for the whole first (every lock is taken at once, sorted) and neither fails."""
    zendesk = core.registry.instances["zendesk"]

    def batch(*prepared):
        return [Ready(SimpleNamespace(id=None), zendesk, (p,)) for p in prepared]

    first_recorded, go_on = threading.Event(), threading.Event()

    def pausing(_conn, _recorded):
        first_recorded.set()
        assert go_on.wait(10)

    def settled(_conn, _recorded):
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        one = pool.submit(record_deliveries, core, batch(ticket("1", ANN), ticket("2", BOB)),
                          pausing)  # fmt: skip
        assert first_recorded.wait(10)
        other = pool.submit(record_deliveries, core,
                            batch(ticket("3", BOB), ticket("4", ANN)), settled)  # fmt: skip
        assert still_waiting(other)
        go_on.set()
        one.result(timeout=10)
        other.result(timeout=10)
    with core.engine.connect() as conn:
        found = conn.execute(select(interactions.c.external_id, interactions.c.customer_id))
        owners = dict(found.all())
    assert owners["1"] == owners["4"] and owners["2"] == owners["3"] != owners["1"]
    assert len(live_customers(core.engine)) == 2
