"""The inbox: group commits keep every delivery, once, and answer each sender correctly."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DataError, OperationalError

from middleware.ingest.inbox import DeliveryInbox, _Pending
from middleware.integrations.plugin import InboundRequest
from middleware.store.queue import DEAD
from middleware.store.tables import deliveries, delivery_keys, make_engine, reading, utcnow
from tests.payloads import fixture_bytes


@pytest.fixture
def inbox(database_url):
    """An inbox on an empty store."""
    engine = make_engine(database_url)
    yield DeliveryInbox(engine)
    engine.dispose()


def request(n: int) -> InboundRequest:
    return InboundRequest(path="/hooks/zendesk", url="u", headers={}, body=b'{"n": %d}' % n)


def count(inbox: DeliveryInbox, table) -> int:
    with inbox.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_concurrent_deliveries_are_each_kept_once(inbox):
    """40 threads at once, each key sent twice: 20 deliveries kept, every duplicate told so."""
    results: dict[int, int | None] = {}
    start = threading.Barrier(40)

    def send(n: int) -> None:
        start.wait()
        results[n] = inbox.accept("zendesk", request(n), [f"event:{n % 20}"])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    kept = [d for d in results.values() if d is not None]
    assert len(kept) == 20 and len(set(kept)) == 20
    assert count(inbox, deliveries) == 20
    assert count(inbox, delivery_keys) == 20
    with inbox.engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.event_keys)).all()
    assert {row.id for row in rows} == set(kept)


def test_a_delivery_with_some_keys_seen_keeps_only_the_new_ones(inbox):
    """A delivery carrying a seen key and a new one is kept with the new key only."""
    assert inbox.accept("zendesk", request(1), ["a"]) is not None
    second = inbox.accept("zendesk", request(2), ["a", "b"])
    assert second is not None
    assert inbox.get(second).event_keys == '["b"]'
    assert inbox.accept("zendesk", request(3), ["a", "b"]) is None
    assert count(inbox, deliveries) == 2


def pending(key: str) -> _Pending:
    now = utcnow()
    values = {
        "plugin": "zendesk", "received_at": now, "headers": "{}", "body": b"{}",
        "status": "pending", "attempts": 0, "next_attempt_at": now, "trail": "[]",
    }  # fmt: skip
    return _Pending(values, [key])


def test_a_group_keeps_its_new_deliveries_and_drops_its_duplicates(inbox):
    """Seen keys, and a key twice in one group, drop those deliveries; the others are kept."""
    inbox._commit_group([pending("old")])
    group = [pending("new-1"), pending("old"), pending("new-2"), pending("new-1")]
    inbox._commit_group(group)
    kept, seen, other, twice = group
    assert all(item.committed and item.done and item.error is None for item in group)
    assert seen.delivery_id is None and twice.delivery_id is None
    assert kept.delivery_id is not None and other.delivery_id is not None
    with inbox.engine.connect() as conn:
        keys = dict(conn.execute(select(delivery_keys.c.key, delivery_keys.c.delivery_id)).all())
    assert keys["new-1"] == kept.delivery_id and keys["new-2"] == other.delivery_id
    assert count(inbox, deliveries) == 3


@pytest.fixture
def sqlite_inbox(tmp_path, sqlite_template):
    """An inbox on an empty SQLite store, whatever store the other tests run on."""
    target = tmp_path / "carryover.db"
    target.write_bytes(sqlite_template.read_bytes())
    engine = make_engine(f"sqlite:///{target}")
    yield DeliveryInbox(engine)
    engine.dispose()


def test_on_sqlite_a_key_with_a_nul_is_kept_whole(sqlite_inbox):
    """A NUL inside a key is no end of it: "a\\x00b" and "a" are two keys.

    (The hooks refuse such keys with 400; PostgreSQL's text cannot hold a NUL at all.)
    """
    inbox = sqlite_inbox
    first, second = pending("a\x00b"), pending("a")
    inbox._commit_group([first])
    inbox._commit_group([second])
    assert first.delivery_id is not None and second.delivery_id is not None
    with inbox.engine.connect() as conn:
        keys = set(conn.execute(select(delivery_keys.c.key)).scalars())
    assert keys == {"a\x00b", "a"}


def test_on_sqlite_a_group_of_new_deliveries_is_one_statement(sqlite_inbox):
    """One INSERT commits the group and its keys; its trigger stays on the inbox's connection."""
    inbox = sqlite_inbox
    engine = inbox.engine
    inbox._commit_group([pending("first")])  # opens the inbox's own connection
    statements: list[str] = []
    inbox._own.driver_connection.set_trace_callback(statements.append)
    group = [pending(f"key-{n}") for n in range(3)]
    inbox._commit_group(group)
    # (SQLite traces the statement again for each run of its trigger: one distinct text.)
    assert len(set(statements)) == 1 and statements[0].startswith("INSERT INTO deliveries")
    ids = [item.delivery_id for item in group]
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.event_keys)).all()
        keys = dict(conn.execute(select(delivery_keys.c.key, delivery_keys.c.delivery_id)).all())
    assert {row.id: row.event_keys for row in rows if row.id in ids} == {
        item.delivery_id: f'["{item.keys[0]}"]' for item in group
    }
    assert {keys[item.keys[0]] for item in group} == set(ids)
    inbox.close()
    held = [engine.connect() for _ in range(3)]  # every pooled connection, and a new one
    for conn in held:
        with conn.begin():
            conn.execute(deliveries.insert().values(**pending("x").values, event_keys='["x"]'))
    assert count(inbox, delivery_keys) == 4  # no trigger recorded keys for those
    for conn in held:
        conn.close()


