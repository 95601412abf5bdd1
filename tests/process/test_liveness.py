"""Workers visibly alive: their heartbeat rows, /readyz, /metrics, the overview, the CLI."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from middleware.admin.accounts import create_admin
from middleware.cli import main
from middleware.installation import Installation, build_installation
from middleware.process import liveness
from middleware.process.liveness import alive_count, beat, farewell, workers_seen
from middleware.process.worker import Worker
from middleware.store.tables import reading, utcnow, workers
from middleware.web.app import create_app
from tests.values import ADMIN_PASSWORD


def seen(core: Installation) -> list[liveness.WorkerSeen]:
    with reading(core.engine) as conn:
        return workers_seen(conn)


def alive(core: Installation) -> int:
    with reading(core.engine) as conn:
        return alive_count(conn, utcnow())


def silence(core: Installation, name: str, ago: timedelta) -> None:
    """Make a worker's latest beat (and its lease) lie `ago` in the past."""
    past = utcnow() - ago
    with core.engine.begin() as conn:
        conn.execute(update(workers).where(workers.c.name == name).values(
            seen_at=past, alive_until=past + timedelta(seconds=90)))  # fmt: skip


@pytest.fixture
def quick_core(make_config, database_url) -> Iterator[Installation]:
    """Build an installation whose workers beat every 0.1 s (a lease of 0.3 s)."""
    built = build_installation(make_config(database_url, worker={"lease_s": 0.3}))
    yield built
    built.dispose()


def test_a_beat_records_host_pid_since_and_last_seen(core):
    """The first beat makes the row; the next keeps its start and moves its last seen."""
    running = threading.Event()
    beat(core, "w1", running)
    [first] = seen(core)
    assert (first.name, first.kind, first.host, first.pid) == (
        "w1", "worker", socket.gethostname(), os.getpid())  # fmt: skip
    assert first.started_at == first.seen_at
    assert first.alive_until == first.seen_at + timedelta(seconds=3 * 30)  # three leases of 30 s

    silence(core, "w1", timedelta(seconds=5))
    beat(core, "w1", running)
    [again] = seen(core)
    assert again.started_at == first.started_at
    assert again.seen_at > first.seen_at - timedelta(seconds=5)
    assert again.alive(utcnow()) and alive(core) == 1


def test_a_worker_beside_a_web_app_of_its_process_is_embedded(core, app):
    """A worker of an installation this process serves on the web says it is embedded."""
    beat(core, "w1", threading.Event())
    assert [w.kind for w in seen(core)] == ["embedded"]


def test_farewell_removes_the_row_and_no_later_beat_brings_it_back(core):
    """A clean stop removes the worker; a beat that comes after the stop writes nothing."""
    stopping = threading.Event()
    beat(core, "w1", stopping)
    beat(core, "w2", stopping)
    stopping.set()
    farewell(core, "w1")
    beat(core, "w1", stopping)
    assert [w.name for w in seen(core)] == ["w2"]


def test_a_silent_worker_is_listed_not_alive_and_forgotten_after_a_day(core):
    """Past three leases a worker is silent (listed, not counted); after a day it is gone."""
    running = threading.Event()
    for name in ("quiet", "gone", "busy"):
        beat(core, name, running)
    silence(core, "quiet", timedelta(minutes=10))
    silence(core, "gone", timedelta(days=1, minutes=1))
    assert alive(core) == 1

    beat(core, "busy", running)  # any worker's beat forgets the day-old rows
    now = utcnow()
    assert {w.name: w.alive(now) for w in seen(core)} == {"quiet": False, "busy": True}


def test_the_heartbeat_writes_the_row_and_a_clean_stop_removes_it(quick_core):
    """A started worker appears within a beat or two; stop() takes it off the list."""
    worker = Worker(quick_core, name="beating")
    worker.start()
    try:
        for _ in range(100):  # up to 10 s on a loaded machine; a beat is due every 0.1 s
            if seen(quick_core):
                break
            threading.Event().wait(0.1)
        assert [(w.name, w.kind) for w in seen(quick_core)] == [("beating", "worker")]
    finally:
        worker.stop()
        worker.join(timeout=15)
    assert seen(quick_core) == []


