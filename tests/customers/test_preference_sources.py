"""Where preferred channels came from: migration 0016 and the rules of customers/preferences."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, select, text

from middleware.customers.preferences import known_channels, record_preference
from middleware.store.tables import _alembic_config, customers, upgrade, utcnow

SOURCE_COLUMNS = {"preferred_source", "preferred_at", "preferred_caused_by"}


def columns(engine) -> set[str]:
    """Return the customers table's column names."""
    return {c["name"] for c in inspect(engine).get_columns("customers")}


def test_migration_0016_marks_earlier_preferences_as_an_admins_and_goes_back(core):
    """A preference set before 0016 becomes an admin's; downgrading drops the source columns."""
    command.downgrade(_alembic_config(core.engine), "0014")
    try:
        assert columns(core.engine) & SOURCE_COLUMNS == set()
        with core.engine.begin() as conn:
            conn.execute(text("INSERT INTO customers (name, created_at, preferred_channels) "
                              "VALUES ('Ann', :at, '[\"sms\"]'), ('Bob', :at, NULL)"),
                         {"at": utcnow()})  # fmt: skip
    finally:
        upgrade(core.engine)
    assert columns(core.engine) >= SOURCE_COLUMNS
    with core.engine.connect() as conn:
        rows = conn.execute(
            select(
                customers.c.name, customers.c.preferred_source, customers.c.preferred_caused_by
            ).order_by(customers.c.name)
        )
        assert [tuple(r) for r in rows] == [("Ann", "admin", "admin"), ("Bob", None, None)]


def test_known_channels_keep_order_and_set_the_others_apart():
    """Known channels come once each, in order; the rest are returned to be said."""
    assert known_channels(["sms", "pigeon", "email", "sms"]) == (("sms", "email"), ("pigeon",))


def test_a_record_naming_no_channel_changes_nothing(core):
    """A survey whose channels are all unknown leaves the customer's preference alone."""
    with core.engine.begin() as conn:
        ann = conn.execute(
            customers.insert().values(name="Ann", created_at=utcnow())
        ).inserted_primary_key[0]
        said = record_preference(conn, ann, ("pigeon",), "generic:survey:r1", utcnow())
        row = conn.execute(select(customers).where(customers.c.id == ann)).one()
    assert said == "preferred channels unchanged (none named); dropped 'pigeon' (not channels)"
    assert (row.preferred_channels, row.preferred_source) == (None, None)