def failing_commit(monkeypatch, error: Exception) -> None:
    """Make any group commit holding the delivery keyed "bad" raise `error`."""
    real_commit = DeliveryInbox._commit

    def commit(self, batch):
        if any(item.keys == ["bad"] for item in batch):
            raise error
        real_commit(self, batch)

    monkeypatch.setattr(DeliveryInbox, "_commit", commit)


def test_one_refused_delivery_does_not_fail_the_others_in_its_group(inbox, monkeypatch):
    """When the store refuses one delivery's data, the others of its group are committed."""
    failing_commit(monkeypatch, DataError("INSERT", {}, Exception("value too long")))
    good, bad = pending("good"), pending("bad")
    inbox._commit_group([good, bad])
    assert good.committed and good.delivery_id is not None and good.error is None
    assert not bad.committed and isinstance(bad.error, DataError)
    assert good.done and bad.done
    assert count(inbox, deliveries) == 1


@pytest.mark.parametrize(
    "error",
    [OperationalError("BEGIN", {}, Exception("database is locked")), ValueError("unexpected")],
)
def test_a_failed_group_commit_fails_every_sender(inbox, monkeypatch, error):
    """A store or program error fails every delivery of the group: none is told it was kept."""
    failing_commit(monkeypatch, error)
    good, bad = pending("good"), pending("bad")
    inbox._commit_group([good, bad])
    for item in (good, bad):
        assert item.done and not item.committed
        assert item.error is not None
    assert count(inbox, deliveries) == 0


def test_a_sender_whose_group_failed_gets_503_not_200(client, monkeypatch, hooks):
    """The hook answers 503 when its delivery could not be committed, whatever the error."""

    def commit(self, batch):
        raise ValueError("unexpected")

    monkeypatch.setattr(DeliveryInbox, "_commit", commit)
    response = hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_the_inbox_reads_its_newest_rows_counts_and_dead_letters(inbox):
    """Newest first by plugin and status, one row by id, counts by status, and the last arrival."""
    ids = [inbox.accept("zendesk", request(n), [f"z{n}"]) for n in range(3)]
    other = inbox.accept("twilio", request(9), ["t9"])
    with inbox.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.id == ids[0]).values(status=DEAD))
    with reading(inbox.engine) as conn:
        assert [r.id for r in inbox.newest(conn)] == [other, ids[2], ids[1], ids[0]]
        assert [r.id for r in inbox.newest(conn, "zendesk", limit=2)] == [ids[2], ids[1]]
        assert [r.id for r in inbox.newest(conn, status=DEAD)] == [ids[0]]
        assert inbox.stored(conn, other).plugin == "twilio"
        assert inbox.stored(conn, 10**9) is None
        assert inbox.count_by_status(conn) == {"pending": 3, DEAD: 1}
        assert inbox.dead_count(conn) == 1
        newest = inbox.stored(conn, ids[2]).received_at
        assert inbox.last_received_at(conn, "zendesk") == newest
        assert inbox.last_received_at(conn, "salesforce") is None
