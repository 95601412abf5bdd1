"""Processes that share PostgreSQL wake each other (LISTEN/NOTIFY); SQLite stays in-process.

Two installations on one store stand for two processes: each has its own listener, its own
wake-up event and its own board of pop topics, as separate processes do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from middleware.installation import Installation, build_installation
from middleware.process.worker import Worker
from middleware.store.tables import make_engine
from middleware.store.wakeups import MAX_PAYLOAD, TOPICS, channel_for, payloads
from middleware.web.app import create_app
from tests.actions import Hooks
from tests.conftest import build_config
from tests.payloads import cti_body
from tests.values import PG_URL

# Generous: a wake-up comes in milliseconds; this only bounds a failing test.
WAIT_S = 10.0
on_postgres = pytest.mark.skipif(not PG_URL, reason="CARRYOVER_TEST_DATABASE_URL is not set")
Build = Callable[[], Installation]


@pytest.fixture
def build(database_url: str) -> Iterator[Build]:
    """Return a factory of installations on the test's store, each a "process" of its own."""
    built: list[Installation] = []

    def one() -> Installation:
        core = build_installation(build_config(database_url, phone=True))
        built.append(core)
        return core

    yield one
    for core in built:
        core.dispose()


def listening(core: Installation) -> Installation:
    """Start a process's listener, wait until it listens, and forget the start's own wake-up."""
    core.wakeups.start()
    assert core.wakeups.wait_listening(WAIT_S)
    core.wake.clear()
    return core


def test_channel_is_one_per_schema_and_fits_postgres_identifiers() -> None:
    """Installations in schemas of their own get channels of their own, never over 63 bytes."""
    assert channel_for("public") == "carryover"
    assert channel_for("carryover_test_7") == "carryover_carryover_test_7"
    long_one, other = channel_for("s" * 63), channel_for("s" * 62 + "t")
    assert len(long_one) <= 63 and len(other) <= 63 and long_one != other


def test_many_topics_are_split_into_payloads_postgres_accepts() -> None:
    """Topics past one payload's room go in several, each under the limit, none lost."""
    topics = {f"customer:{n}" for n in range(2_000)}
    sent = list(payloads("abc", topics))
    assert len(sent) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in sent)
    assert all(p.startswith(f"{TOPICS} abc ") for p in sent)
    assert {t for p in sent for t in p.split(" ")[2:]} == topics
    assert list(payloads("abc", [])) == []


@on_postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_webhook_stored_by_one_process_wakes_the_worker_of_another(build: Build) -> None:
    """The web process's commit wakes a worker elsewhere, which finds the delivery stored."""
    web, worker_process = build(), listening(build())
    hooks = Hooks(create_app(core=web).test_client())
    assert hooks.cti(cti_body("newCall.json")).status_code == 200
    assert worker_process.wake.wait(WAIT_S)
    assert Worker(worker_process, name="elsewhere").drain() == 1
    assert web.wake.is_set()  # its own process's worker is woken directly, as before


@on_postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_change_made_by_a_worker_wakes_the_pops_of_another_process(build: Build) -> None:
    """The worker's commit reaches the pop board of a web process, with the call's topics."""
    worker_process, web = build(), listening(build())
    hooks = Hooks(create_app(core=worker_process).test_client())
    hooks.cti(cti_body("newCall.json"))
    seq = web.live.seq
    Worker(worker_process, name="elsewhere").drain()
    caller = f"phone:+{json.loads(cti_body('newCall.json'))['from']}"
    after, changed = web.live.wait(seq, {caller}, WAIT_S)
    assert changed, f"no publication of {caller} reached the other process"
    assert web.wakeups.received >= 1


@on_postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_topics_of_one_commit_that_need_several_payloads_all_arrive(build: Build) -> None:
    """A commit whose topics fill several payloads (sent in one statement) wakes the other
    process's pops for every topic: the first payload's and the last's."""
    sender, web = build(), listening(build())
    topics = [f"customer:{n}" for n in range(2_000)]
    sent = list(payloads(sender.wakeups.origin, topics))
    assert len(sent) > 2
    seq = web.live.seq
    with sender.engine.begin() as conn:
        sender.wakeups.topics_in(conn, topics)
    first, last = sent[0].split(" ")[2], sent[-1].split(" ")[-1]
    for topic in (first, last):
        _, changed = web.live.wait(seq, {topic}, WAIT_S)
        assert changed, f"{topic} did not reach the other process"
    deadline = time.monotonic() + WAIT_S
    while web.wakeups.received < len(sent) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert web.wakeups.received == len(sent)


@on_postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_process_skips_its_own_notifications(build: Build) -> None:
    """A process has woken itself already: its own notification publishes nothing twice."""
    one, other = listening(build()), build()
    seq = one.live.seq
    one.changed({"customer:1"})  # published at once, and notified to the others
    other.changed({"customer:2"})  # arrives after one's own notification, if that came back
    _, changed = one.live.wait(seq + 1, {"customer:2"}, WAIT_S)
    assert changed
    assert one.live.seq == seq + 2  # customer:1 once (locally), customer:2 once
    assert one.wakeups.received == 1


@on_postgres
def test_installations_in_other_schemas_do_not_wake_each_other(postgres_url: str) -> None:
    """Two installations sharing a database in schemas of their own never hear each other."""
    other_schema = "carryover_wakeups_other"
    admin = make_engine(PG_URL or "")
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {other_schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {other_schema}"))
    other_url = make_url(postgres_url).update_query_dict(
        {"options": f"-csearch_path={other_schema}"}
    )
    mine = build_installation(build_config(postgres_url, phone=True))
    theirs = build_installation(
        build_config(other_url.render_as_string(hide_password=False), phone=True)
    )
    try:
        listening(mine)
        seq = mine.live.seq
        theirs.changed({"customer:1"})  # were it heard, it would come before customer:2
        other = build_installation(build_config(postgres_url, phone=True))
        other.changed({"customer:2"})
        _, changed = mine.live.wait(seq, {"customer:2"}, WAIT_S)
        other.dispose()
        assert changed
        assert mine.wakeups.received == 1  # customer:2 only
    finally:
        mine.dispose()
        theirs.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {other_schema} CASCADE"))
        admin.dispose()


@on_postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_listener_reconnects_and_looks_for_work_after_losing_its_connection(
    build: Build,
) -> None:
    """A listener whose connection dies listens again, and wakes its worker for what it missed."""
    process, other = listening(build()), build()
    with other.engine.begin() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = :listen AND pid <> pg_backend_pid()"
            ),
            {"listen": f'LISTEN "{process.wakeups.channel}"'},
        ).fetchall()
    assert killed
    assert process.wake.wait(WAIT_S)  # the reconnection's look for what was missed
    assert process.wakeups.wait_listening(WAIT_S)
    process.wake.clear()
    other.work_arrived()
    assert process.wake.wait(WAIT_S)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_nothing_listens_and_changes_stay_in_the_process(build: Build) -> None:
    """SQLite has one writer process: no listener, no notification, the pops still woken."""
    core = build()
    core.wakeups.start()
    assert not core.wakeups.enabled
    assert not core.wakeups.wait_listening(0.05)
    seq = core.live.seq
    core.changed({"customer:1"})
    assert core.live.wait(seq, {"customer:1"}, 0)[1]
    core.work_arrived()
    assert core.wake.is_set()
