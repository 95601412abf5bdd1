"""Queue rows settled by several threads at once share one transaction; each row's answer
(a lease lost, a failure) stays its own."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import event, select, update

from middleware.store.queue import DONE, PENDING
from middleware.store.tables import deliveries
from tests.payloads import zendesk_event

OWNER = "worker-1"


def claimed(hooks, core, count: int) -> list[int]:
    """Store `count` new tickets and lease them all to OWNER; return their ids."""
    for n in range(count):
        body = zendesk_event("ticket_created__mail.json", id=str(7000 + n), event_id=f"ev-{n}")
        assert hooks.zendesk(body).status_code == 200
    return [row.id for row in core.inbox.claim(OWNER, 60, count)]


def rows(core) -> list:
    with core.engine.connect() as conn:
        return conn.execute(select(deliveries).order_by(deliveries.c.id)).all()


def settled_while_one_is_held(core, settle_one, ids: list[int]) -> tuple[list, list[str]]:
    """Settle each id on a thread of its own: the first one's UPDATE is held until every
    other thread waits behind it. Return each thread's answer (or failure), and the
    statements sent."""
    statements: list[str] = []
    go_on, held = threading.Event(), threading.Event()

    def listen(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("UPDATE DELIVERIES"):
            statements.append(statement)
            if len(statements) == 1:
                held.set()
                assert go_on.wait(10)

    event.listen(core.engine, "before_cursor_execute", listen)
    try:
        with ThreadPoolExecutor(max_workers=len(ids)) as pool:
            first = pool.submit(settle_one, ids[0])
            assert held.wait(10)
            rest = [pool.submit(settle_one, row_id) for row_id in ids[1:]]
            deadline = time.monotonic() + 10
            while len(core.inbox._updates._waiting) < len(ids) - 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            go_on.set()
            answers = []
            for future in [first, *rest]:
                try:
                    answers.append(future.result(10))
                except Exception as exc:
                    answers.append(exc)
    finally:
        event.remove(core.engine, "before_cursor_execute", listen)
    return answers, statements


def done(core):
    return lambda row_id: core.inbox.settle(row_id, OWNER, status=DONE, last_error=None)


def test_rows_settled_while_one_is_under_way_share_one_statement(hooks, core):
    """12 threads settle 12 rows: the 11 that came while the first was under way are
    settled by one statement, each row as it asked, its lease dropped."""
    ids = claimed(hooks, core, 12)
    answers, statements = settled_while_one_is_held(core, done(core), ids)
    assert answers == [True] * 12
    assert len(statements) == 2  # the first alone, then the eleven together
    assert [(r.status, r.lease_owner, r.lease_expires_at) for r in rows(core)] == [
        (DONE, None, None)
    ] * 12


def test_a_lease_lost_among_rows_settled_together_is_that_rows_own(hooks, core):
    """A row another worker took over answers False and keeps its new owner; the rows
    settled with it are settled all the same."""
    ids = claimed(hooks, core, 4)
    with core.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.id == ids[2]).values(lease_owner="w2"))
    answers, _ = settled_while_one_is_held(core, done(core), ids)
    assert answers == [True, True, False, True]
    assert [(r.status, r.lease_owner) for r in rows(core)] == [
        (DONE, None), (DONE, None), (PENDING, "w2"), (DONE, None)
    ]  # fmt: skip


def test_a_row_the_store_refuses_fails_alone_and_the_others_are_settled(hooks, core):
    """A row whose values the store refuses (a status of none) fails its own caller only."""
    ids = claimed(hooks, core, 4)

    def settle(row_id: int) -> bool:
        status = None if row_id == ids[1] else DONE
        return core.inbox.settle(row_id, OWNER, status=status)

    answers, _ = settled_while_one_is_held(core, settle, ids)
    assert [a if isinstance(a, bool) else "failed" for a in answers] == [
        True, "failed", True, True
    ]  # fmt: skip
    assert [(r.status, r.lease_owner) for r in rows(core)] == [
        (DONE, None), (PENDING, OWNER), (DONE, None), (DONE, None)
    ]  # fmt: skip


def test_a_row_touched_alone_is_updated_at_once(hooks, core):
    """With nobody else settling, a row is updated at once, in one statement."""
    ids = claimed(hooks, core, 1)
    statements: list[str] = []

    def listen(_conn, _cursor, statement, *_args):
        statements.append(statement.split()[0].upper())

    event.listen(core.engine, "before_cursor_execute", listen)
    try:
        assert core.inbox.touch(ids[0], OWNER, attempts=3)
    finally:
        event.remove(core.engine, "before_cursor_execute", listen)
    assert statements.count("UPDATE") == 1
    assert rows(core)[0].attempts == 3 and rows(core)[0].lease_owner == OWNER
