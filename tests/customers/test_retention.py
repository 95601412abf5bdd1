"""Retention: old raw webhooks and timeline items are purged, in batches, and the run is shown."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from sqlalchemy import func, select, update

from middleware.cli import main
from middleware.customers.retention import count_purgeable, last_purge, purge, purge_due
from middleware.process.worker import Worker
from middleware.store.tables import (
    customers,
    deliveries,
    delivery_customers,
    delivery_keys,
    identities,
    inserted_id,
    interactions,
    merges,
    reading,
    utcnow,
    writes,
)
from tests.actions import Hooks
from tests.payloads import fixture_bytes, twilio_fields

KEEP = {"deliveries_days": 30, "timeline_days": 730}


def count(core, table, *where) -> int:
    with reading(core.engine) as conn:
        query = select(func.count()).select_from(table)
        return int(conn.execute(query.where(*where) if where else query).scalar() or 0)


def age(core, table, ids, **columns) -> None:
    """Set columns of rows (times as days ago) as if they had happened that long ago."""
    now = utcnow()
    values = {k: (now - timedelta(days=v) if isinstance(v, int) else v) for k, v in columns.items()}
    with core.engine.begin() as conn:
        conn.execute(update(table).where(table.c.id.in_(ids)).values(**values))


def ids_of(core, table) -> list[int]:
    with reading(core.engine) as conn:
        return list(conn.execute(select(table.c.id).order_by(table.c.id)).scalars())


@pytest.fixture
def traffic(client, worker, fake_zendesk) -> None:
    """Ann writes twice (the second ticket gets a note), then someone calls (two webhooks)."""
    hooks = Hooks(client)
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    hooks.twilio(twilio_fields("call_started__ringing.form", From="+14155550199"))
    hooks.twilio(twilio_fields("call_ended__completed.form", From="+14155550199"))
    worker.drain()


def test_done_and_dead_webhooks_past_the_period_go_and_the_rest_stay(core, traffic):
    """A done webhook finished 31 days ago and a dead one last tried then go, with their keys;
    one dead 10 days ago, and one still waiting since long ago, stay."""
    done, dead_old, dead_recent, waiting = ids_of(core, deliveries)
    age(core, deliveries, [done], next_attempt_at=31, finished_at=31)
    age(core, deliveries, [dead_old], status="dead", next_attempt_at=31)
    age(core, deliveries, [dead_recent], status="dead", next_attempt_at=10)
    age(core, deliveries, [waiting], status="pending", next_attempt_at=90, received_at=90)
    keys_before = count(core, delivery_keys)

    assert count_purgeable(core.engine, KEEP, utcnow()).deliveries == 2
    removed = purge(core.engine, KEEP)

    assert removed.deliveries == 2 and removed.timeline_items == 0
    assert ids_of(core, deliveries) == [dead_recent, waiting]
    assert count(core, delivery_keys, delivery_keys.c.delivery_id.in_([done, dead_old])) == 0
    assert count(core, delivery_keys) < keys_before
    assert count(core, delivery_customers, delivery_customers.c.delivery_id == done) == 0
    assert count(core, interactions) == 3  # the timeline keeps its own period


def test_a_webhook_done_recently_stays_however_long_ago_it_came(core, traffic):
    """A delivery received 40 days ago but replayed and done yesterday is kept."""
    first = ids_of(core, deliveries)[0]
    age(core, deliveries, [first], received_at=40, next_attempt_at=1, finished_at=1)
    assert purge(core.engine, KEEP).deliveries == 0
    assert first in ids_of(core, deliveries)


def test_timeline_items_unchanged_for_the_period_go_with_their_notes(core, traffic):
    """Ann's two tickets, untouched for 731 days, go with the note written on one; Ann, her
    identities and the call of a moment ago stay."""
    with reading(core.engine) as conn:
        ann = conn.execute(select(identities.c.customer_id).where(
            identities.c.value == "ann.example@example.com")).scalar()  # fmt: skip
        tickets = list(conn.execute(select(interactions.c.id).where(
            interactions.c.customer_id == ann)).scalars())  # fmt: skip
    assert len(tickets) == 2 and count(core, writes) == 1
    identities_before = count(core, identities)
    age(core, interactions, tickets, occurred_at=800, updated_at=731)

    removed = purge(core.engine, KEEP)

    assert (removed.timeline_items, removed.notes, removed.customers) == (2, 1, 0)
    assert count(core, interactions, interactions.c.customer_id == ann) == 0
    assert count(core, writes) == 0 and count(core, interactions) == 1
    assert count(core, customers, customers.c.id == ann) == 1
    assert count(core, identities) == identities_before


def test_an_old_item_with_a_note_still_waiting_is_kept(core, traffic):
    """A note not yet written holds its timeline item back until it is written or dead."""
    noted = ids_of(core, writes)
    with reading(core.engine) as conn:
        item = conn.execute(select(writes.c.interaction_id)).scalar()
    age(core, interactions, ids_of(core, interactions), updated_at=731)
    age(core, writes, noted, status="pending")
    removed = purge(core.engine, KEEP)
    assert removed.timeline_items == 2 and removed.notes == 0
    assert ids_of(core, interactions) == [item] and ids_of(core, writes) == noted


def test_only_customers_with_nothing_left_and_no_merge_go(core):
    """A customer with no identity, item, merge or split goes after the period; a merged one
    (its merge is history shown on the profile) and a recent one stay."""
    now = utcnow()
    old = now - timedelta(days=800)
    with core.engine.begin() as conn:
        made = [
            inserted_id(conn.execute(customers.insert().values(name=name, created_at=at)))
            for name, at in (("empty", old), ("kept", old), ("new", now), ("into", old))
        ]
        empty, merged, new, into = made
        conn.execute(update(customers).where(customers.c.id == merged).values(merged_into=into))
        conn.execute(merges.insert().values(
            from_customer=merged, into_customer=into, caused_by="admin:ada", reason="a test",
            at=old))  # fmt: skip
    removed = purge(core.engine, KEEP)
    assert removed.customers == 1
    assert ids_of(core, customers) == [merged, new, into]
    assert empty not in ids_of(core, customers)


def test_purging_in_small_batches_removes_the_same(core, traffic):
    """Batches of one row remove everything past the period, a transaction each."""
    age(core, deliveries, ids_of(core, deliveries), next_attempt_at=31, finished_at=31)
    age(core, interactions, ids_of(core, interactions), updated_at=731)
    expected = count_purgeable(core.engine, KEEP, utcnow())
    assert purge(core.engine, KEEP, batch=1) == expected
    assert expected.deliveries == 4 and expected.timeline_items == 3 and expected.notes == 1
    assert count(core, deliveries) == count(core, interactions) == count(core, writes) == 0


def test_a_period_of_zero_keeps_for_ever(core, traffic):
    """deliveries_days: 0 and timeline_days: 0 delete nothing, however old."""
    age(core, deliveries, ids_of(core, deliveries), next_attempt_at=3000, finished_at=3000)
    age(core, interactions, ids_of(core, interactions), updated_at=3000)
    forever = {"deliveries_days": 0, "timeline_days": 0}
    assert purge(core.engine, forever).total == 0
    assert count(core, deliveries) == 4 and count(core, interactions) == 3


def test_each_run_is_recorded_and_the_worker_purges_once_an_hour(core, traffic):
    """The worker purges when no purge ran within the hour; the overview reads the last run."""
    age(core, deliveries, ids_of(core, deliveries)[:1], next_attempt_at=31, finished_at=31)
    assert purge_due(core.engine, utcnow())
    worker = Worker(core)
    first = worker.purge_when_due()
    assert first is not None and first.deliveries == 1
    assert worker.purge_when_due() is None  # ran a moment ago, by this or another process
    assert not purge_due(core.engine, utcnow())
    assert purge_due(core.engine, utcnow() + timedelta(hours=1))
    with reading(core.engine) as conn:
        run = last_purge(conn)
    assert run is not None and run.purged == first
    assert abs((utcnow() - run.finished_at).total_seconds()) < 60


def test_the_overview_shows_the_periods_and_the_last_purge(core, admin_client, traffic):
    """Before a purge the overview says none ran; after one, when and what it removed."""
    page = admin_client.get("/admin/").data.decode()
    assert "Raw webhooks are kept 30 days after they are done" in page
    assert "the timeline 730 days after an item last changed" in page
    assert "No purge has run yet" in page
    age(core, deliveries, ids_of(core, deliveries)[:2], next_attempt_at=31, finished_at=31)
    purge(core.engine, KEEP)
    page = admin_client.get("/admin/").data.decode()
    assert "Last purge: " in page and " UTC, removed 2 raw webhooks." in page
    age(core, interactions, ids_of(core, interactions), updated_at=731)
    purge(core.engine, KEEP)
    page = admin_client.get("/admin/").data.decode()
    assert "removed 3 timeline items, 1 note." in page
    purge(core.engine, KEEP)
    assert "nothing was old enough to remove." in admin_client.get("/admin/").data.decode()


@pytest.fixture
def config_file(tmp_path, database_url) -> str:
    """Write a configuration that points the command line at the test store."""
    path = tmp_path / "config.yaml"
    raw = {"database_url": database_url, "retention": {"deliveries_days": 7}}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def test_carryover_purge_counts_in_a_dry_run_and_deletes_when_run(
    core, traffic, config_file, capsys
):
    """`carryover purge --dry-run` says what would go and deletes nothing; without it, it goes."""
    age(core, deliveries, ids_of(core, deliveries)[:3], next_attempt_at=8, finished_at=8)
    assert main(["purge", "--dry-run", "--config", config_file]) == 0
    out = capsys.readouterr().out
    assert "keeping raw webhooks 7 days after they are done or dead" in out
    assert "the timeline 730 days after its last change" in out
    assert ("would remove 3 raw webhooks, 0 timeline items, 0 notes, 0 customers (nothing was "
            "deleted)") in out  # fmt: skip
    assert count(core, deliveries) == 4
    with reading(core.engine) as conn:
        assert last_purge(conn) is None  # a dry run is no purge
    assert main(["purge", "--config", config_file]) == 0
    assert "removed 3 raw webhooks, 0 timeline items" in capsys.readouterr().out
    assert count(core, deliveries) == 1


PURGE_INDEXES = {
    "ix_interactions_updated": "interactions", "ix_delivery_keys_delivery": "delivery_keys",
    "ix_customers_merged_into": "customers",
}  # fmt: skip


def purge_indexes(engine) -> set[str]:
    from sqlalchemy import inspect

    found = {(i["name"], t) for t in set(PURGE_INDEXES.values())
             for i in inspect(engine).get_indexes(t)}  # fmt: skip
    return {name for name, table in found if PURGE_INDEXES.get(name) == table}


def test_migration_0014_adds_the_purge_table_and_indexes_and_takes_them_back(core):
    """Downgrading past 0014 drops purge_runs and the purge's indexes; upgrading restores them."""
    from alembic import command
    from sqlalchemy import inspect

    from middleware.store.tables import _alembic_config, upgrade

    command.downgrade(_alembic_config(core.engine), "0013")
    try:
        assert "purge_runs" not in inspect(core.engine).get_table_names()
        assert purge_indexes(core.engine) == set()
    finally:
        upgrade(core.engine)
    assert "purge_runs" in inspect(core.engine).get_table_names()
    assert purge_indexes(core.engine) == set(PURGE_INDEXES)


def test_the_periods_default_to_30_and_730_days_and_refuse_a_negative():
    """retention defaults suit support data; a negative period names its key."""
    from middleware.config import ConfigError, parse_config

    assert parse_config({}, {}).retention == {"deliveries_days": 30, "timeline_days": 730}
    with pytest.raises(ConfigError, match="retention.timeline_days: must not be negative"):
        parse_config({"retention": {"timeline_days": -1}}, {})
    with pytest.raises(ConfigError, match="retention.days: unknown key"):
        parse_config({"retention": {"days": 30}}, {})


def test_carryover_purge_with_both_periods_zero_deletes_nothing(
    core, traffic, tmp_path, database_url, capsys
):
    """With both periods 0 the command says nothing is purged, and nothing is."""
    path = tmp_path / "forever.yaml"
    raw = {"database_url": database_url,
           "retention": {"deliveries_days": 0, "timeline_days": 0}}  # fmt: skip
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    age(core, deliveries, ids_of(core, deliveries), next_attempt_at=3000, finished_at=3000)
    assert main(["purge", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "keeping raw webhooks for ever" in out and "the timeline for ever" in out
    assert "nothing to purge: both periods are 0 (keep for ever)" in out
    assert count(core, deliveries) == 4
