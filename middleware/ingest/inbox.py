"""The inbox: every authentic delivery is committed here before the sender gets its 2xx."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Row, bindparam, func, select
from sqlalchemy.exc import DataError, IntegrityError

from middleware.integrations.plugin import InboundRequest
from middleware.store.queue import PENDING, LeasedQueue
from middleware.store.tables import deliveries, delivery_keys, dialect_insert, dumps, utcnow

# Never keep credentials that a sender or proxy put in headers: these names, and any name
# with one of these words in it (X-Api-Key, X-Auth-Token, X-Session-Id …).
DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "set-cookie"})
DROPPED_WORDS = re.compile("auth|token|secret|password|key|session|cookie")
# Headers Carryover adds to a stored delivery; a sender's own of these names are dropped.
OWN_HEADER_PREFIX = "x-carryover-"


def storable_headers(request: InboundRequest) -> dict[str, str]:
    """Return the headers kept with a delivery: no credential, and Carryover's own facts."""
    kept = {
        name: value
        for name, value in request.headers.items()
        if name not in DROPPED_HEADERS
        and not name.startswith(OWN_HEADER_PREFIX)
        and not DROPPED_WORDS.search(name)
    }
    kept["x-carryover-url"] = request.url
    kept["x-carryover-proof"] = request.proof
    kept["x-carryover-remote-addr"] = request.remote_addr
    return kept


# Built once: building SQLAlchemy statements per request costs more than running them.
INSERT_DELIVERIES = deliveries.insert().returning(deliveries.c.id, sort_by_parameter_order=True)
DELETE_DELIVERY = deliveries.delete().where(deliveries.c.id == bindparam("delivery_id"))
SET_EVENT_KEYS = (
    deliveries.update()
    .where(deliveries.c.id == bindparam("delivery_id"))
    .values(event_keys=bindparam("event_keys"))
)
# On SQLite a group is committed by one INSERT on the inbox's own sqlite3 connection. Each
# statement lets other threads take the interpreter, and under load the committer then
# waits milliseconds to get it back, while every sender of the group waits for it: one
# statement is the shortest commit. A trigger that exists on that connection only (TEMP)
# records each delivery's keys within the same statement, and refuses the whole statement
# when a key was seen before; such a group (a sender's retry) takes the general path.
SQLITE_KEYS_TRIGGER = """
CREATE TEMP TRIGGER IF NOT EXISTS inbox_delivery_keys AFTER INSERT ON main.deliveries
BEGIN
    SELECT RAISE(ABORT, 'inbox: a key was seen before') WHERE EXISTS (
        SELECT 1 FROM main.delivery_keys WHERE plugin = NEW.plugin
        AND key IN (SELECT value FROM json_each(NEW.event_keys)));
    INSERT INTO delivery_keys (plugin, key, delivery_id)
        SELECT NEW.plugin, value, NEW.id FROM json_each(NEW.event_keys);
END
"""
SQLITE_SEEN_BEFORE = "inbox: a key was seen before"
SQLITE_INSERT_DELIVERIES = (
    "INSERT INTO deliveries (plugin, received_at, headers, body, event_keys, status, attempts,"
    " next_attempt_at, trail) VALUES "
)
SQLITE_DELIVERY_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
SQLITE_MAX_GROUP = 100  # 9 parameters a row: far below SQLite's limit of 32,766


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Pending:
    """One delivery waiting for the next group commit."""

    values: dict[str, Any]
    keys: list[str]
    done: bool = False  # its group is finished
    delivery_id: int | None = None  # None once committed: every key was seen before
    committed: bool = False
    error: Exception | None = None
    # Released once, by another thread: when the group is finished (done is then true), or
    # to make this delivery's thread commit the next group. A lock, not an Event: waking
    # costs one C call instead of a Condition's Python code.
    _bell: threading.Lock = field(default_factory=_held_lock)

    def sleep(self) -> None:
        """Wait to be woken."""
        self._bell.acquire()

    def wake(self) -> None:
        """Wake the delivery's thread."""
        self._bell.release()


