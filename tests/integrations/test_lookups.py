"""Lookups shared by every process: memory, then the store, then the upstream's API."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import responses
from sqlalchemy import create_engine, event, select, update

from middleware.customers.edits import erase_customer
from middleware.customers.retention import purge
from middleware.installation import Installation, build_installation
from middleware.integrations.lookups import LookupStore
from middleware.interaction import Identity, Interaction
from middleware.process.worker import Worker
from middleware.store.tables import identities, lookup_cache, reading, utcnow
from middleware.store.together import Together
from tests.payloads import fixture_bytes
from tests.values import ANN, SF_INSTANCE, ZENDESK_TOKEN

REST = f"{SF_INSTANCE}/services/data/v59.0"
CONTACT_ID = "0037000000xicp7AAA"
CONTACT = {
    "attributes": {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{CONTACT_ID}"},
    "Id": CONTACT_ID,
    "Name": "Ann Example",
    "Email": "ann.example@example.com",
    "Phone": "(415) 555-0142",
    "MobilePhone": None,
    "Description": "Prefers mornings",  # a field enrich() does not read: never kept
}
KEEP = {"deliveries_days": 30, "timeline_days": 730}


@pytest.fixture
def second(database_url, zendesk_api_url, make_config) -> Iterator[Installation]:
    """Build a second installation on the same store: another process of the same deployment."""
    built = build_installation(make_config(database_url, zendesk_api_url, phone=True))
    yield built
    built.dispose()


def ticket_of(user_id: int | str, source: str = "zendesk", kind: str = "zendesk_user"):
    """Return an interaction naming a requester by id only, as a ticket event does."""
    now = utcnow()
    return Interaction(
        source=source, external_id="5141", kind="ticket", channel="email", occurred_at=now,
        updated_at=now, record_ref="5141", identities=(Identity(kind, str(user_id)),),
    )  # fmt: skip


def user_lookups(fake_zendesk) -> list[str]:
    """Return the paths of the fake Zendesk's user look-ups so far."""
    return [p for _, p, *_ in fake_zendesk.requests_log if p.startswith("/api/v2/users")]


def stored(core: Installation) -> list[tuple[str, str, str, dict]]:
    """Return the lookup_cache rows as (plugin, kind, key, value)."""
    with reading(core.engine) as conn:
        rows = conn.execute(select(lookup_cache).order_by(lookup_cache.c.key)).all()
    return [(r.plugin, r.kind, r.key, json.loads(r.value)) for r in rows]


def test_a_second_process_finds_the_user_the_first_looked_up(core, second, fake_zendesk):
    """The second installation enriches the same requester without calling Zendesk."""
    ticket = ticket_of(ANN)
    first = core.registry.get("zendesk").enrich(ticket)
    calls = len(user_lookups(fake_zendesk))
    assert calls >= 1
    again = second.registry.get("zendesk").enrich(ticket)
    assert len(user_lookups(fake_zendesk)) == calls
    assert again == first
    assert Identity("email", "ann.example@example.com") in again.identities
    assert again.customer_name == "Ann Example"


def test_the_store_keeps_only_what_enrich_reads_and_no_secret(core, fake_zendesk):
    """A cached user is its name, email, phone and identities' type and value: nothing else."""
    core.registry.get("zendesk").enrich(ticket_of(ANN))
    (row,) = stored(core)
    assert row == ("zendesk", "zendesk_user", str(ANN), {
        "user": {"name": "Ann Example", "email": "ann.example@example.com",
                 "phone": "+14155550142"},
        "identities": [
            {"type": "email", "value": "ann.example@example.com"},
            {"type": "phone_number", "value": "+14155550142"},
            {"type": "facebook", "value": "100001234567890"},
        ],
    })  # fmt: skip
    assert ZENDESK_TOKEN not in json.dumps(row)


def test_an_expired_row_is_looked_up_again_and_renewed(core, second, fake_zendesk):
    """Past the plugin's TTL the store is a miss: the API is asked and the row renewed."""
    core.registry.get("zendesk").enrich(ticket_of(ANN))
    calls = len(user_lookups(fake_zendesk))
    with core.engine.begin() as conn:
        conn.execute(update(lookup_cache).values(expires_at=utcnow() - timedelta(seconds=1)))
    second.registry.get("zendesk").enrich(ticket_of(ANN))
    assert len(user_lookups(fake_zendesk)) > calls
    with reading(core.engine) as conn:
        expires_at = conn.execute(select(lookup_cache.c.expires_at)).scalar_one()
    assert expires_at > utcnow() + timedelta(seconds=200)  # user_cache_ttl_s: 300


