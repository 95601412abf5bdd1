"""Identity resolution side by side on PostgreSQL: it waits only for what it touches.

Workers in several processes resolve at once. Two records of different customers must not
wait for each other; two records of one identity must, so that they make one customer; a
merge under way must not lose a record that another worker is giving to the merged customer;
and an admin's change to customers waits for every resolution under way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from middleware.customers.edits import erase_customer
from middleware.customers.identity import Resolution, lock_some, record_lock, resolve_customer
from middleware.customers.timeline import append
from middleware.installation import Installation
from middleware.interaction import Identity, Interaction
from middleware.process.pipeline import Prepared, record_event, thread_resolution
from middleware.store.tables import customers
from tests.customers.test_identity import (
    CHANNELS,
    REGION,
    TYPES,
    WHEN,
    email,
    interaction_row,
    live_customers,
    receive,
)
from tests.customers.test_identity import engine as engine  # noqa: F401 (the fixture)
from tests.values import PG_URL

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="CARRYOVER_TEST_DATABASE_URL is not set"),
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]
WAITING_S = 0.5  # long enough for a resolution that does not wait to have finished
DONE_S = 10.0
ANN = email("ann@example.com")
BOB = email("bob@example.com")
BOBBY = Identity("twitter", "@Bobby")


@pytest.fixture
def elsewhere() -> Iterator[Callable[..., Future[Any]]]:
    """Run a function in another thread, as another worker's transaction."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit


def resolve_in(conn: Any, *found: Identity, ref: str = "test:ticket:open") -> Resolution:
    """Resolve identities in the caller's transaction, which stays open."""
    return resolve_customer(conn, TYPES.normalise_all(found, REGION), ref, types=TYPES)


def still_waiting(future: Future[Any]) -> bool:
    """Tell whether another transaction's work is still waiting after WAITING_S."""
    try:
        future.result(timeout=WAITING_S)
    except TimeoutError:
        return True
    return False


def comment_on(engine: Engine, ticket: str) -> Resolution:
    """Record a comment that carries no identity on a ticket, as the pipeline does."""
    comment = Interaction(
        source="test", external_id=f"{ticket}#1", kind="comment", channel=CHANNELS["ticket"],
        occurred_at=WHEN, updated_at=WHEN, record_ref=f"test:comment:{ticket}#1",
    )  # fmt: skip
    with engine.begin() as conn:
        lock_some(conn, [record_lock(comment.source, comment.kind, comment.external_id)])
        resolution = thread_resolution(conn, comment)
        append(conn, comment, resolution.customer_id, resolution.candidates)
    return resolution


def ticket(number: str, *found: Identity) -> Prepared:
    """Return a ticket event made ready to record, carrying these identities."""
    identities = TYPES.normalise_all(found, REGION)
    interaction = Interaction(
        source="zendesk", external_id=number, kind="ticket", channel="email", occurred_at=WHEN,
        updated_at=WHEN, record_ref=f"zendesk:ticket:{number}", identities=identities,
    )  # fmt: skip
    return Prepared(f"ticket {number}", identities, interaction=interaction)


def record_alone(core: Installation, prepared: Prepared) -> None:
    """Record an event in a transaction of its own, as a worker does."""
    with core.engine.begin() as conn:
        record_event(core, conn, core.registry.instances["zendesk"], prepared, notes=False)


def test_records_of_different_customers_are_resolved_side_by_side(engine, elsewhere):
    """A resolution under way does not hold up one of another customer."""
    with engine.begin() as conn:
        ann = resolve_in(conn, ANN)
        bob = elsewhere(receive, engine, "ticket", "2", BOB).result(timeout=DONE_S)
    assert bob.customer_id not in (None, ann.customer_id)
    assert sorted(live_customers(engine)) == sorted([ann.customer_id, bob.customer_id])


def test_two_records_of_one_identity_wait_and_make_one_customer(engine, elsewhere):
    """The second record waits for the first one's commit, then joins its customer."""
    with engine.begin() as conn:
        first = resolve_in(conn, ANN)
        second = elsewhere(receive, engine, "ticket", "2", ANN)
        assert still_waiting(second)
    assert second.result(timeout=DONE_S).customer_id == first.customer_id
    assert live_customers(engine) == [first.customer_id]