class DeliveryInbox(LeasedQueue):
    """Raw deliveries, deduplicated by event key, waiting for the worker.

    Deliveries that arrive together are committed together (group commit): the first web
    thread to find the inbox free commits every delivery waiting at that moment in one
    transaction, and each thread answers its sender only once its own delivery is committed.
    One commit (one fsync on SQLite) then serves many deliveries, and web threads do not
    queue on the store's write lock one by one. The committer then hands over to the
    oldest waiting thread, which commits the next group (its own delivery in it); every
    other waiting thread sleeps on its own delivery and is woken once, when it is finished,
    instead of each taking a shared lock in turn only to find its work done.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, deliveries, "plugin", ready=(PENDING,))
        self._waiting: list[_Pending] = []
        self._waiting_lock = threading.Lock()
        self._committing = False  # a thread commits, or has been woken to commit next
        self._one_statement = engine.dialect.name == "sqlite"  # until JSON is found missing
        self._own: Any = None  # the SQLite path's connection, kept while it works
        # Datetimes stored exactly as SQLAlchemy stores them, so queries compare like with like.
        self._to_db = DateTime().dialect_impl(engine.dialect).bind_processor(engine.dialect)
        # Called in a group's transaction when it stored a delivery, to wake the workers of
        # other processes at its commit (Wakeups.work_in); none on SQLite.
        self.announce: Callable[[Connection], None] | None = None

    def accept(self, plugin: str, request: InboundRequest, keys: Sequence[str]) -> int | None:
        """Commit a delivery (its body already redacted by redact_body) with its unseen keys.

        Return the delivery id, or None when every key was seen before (nothing is kept).
        """
        now = utcnow()
        values = {
            "plugin": plugin, "received_at": now, "headers": dumps(storable_headers(request)),
            "body": request.body, "status": PENDING, "attempts": 0, "next_attempt_at": now,
            "trail": "[]",
        }  # fmt: skip
        item = _Pending(values, list(dict.fromkeys(keys)))
        with self._waiting_lock:
            self._waiting.append(item)
            lead, self._committing = not self._committing, True
        if not lead:
            item.sleep()  # finished by another thread, or this one commits next
        if not item.done:
            batch: list[_Pending] = []
            try:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                self._commit_group(batch)  # this thread's own delivery is in it
            finally:
                for other in batch:
                    if other is not item:
                        other.wake()
                with self._waiting_lock:
                    if self._waiting:
                        self._waiting[0].wake()  # the next committer
                    else:
                        self._committing = False
        if item.error is not None:
            raise item.error
        return item.delivery_id

    def _commit_group(self, batch: list[_Pending]) -> None:
        try:
            self._commit(batch)
        except (IntegrityError, DataError, sqlite3.IntegrityError, sqlite3.DataError) as exc:
            # One delivery's data was refused: commit each on its own to find it.
            if len(batch) == 1:
                batch[0].error = exc
            else:
                for item in batch:
                    self._commit_group([item])
        except Exception as exc:  # the store is unreachable or locked: every sender retries
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                if not item.committed and item.error is None:
                    item.error = RuntimeError("the delivery was not committed")
                item.done = True

    def _commit(self, batch: list[_Pending]) -> None:
        if not (self._one_statement and self._commit_sqlite(batch)):
            self._commit_core(batch)
        for item in batch:  # only now, after the COMMIT succeeded
            item.committed = True

    def close(self) -> None:
        """Drop the connection the SQLite path keeps (with its trigger: not back to the pool)."""
        if self._own is not None:
            self._own.invalidate()
            self._own = None

    def _commit_sqlite(self, batch: list[_Pending]) -> bool:
        """Commit a group with one INSERT; False when it must take the general path instead.

        The connection comes from the engine's pool, so the connect event has set WAL,
        synchronous=FULL, busy_timeout and foreign keys on it. Only the committing thread
        uses it, in autocommit mode: the statement is its own transaction.
        """
        if len(batch) > SQLITE_MAX_GROUP or not all(item.keys for item in batch):
            return False
        if self._own is None and not self._open_sqlite():
            return False
        db = self._own.driver_connection
        assert isinstance(db, sqlite3.Connection) and db.isolation_level is None
        to_db = self._to_db or (lambda value: value)
        parameters = []
        for item in batch:
            v = item.values
            event_keys = dumps(item.keys)
            if "\\u0000" in event_keys:
                return False  # json_each would cut such a key short
            parameters += [
                v["plugin"], to_db(v["received_at"]), v["headers"], v["body"], event_keys,
                v["status"], v["attempts"], to_db(v["next_attempt_at"]), v["trail"],
            ]  # fmt: skip
        rows = ", ".join([SQLITE_DELIVERY_ROW] * len(batch))
        try:
            cursor = db.execute(SQLITE_INSERT_DELIVERIES + rows, parameters)
        except sqlite3.IntegrityError as exc:
            if str(exc) == SQLITE_SEEN_BEFORE:
                return False  # nothing was written
            raise
        except sqlite3.OperationalError:  # e.g. a disk I/O error: a new connection next time
            self.close()
            raise
        # One statement gives its rows consecutive ids, each the largest so far plus one.
        assert cursor.lastrowid is not None
        first_id = cursor.lastrowid - len(batch) + 1
        for offset, item in enumerate(batch):
            item.delivery_id = first_id + offset
        return True

    def _open_sqlite(self) -> bool:
        """Open the inbox's own connection with its trigger; False without JSON functions."""
        own = self.engine.raw_connection()
        db = own.driver_connection
        assert isinstance(db, sqlite3.Connection)
        try:
            db.execute("SELECT json_array_length('[]')")
            db.execute(SQLITE_KEYS_TRIGGER)
        except sqlite3.OperationalError as exc:
            own.invalidate()
            if "no such function" not in str(exc):
                raise
            self._one_statement = False  # SQLite built without JSON: the general path
            return False
        except BaseException:
            own.invalidate()
            raise
        self._own = own
        return True

    def _commit_core(self, batch: list[_Pending]) -> None:
        with self.engine.begin() as conn:
            for item in batch:
                item.delivery_id = None
                item.values["event_keys"] = dumps(item.keys)
            inserted = conn.execute(INSERT_DELIVERIES, [item.values for item in batch])
            ids = [int(row.id) for row in inserted]
            rows = [
                {"plugin": item.values["plugin"], "key": key, "delivery_id": delivery_id}
                for item, delivery_id in zip(batch, ids, strict=True)
                for key in item.keys
            ]
            insert_keys = (
                dialect_insert(conn, delivery_keys)
                .on_conflict_do_nothing()
                .returning(delivery_keys.c.delivery_id, delivery_keys.c.key)
            )
            fresh: dict[int, set[str]] = {}
            for row in conn.execute(insert_keys, rows) if rows else []:
                fresh.setdefault(row.delivery_id, set()).add(row.key)
            for item, delivery_id in zip(batch, ids, strict=True):
                kept = [k for k in item.keys if k in fresh.get(delivery_id, ())]
                if not kept:  # every key seen before: keep nothing of this delivery
                    conn.execute(DELETE_DELIVERY, {"delivery_id": delivery_id})
                    continue
                if len(kept) < len(item.keys):
                    conn.execute(
                        SET_EVENT_KEYS, {"delivery_id": delivery_id, "event_keys": dumps(kept)}
                    )
                item.delivery_id = delivery_id
            if self.announce is not None and any(item.delivery_id for item in batch):
                self.announce(conn)

    def get(self, delivery_id: int) -> Row | None:
        """Return one delivery row."""
        with self.engine.begin() as conn:
            return conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()

    @staticmethod
    def last_received_at(conn: Connection, plugin: str) -> datetime | None:
        """Return when the plugin's newest stored delivery was received, or None."""
        query = select(func.max(deliveries.c.received_at)).where(deliveries.c.plugin == plugin)
        return conn.execute(query).scalar()


def request_of(row: Row) -> InboundRequest:
    """Rebuild the inbound request a stored delivery came from."""
    headers: Mapping[str, str] = json.loads(row.headers)
    return InboundRequest(
        path=f"/hooks/{row.plugin}",
        url=headers.get("x-carryover-url", ""),
        headers=headers,
        body=bytes(row.body),
        remote_addr=headers.get("x-carryover-remote-addr", ""),
        proof=headers.get("x-carryover-proof", ""),
    )
