"""The inbox: every authentic delivery is committed here before the sender gets its 2xx."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Row, bindparam, select
from sqlalchemy.exc import DataError, IntegrityError

from middleware.plugins import InboundRequest
from middleware.queue import PENDING, LeasedQueue
from middleware.store import deliveries, delivery_keys, dialect_insert, dumps, utcnow

# Never keep credentials that a sender or proxy put in headers.
DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# Built once: building SQLAlchemy statements per request costs more than running them.
INSERT_DELIVERIES = deliveries.insert().returning(deliveries.c.id, sort_by_parameter_order=True)
DELETE_DELIVERY = deliveries.delete().where(deliveries.c.id == bindparam("delivery_id"))
SET_EVENT_KEYS = (
    deliveries.update()
    .where(deliveries.c.id == bindparam("delivery_id"))
    .values(event_keys=bindparam("event_keys"))
)


@dataclass
class _Pending:
    """One delivery waiting for the next group commit."""

    values: dict[str, Any]
    keys: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    delivery_id: int | None = None  # None once committed: every key was seen before
    committed: bool = False
    error: Exception | None = None


class DeliveryInbox(LeasedQueue):
    """Raw deliveries, deduplicated by event key, waiting for the worker.

    Deliveries that arrive together are committed together (group commit): the first web
    thread to find the inbox free commits every delivery waiting at that moment in one
    transaction, and each thread answers its sender only once its own delivery is committed.
    One commit (one fsync on SQLite) then serves many deliveries, and web threads do not
    queue on the store's write lock one by one.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, deliveries, ready=(PENDING,))
        self._waiting: list[_Pending] = []
        self._waiting_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def accept(self, plugin: str, request: InboundRequest, keys: Sequence[str]) -> int | None:
        """Commit a delivery (its body already redacted by redact_body) with its unseen keys.

        Return the delivery id, or None when every key was seen before (nothing is kept).
        """
        now = utcnow()
        headers = {k: v for k, v in request.headers.items() if k not in DROPPED_HEADERS}
        headers["x-carryover-url"] = request.url
        values = {
            "plugin": plugin, "received_at": now, "headers": dumps(headers),
            "body": request.body, "status": PENDING, "attempts": 0, "next_attempt_at": now,
            "trail": "[]",
        }  # fmt: skip
        item = _Pending(values, list(dict.fromkeys(keys)))
        with self._waiting_lock:
            self._waiting.append(item)
        while not item.done.is_set():
            with self._commit_lock:
                if item.done.is_set():
                    break  # another thread committed it while this one waited
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                self._commit_group(batch)
        if item.error is not None:
            raise item.error
        return item.delivery_id

    def _commit_group(self, batch: list[_Pending]) -> None:
        try:
            self._commit(batch)
        except (IntegrityError, DataError) as exc:
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
                item.done.set()

    def _commit(self, batch: list[_Pending]) -> None:
        with self.engine.begin() as conn:
            for item in batch:
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
        for item in batch:  # only now, after the COMMIT succeeded
            item.committed = True

    def get(self, delivery_id: int) -> Row | None:
        """Return one delivery row."""
        with self.engine.begin() as conn:
            return conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()

    def listing(self, status: str | None = None, limit: int = 50) -> list[Row]:
        """Return the newest deliveries, optionally of one status."""
        query = select(
            deliveries.c.id, deliveries.c.plugin, deliveries.c.received_at, deliveries.c.status,
            deliveries.c.attempts, deliveries.c.last_error, deliveries.c.event_keys,
        ).order_by(deliveries.c.id.desc()).limit(limit)  # fmt: skip
        if status:
            query = query.where(deliveries.c.status == status)
        with self.engine.begin() as conn:
            return list(conn.execute(query))


def request_of(row: Row) -> InboundRequest:
    """Rebuild the inbound request a stored delivery came from."""
    headers: Mapping[str, str] = json.loads(row.headers)
    return InboundRequest(
        path=f"/hooks/{row.plugin}",
        url=headers.get("x-carryover-url", ""),
        headers=headers,
        body=bytes(row.body),
    )