def test_a_ttl_of_zero_caches_nothing(database_url, fake_zendesk, make_config):
    """user_cache_ttl_s: 0 asks Zendesk every time and stores nothing."""
    config = make_config(database_url, fake_zendesk.url, zendesk_options={"user_cache_ttl_s": 0})
    built = build_installation(config)
    try:
        plugin = built.registry.get("zendesk")
        plugin.enrich(ticket_of(ANN))
        calls = len(user_lookups(fake_zendesk))
        plugin.enrich(ticket_of(ANN))
        assert len(user_lookups(fake_zendesk)) == 2 * calls
        assert stored(built) == []
    finally:
        built.dispose()


def test_requesters_prefetched_by_one_process_cost_the_other_no_call(core, second, fake_zendesk):
    """An import's bulk look-up is shared: the other process neither asks in bulk nor singly."""
    core.registry.get("zendesk")._look_up_requesters([ANN, str(ANN), None, "x"])
    calls = len(user_lookups(fake_zendesk))
    assert calls == 1  # one show_many call
    plugin = second.registry.get("zendesk")
    plugin._look_up_requesters([ANN])
    assert plugin.enrich(ticket_of(ANN)).customer_name == "Ann Example"
    assert len(user_lookups(fake_zendesk)) == calls


def test_threads_missing_the_same_user_at_once_all_succeed(core, fake_zendesk):
    """Eight threads looking one user up at once get the same answer; one row is stored."""
    plugin = core.registry.get("zendesk")
    start, results, errors, ticket = threading.Barrier(8), [], [], ticket_of(ANN)

    def look_up() -> None:
        start.wait()
        try:
            results.append(plugin.enrich(ticket))
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=look_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert [row[:3] for row in stored(core)] == [("zendesk", "zendesk_user", str(ANN))]


def test_a_store_that_cannot_be_read_falls_back_to_the_api_logged_once(core, fake_zendesk, caplog):
    """With the store unreadable, look-ups still answer from the API; one warning says so."""
    fake_zendesk.add_user(9001, "Bob Example", email="bob@example.com")
    broken = create_engine("sqlite:////nonexistent-folder/carryover.db")
    core.registry.lookup_store.engine = broken
    plugin = core.registry.get("zendesk")
    with caplog.at_level(logging.WARNING, logger="middleware.integrations.lookups"):
        assert plugin.enrich(ticket_of(ANN)).customer_name == "Ann Example"
        assert plugin.enrich(ticket_of(9001)).customer_name == "Bob Example"
    warnings = [r for r in caplog.records if r.name == "middleware.integrations.lookups"]
    assert len(warnings) == 1
    assert "could not read the shared lookup cache" in warnings[0].getMessage()
    calls = len(user_lookups(fake_zendesk))
    plugin.enrich(ticket_of(ANN))  # still cached in this process's memory
    assert len(user_lookups(fake_zendesk)) == calls


def test_erasing_a_customer_removes_the_lookups_of_their_identities(
    core, client, worker, fake_zendesk, hooks
):
    """Erasure deletes the cached user of the erased customer and keeps everyone else's."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    other = {"user": {"name": "Bob Example"}, "identities": []}
    core.registry.lookup_store.write("zendesk", "zendesk_user", {"9001": other}, 300)
    assert [row[2] for row in stored(core)] == [str(ANN), "9001"]
    with core.engine.begin() as conn:
        ann = conn.execute(
            select(identities.c.customer_id).where(identities.c.value == str(ANN))
        ).scalar_one()
        erased = erase_customer(conn, ann)
    assert erased["cached lookups"] == 1
    assert stored(core) == [("zendesk", "zendesk_user", "9001", other)]


def test_the_purge_removes_expired_lookups_only(core):
    """The retention purge deletes expired rows and keeps the ones still within their TTL."""
    store = LookupStore(core.engine)
    store.write("zendesk", "zendesk_user", {"1": {"user": {}, "identities": []}}, 300)
    store.write("zendesk", "zendesk_user", {"2": {"user": {}, "identities": []}}, 300)
    with core.engine.begin() as conn:
        conn.execute(update(lookup_cache).where(lookup_cache.c.key == "1")
                     .values(expires_at=utcnow() - timedelta(minutes=1)))  # fmt: skip
    purge(core.engine, KEEP)
    assert [row[2] for row in stored(core)] == ["2"]


def test_the_worker_purges_expired_lookups_even_when_both_periods_keep_everything(
    database_url, make_config
):
    """Retention 0 keeps the timeline for ever, but a cached look-up only for its TTL."""
    kept = build_installation(
        make_config(database_url, retention={"deliveries_days": 0, "timeline_days": 0})
    )
    try:
        LookupStore(kept.engine).write("zendesk", "zendesk_user", {"1": {"user": {}}}, 300)
        with kept.engine.begin() as conn:
            conn.execute(update(lookup_cache).values(expires_at=utcnow() - timedelta(minutes=1)))
        Worker(kept).purge_when_due()
        assert stored(kept) == []
    finally:
        kept.dispose()


def test_two_processes_writing_the_same_key_both_succeed(core, second):
    """An upsert: the second write of a key overwrites the first instead of failing."""
    core.registry.lookup_store.write("zendesk", "zendesk_user", {"7": {"user": {"name": "A"}}}, 60)
    second.registry.lookup_store.write(
        "zendesk", "zendesk_user", {"7": {"user": {"name": "B"}}}, 60
    )
    assert stored(core) == [("zendesk", "zendesk_user", "7", {"user": {"name": "B"}})]


@pytest.fixture
def sf_api() -> Iterator[responses.RequestsMock]:
    """Intercept the Salesforce REST API: one contact."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        rsps.get(f"{REST}/sobjects/Contact/{CONTACT_ID}", json=CONTACT)
        yield rsps