def test_a_record_of_a_customer_being_merged_goes_to_the_merged_customer(engine, elsewhere):
    """Bob's twitter record waits for the merge of Bob into Ann, and is then Ann's."""
    ann = receive(engine, "ticket", "1", ANN)
    bob = receive(engine, "ticket", "2", BOB, BOBBY)
    with engine.begin() as conn:
        assert resolve_in(conn, ANN, BOB).customer_id == ann.customer_id  # merges Bob into Ann
        later = elsewhere(receive, engine, "message", "3", BOBBY)
        assert still_waiting(later)  # it read Bob as the holder; Bob's row is locked
    assert later.result(timeout=DONE_S).customer_id == ann.customer_id
    assert interaction_row(engine, "message", "3").customer_id == ann.customer_id
    assert live_customers(engine) == [ann.customer_id] != [bob.customer_id]


def test_a_comment_on_a_ticket_whose_customer_is_being_merged_follows_the_merge(engine, elsewhere):
    """A comment carries no identity: it takes its ticket's customer, once the merge is over."""
    ann = receive(engine, "ticket", "1", ANN)
    receive(engine, "ticket", "2", BOB)
    with engine.begin() as conn:
        resolve_in(conn, ANN, BOB)
        comment = elsewhere(comment_on, engine, "2")
        assert still_waiting(comment)
    assert comment.result(timeout=DONE_S).customer_id == ann.customer_id
    assert interaction_row(engine, "comment", "2#1").customer_id == ann.customer_id


def test_erasure_waits_for_resolutions_under_way_and_they_wait_for_it(engine, elsewhere):
    """An admin's change may touch any customer: it takes the whole lock, both ways."""
    bob = receive(engine, "ticket", "2", BOB)
    with engine.begin() as conn:
        resolve_in(conn, ANN)
        erased = elsewhere(lambda: _erase(engine, bob.customer_id))
        assert still_waiting(erased)
    erased.result(timeout=DONE_S)
    with engine.begin() as conn:
        erase_customer(conn, live_customers(engine)[0])
        again = elsewhere(receive, engine, "ticket", "3", BOB)
        assert still_waiting(again)
    assert again.result(timeout=DONE_S).customer_id is not None
    assert len(live_customers(engine)) == 1


def _erase(engine: Engine, customer_id: int | None) -> None:
    assert customer_id is not None
    with engine.begin() as conn:
        erase_customer(conn, customer_id)


def test_two_events_of_one_record_are_recorded_one_after_the_other(core, elsewhere):
    """Two workers with events of one new ticket, requested by two different people: the
    second waits for the first's commit and updates its row, rather than failing to insert
    a second one."""
    with core.engine.begin() as conn:
        record_event(core, conn, core.registry.instances["zendesk"], ticket("5", ANN),
                     notes=False)  # fmt: skip
        second = elsewhere(record_alone, core, ticket("5", BOB))
        assert still_waiting(second)
    second.result(timeout=DONE_S)
    assert interaction_row(core.engine, "ticket", "5").customer_id is not None


def test_a_named_customer_is_not_asked_for_a_name_again(engine):
    """The row lock reads whether each holder has a name: a named customer's next record
    updates no name, and an unnamed one's gets the name it brings."""
    named = receive(engine, "ticket", "1", ANN, name="Ann Example").customer_id
    unnamed = receive(engine, "ticket", "2", BOB).customer_id
    updates: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("UPDATE CUSTOMERS"):
            updates.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    assert receive(engine, "ticket", "3", ANN, name="Ann E.").customer_id == named
    assert updates == []
    assert receive(engine, "ticket", "4", BOB, name="Bob Example").customer_id == unnamed
    assert len(updates) == 1
    with engine.connect() as conn:
        names = dict(conn.execute(select(customers.c.id, customers.c.name)).all())
    assert names == {named: "Ann Example", unnamed: "Bob Example"}