def test_a_started_worker_is_alive_at_once_not_after_its_first_interval(make_config, database_url):
    """/readyz and the overview count a worker from its start: its first beat does not wait
    for a heartbeat interval (10 s with a 30 s lease)."""
    core = build_installation(make_config(database_url, worker={"lease_s": 30}))
    worker = Worker(core, name="starting")
    worker.start()
    try:
        for _ in range(50):  # up to 5 s, half the interval, on a loaded machine
            if alive(core):
                break
            threading.Event().wait(0.1)
        assert [w.name for w in seen(core)] == ["starting"] and alive(core) == 1
    finally:
        worker.stop()
        worker.join(timeout=15)
        core.dispose()


def test_readyz_counts_the_workers_alive_without_naming_them(client, core):
    """/readyz says how many workers beat lately, and no worker's name or host."""
    assert client.get("/readyz").get_json()["workers_alive"] == 0
    beat(core, "secret-host:123:456", threading.Event())
    beat(core, "silent", threading.Event())
    silence(core, "silent", timedelta(minutes=10))
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["workers_alive"] == 1
    said = response.get_data(as_text=True)
    assert "secret-host" not in said and "silent" not in said and socket.gethostname() not in said


def test_metrics_gauge_the_workers_alive(client, core):
    """carryover_workers_alive counts the workers within their last three leases."""

    def workers_alive() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        [family] = [f for f in text_string_to_metric_families(text)
                    if f.name == "carryover_workers_alive"]  # fmt: skip
        return float(family.samples[0].value)

    assert workers_alive() == 0
    beat(core, "w1", threading.Event())
    core.metrics.store.cache_s = 0  # read the store again at the next scrape
    assert workers_alive() == 1


def test_the_overview_lists_workers_in_local_time(make_config, database_url, admin_for):
    """The overview shows each worker's host, pid, kind, since and last seen in the zone."""
    core = build_installation(make_config(database_url, timezone="Asia/Tokyo"))
    try:
        client = create_app(core=core).test_client()
        create_admin(core.engine, "ada", ADMIN_PASSWORD)
        assert admin_for(client).log_in().status_code == 302
        assert "No worker has run in the last day" in client.get("/admin/").get_data(as_text=True)

        beat(core, "w1", threading.Event())
        [row] = seen(core)
        page = client.get("/admin/").get_data(as_text=True)
        since = (row.started_at + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M JST")
        assert f"<td>{socket.gethostname()}</td><td>{os.getpid()}</td>" in page
        assert "in a web process" in page and since in page and ">alive<" in page
    finally:
        core.dispose()


def test_carryover_workers_lists_them(make_config, database_url, tmp_path, capsys):
    """`carryover workers` prints host, pid, kind, times and state, and says so when none ran."""
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\nworker:\n  lease_s: 20\n")
    assert main(["workers", "--config", str(config)]) == 0
    assert "no worker has run in the last day" in capsys.readouterr().out

    core = build_installation(make_config(database_url))
    try:
        beat(core, "w1", threading.Event())
        beat(core, "w2", threading.Event())
        silence(core, "w2", timedelta(minutes=10))
    finally:
        core.dispose()
    assert main(["workers", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["host", "pid", "kind", "since", "(UTC)", "last", "seen", "(UTC)",
                                "state"]  # fmt: skip
    rows = [line.split() for line in lines[1:3]]
    assert [(r[0], r[1], r[2], r[-1]) for r in rows] == [
        (socket.gethostname(), str(os.getpid()), "worker", "alive"),
        (socket.gethostname(), str(os.getpid()), "worker", "silent"),
    ]
    assert lines[3] == ("carryover: 1 of 2 alive (a worker is silent when it missed three leases "
                        "of heartbeats: stopped, hung or cut off from the store)")  # fmt: skip