def test_a_second_process_finds_the_salesforce_contact_in_either_id_form(
    database_url, zendesk_api_url, make_config, sf_api
):
    """A contact looked up by one process (18 characters) is found by another by its 15."""
    built = [build_installation(make_config(database_url, zendesk_api_url, salesforce={}))
             for _ in range(2)]  # fmt: skip
    try:
        kind = "salesforce_contact"
        first = (
            built[0].registry.get("salesforce").enrich(ticket_of(CONTACT_ID, "salesforce", kind))
        )
        later = (
            built[1]
            .registry.get("salesforce")
            .enrich(ticket_of(CONTACT_ID[:15], "salesforce", kind))
        )
        assert len([c for c in sf_api.calls if "/sobjects/Contact/" in c.request.url]) == 1
        assert later.customer_name == first.customer_name == "Ann Example"
        assert Identity("email", "ann.example@example.com") in later.identities
        assert stored(built[0]) == [("salesforce", kind, CONTACT_ID, {
            "Id": CONTACT_ID, "Name": "Ann Example", "Email": "ann.example@example.com",
            "Phone": "(415) 555-0142", "MobilePhone": None,
        })]  # fmt: skip
    finally:
        for core in built:
            core.dispose()


# Reads and writes made at the same time go to the store together


def held_first(statements: list[str], prefix: str, go_on: threading.Event, held: threading.Event):
    """Return a statement listener that counts statements starting with `prefix` and holds
    the first one until go_on is set."""

    def listen(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith(prefix):
            statements.append(statement)
            if len(statements) == 1:
                held.set()
                assert go_on.wait(10)

    return listen


@pytest.mark.parametrize("action", ["write", "read"])
def test_lookups_stored_or_read_while_one_is_under_way_go_to_the_store_together(core, action):
    """24 threads: while the first one's statement is held, the 23 others queue up, and one
    statement then serves them all; each gets its own answer, as if alone."""
    store = LookupStore(core.engine)
    keys = [str(n) for n in range(24)]
    if action == "read":
        store.write("zendesk", "zendesk_user", {k: {"user": {"id": k}} for k in keys}, 300)
    prefix = "INSERT INTO LOOKUP_CACHE" if action == "write" else "SELECT LOOKUP_CACHE"
    statements: list[str] = []
    go_on, held = threading.Event(), threading.Event()
    listener = held_first(statements, prefix, go_on, held)
    event.listen(core.engine, "before_cursor_execute", listener)

    def act(key: str):
        if action == "write":
            return store.write("zendesk", "zendesk_user", {key: {"user": {"id": key}}}, 300)
        return store.read("zendesk", "zendesk_user", [key])

    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            first = pool.submit(act, keys[0])
            assert held.wait(10)
            rest = [pool.submit(act, key) for key in keys[1:]]
            deadline = time.monotonic() + 10
            while len(store._writes._waiting if action == "write" else store._reads._waiting) < 23:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            go_on.set()
            answers = [first.result(10)] + [f.result(10) for f in rest]
    finally:
        event.remove(core.engine, "before_cursor_execute", listener)
    assert len(statements) == 2
    if action == "read":
        assert [list(a) for a in answers] == [[k] for k in keys]
        assert [a[k][1] for a, k in zip(answers, keys, strict=True)] == [
            {"user": {"id": k}} for k in keys
        ]
    else:
        assert sorted(row[2] for row in stored(core)) == sorted(keys)


def test_a_call_that_fails_fails_its_callers_and_the_next_one_runs():
    """The callers of a failed call meet its failure; the next call runs as usual."""
    calls: list[list[int]] = []
    failing = True

    def run(items: list[int]) -> list[int]:
        calls.append(items)
        if failing:
            raise RuntimeError("the store is gone")
        return [item * 10 for item in items]

    together = Together(run)
    with pytest.raises(RuntimeError, match="the store is gone"):
        together(1)
    failing = False
    assert together(2) == 20
    assert calls == [[1], [2]]
