"""Whose words a text is (said_by) and a record's number: stored, kept, migrated, read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, event, inspect, select, text

from middleware.customers.timeline import append
from middleware.interaction import Interaction
from middleware.notes.summary import build_context
from middleware.store.tables import _alembic_config, customers, interactions, make_engine, upgrade

WHEN = datetime(2025, 1, 6, 8, 30)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """Connect to an empty, migrated store."""
    built = make_engine(database_url)
    yield built
    built.dispose()


def contact(external_id: str, words: str | None, said_by: str | None, minutes: int = 0,
            kind: str = "message", creates: bool = False, number: str | None = None
            ) -> Interaction:  # fmt: skip
    """An inbound contact with a text, `minutes` after WHEN."""
    return Interaction(
        source="test", external_id=external_id, kind=kind, channel="email",
        direction="inbound", occurred_at=WHEN + timedelta(minutes=minutes),
        updated_at=WHEN + timedelta(minutes=minutes), record_ref=f"test:{kind}:{external_id}",
        text=words, said_by=said_by, creates=creates, number=number,
    )  # fmt: skip


def new_customer(engine: Engine) -> int:
    with engine.begin() as conn:
        result = conn.execute(customers.insert().values(name="Bob Sample", created_at=WHEN))
        return int(result.inserted_primary_key[0])


def test_already_said_holds_only_the_customers_own_words(engine):
    """An agent's words and texts of unknown author (older rows) stay out of `said`."""
    customer = new_customer(engine)
    with engine.begin() as conn:
        append(conn, contact("1", "My card was charged twice.", "customer", 1), customer)
        append(conn, contact("2", "Refund one of the two charges.", "agent", 2), customer)
        append(conn, contact("3", "Stored before authors were known.", None, 3), customer)
        append(conn, contact("4", "Any news on my refund?", "customer", 4), customer)
    with engine.connect() as conn:
        said = build_context(conn, customer).said
    assert [s["text"] for s in said] == ["Any news on my refund?", "My card was charged twice."]


def test_the_author_travels_with_the_text_and_the_number_fills_a_gap(engine):
    """A text filled in later brings its author; a creation event's text and author win."""
    customer = new_customer(engine)
    with engine.begin() as conn:
        append(conn, contact("9", None, None, kind="case"), customer)
        append(conn, contact("9", "Refund please.", "customer", 1, kind="case"), customer)
        row = conn.execute(select(interactions)).one()
        assert (row.text, row.said_by, row.number) == ("Refund please.", "customer", None)
        created = contact("9", "Called: refund one charge.", "agent", 2, kind="case",
                          creates=True, number="00001001")  # fmt: skip
        append(conn, created, customer)
        row = conn.execute(select(interactions)).one()
    assert (row.text, row.said_by, row.number) == (
        "Called: refund one charge.", "agent", "00001001",
    )  # fmt: skip


def test_no_text_stores_no_author(engine):
    """said_by describes a text: a record without one has none."""
    with engine.begin() as conn:
        append(conn, contact("5", None, "customer"), None)
        assert conn.execute(select(interactions.c.said_by)).scalar() is None


def test_migration_0009_adds_the_columns_and_leaves_older_rows_unknown(engine):
    """Rows stored before 0009 keep NULL (unknown author, no number); downgrade drops both."""
    config = _alembic_config(engine)
    command.downgrade(config, "0008")
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("interactions")}
        assert not {"number", "said_by"} & columns
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO interactions (source, external_id, kind, channel, occurred_at,"
                    " updated_at, text, identities) VALUES ('zendesk', '7', 'ticket', 'email',"
                    " :at, :at, 'Hello', '[]')"
                ),
                {"at": WHEN},
            )
    finally:
        upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(select(interactions)).one()
    assert (row.text, row.number, row.said_by) == ("Hello", None, None)


def test_a_creation_new_to_the_store_is_one_statement_and_a_stored_one_is_updated(engine):
    """A record's creation is inserted without first looking for it; when an update stored
    the record before, the creation updates that row and makes no second one."""
    customer = new_customer(engine)
    statements: list[str] = []
    with engine.begin() as conn:
        event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        first = append(conn, contact("7", "Where is my order?", "customer", kind="case",
                                     creates=True), customer)  # fmt: skip
        assert first.created and len(statements) == 1
        append(conn, contact("8", None, None, kind="case"), customer)  # an update comes first
        later = append(conn, contact("8", "Refund please.", "customer", 1, kind="case",
                                     creates=True), customer)  # fmt: skip
        rows = conn.execute(select(interactions).order_by(interactions.c.id)).all()
    assert not later.created and later.id == rows[1].id
    assert [(r.external_id, r.text) for r in rows] == [("7", "Where is my order?"),
                                                       ("8", "Refund please.")]  # fmt: skip
