"""Pooled PostgreSQL connections: asked whether they still work after waiting idle, not
before every use, and replaced when they do not."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from middleware.store import tables
from middleware.store.tables import make_engine
from tests.values import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="CARRYOVER_TEST_DATABASE_URL is not set")


def backend_of(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pid: int) -> None:
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    admin.dispose()


def pings(engine) -> list[str]:
    """Count the pings the dialect makes (it pings with a raw cursor, no event of its own)."""
    made: list[str] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection):
        made.append("ping")
        return ping(dbapi_connection)

    engine.dialect.do_ping = counted
    return made


def test_a_connection_idle_past_the_threshold_is_pinged_and_replaced_when_dead(monkeypatch):
    """PostgreSQL dropped a connection while it waited in the pool: the next use gets a
    new one, with no error."""
    engine = make_engine(PG_URL)
    try:
        made = pings(engine)
        dead = backend_of(engine)
        terminate(dead)
        monkeypatch.setattr(tables, "PING_AFTER_IDLE_S", 0.0)
        assert backend_of(engine) != dead
        assert made == ["ping"]
    finally:
        engine.dispose()


def test_a_busy_connection_is_not_pinged_and_a_failure_replaces_every_older_one():
    """Used again at once, a connection is not pinged: no round trip of its own. One that
    fails in use anyway makes the pool drop all connections older than the failure."""
    engine = make_engine(PG_URL)
    try:
        made = pings(engine)
        with engine.connect() as one, engine.connect() as two:
            pids = [
                int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in (one, two)
            ]
        for _ in range(5):
            backend_of(engine)
        assert made == []
        for pid in pids:
            terminate(pid)
        failed = 0
        for _ in range(3):
            try:
                backend_of(engine)
            except OperationalError:
                failed += 1
        assert failed == 1
        assert backend_of(engine) not in pids
    finally:
        engine.dispose()
