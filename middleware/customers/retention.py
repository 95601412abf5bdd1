"""Retention: raw webhook bodies and old timeline items are deleted after configured periods.

Support data is personal data: it is kept as long as it serves, then goes.

- A raw webhook (an inbound delivery) has served once it is done: it is kept for
  `retention.deliveries_days` after it was finished, so a delivery can still be read on
  its admin page when someone asks about last week's note. A dead letter is kept for the
  same period after its last try, for an admin to replay; then it goes too (what it held
  is that old by then). Pending deliveries are never deleted.
- A timeline item (a ticket, case, call or message) is deleted once it has not changed for
  `retention.timeline_days`, with the notes Carryover wrote about it; an item with a note
  still waiting to be written is kept until the note is written or dead.
- Customers and their identities stay: they link the tools to one person and carry what
  admins decided (merges, splits, preferred channels); erasing a customer removes a person.
  Only a customer left with no identity, no item and no merge or split naming it goes.

Each purge also deletes the look-ups cached from the upstreams' APIs that have expired (see
integrations/lookups.py), whatever the periods: they are copies, kept for the plugin's TTL.

0 keeps for ever. The purge deletes in small batches, each in a transaction of its own, so
that it never holds the store's locks for long beside webhooks being stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    delete,
    exists,
    func,
    not_,
    select,
)

from middleware.customers.identity import lock_identities
from middleware.integrations.lookups import purge_expired_lookups
from middleware.store.queue import DEAD, DONE
from middleware.store.tables import (
    customers,
    deliveries,
    delivery_customers,
    delivery_keys,
    delivery_records,
    identities,
    interactions,
    merges,
    purge_runs,
    reading,
    separations,
    utcnow,
    writes,
)

BATCH = 500  # rows a transaction deletes: milliseconds of locking, even on SQLite
KEPT_RUNS = 48  # purge runs remembered for the overview
PURGE_EVERY_S = 3600.0  # how often the worker purges (every process checks; one purges)


@dataclass(frozen=True)
class Purged:
    """What a purge removed (or, in a dry run, would remove)."""

    deliveries: int = 0
    timeline_items: int = 0
    notes: int = 0
    customers: int = 0

    def __add__(self, other: Purged) -> Purged:
        return Purged(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total(self) -> int:
        """Return how many rows went, of every kind."""
        return self.deliveries + self.timeline_items + self.notes + self.customers


@dataclass(frozen=True)
class PurgeRun:
    """One purge that ran: when it finished and what it removed."""

    finished_at: datetime
    purged: Purged


@dataclass(frozen=True)
class Cutoffs:
    """What is old enough to go: finished before `deliveries`, unchanged since `timeline`."""

    deliveries: datetime | None
    timeline: datetime | None

    @classmethod
    def of(cls, retention: Mapping[str, Any], now: datetime) -> Cutoffs:
        """Return the cutoffs of the `retention` settings (None for a period of 0: for ever)."""

        def before(days: int) -> datetime | None:
            return now - timedelta(days=days) if days else None

        return cls(before(retention["deliveries_days"]), before(retention["timeline_days"]))


def _old_deliveries(cutoff: datetime) -> list[ColumnElement[bool]]:
    """Return the conditions of the deliveries to delete: done, or dead, before cutoff."""
    d = deliveries.c
    # next_attempt_at is when the last try was due: never after it ran, so the index on
    # (status, next_attempt_at) narrows the search; finished_at then decides for done ones.
    return [
        and_(d.status == DONE, d.next_attempt_at < cutoff, d.finished_at < cutoff),
        and_(d.status == DEAD, d.next_attempt_at < cutoff),
    ]


def _old_items(cutoff: datetime) -> ColumnElement[bool]:
    """Return the condition of the timeline items to delete: unchanged since cutoff."""
    waiting = exists().where(
        writes.c.interaction_id == interactions.c.id, writes.c.status.not_in((DONE, DEAD))
    )
    return and_(interactions.c.updated_at < cutoff, not_(waiting))


def _orphans(cutoff: datetime) -> ColumnElement[bool]:
    """Return the condition of customers nothing is left of: no identity, item, merge or split."""
    c = customers.c
    folded = customers.alias("folded")
    # Merges and splits are few beside customers: each list is read once per statement.
    merged = select(merges.c.from_customer).union(select(merges.c.into_customer))
    apart = select(separations.c.customer_a).union(select(separations.c.customer_b))
    return and_(
        c.created_at < cutoff,
        c.merged_into.is_(None),
        not_(exists().where(identities.c.customer_id == c.id)),
        not_(exists().where(interactions.c.customer_id == c.id)),
        not_(exists().where(folded.c.merged_into == c.id)),
        c.id.not_in(merged),
        c.id.not_in(apart),
    )


def count_purgeable(engine: Engine, retention: Mapping[str, Any], now: datetime) -> Purged:
    """Count what a purge would remove now (a dry run), deleting nothing."""
    cutoffs = Cutoffs.of(retention, now)
    found: dict[str, int] = {}
    with reading(engine) as conn:
        if cutoffs.deliveries:
            found["deliveries"] = sum(
                _count(conn, select(func.count()).select_from(deliveries).where(condition))
                for condition in _old_deliveries(cutoffs.deliveries)
            )
        if cutoffs.timeline:
            items = select(interactions.c.id).where(_old_items(cutoffs.timeline))
            found["timeline_items"] = _count(
                conn, select(func.count()).select_from(items.subquery())
            )
            found["notes"] = _count(
                conn, select(func.count()).where(writes.c.interaction_id.in_(items))
            )
            found["customers"] = _count(
                conn, select(func.count()).where(_orphans(cutoffs.timeline))
            )
    return Purged(**found)


def _count(conn: Connection, query: Any) -> int:
    return int(conn.execute(query).scalar() or 0)


def purge(
    engine: Engine,
    retention: Mapping[str, Any],
    now: datetime | None = None,
    stopping: threading.Event | None = None,
    batch: int = BATCH,
) -> Purged:
    """Delete what is older than the retention periods, batch by batch; record the run.

    Stops between batches once `stopping` is set; what was removed until then is recorded.
    """
    now = now or utcnow()
    cutoffs = Cutoffs.of(retention, now)
    stopping = stopping or threading.Event()
    purge_expired_lookups(engine, now)
    kinds: list[tuple[Table, ColumnElement[bool], Remove]] = []
    if cutoffs.deliveries:
        kinds += [
            (deliveries, old, _delete_deliveries) for old in _old_deliveries(cutoffs.deliveries)
        ]
    if cutoffs.timeline:
        kinds += [(interactions, _old_items(cutoffs.timeline), _delete_items),
                  (customers, _orphans(cutoffs.timeline), _delete_customers)]  # fmt: skip
    removed = Purged()
    for table, condition, remove in kinds:
        removed += _in_batches(engine, stopping, table, condition, remove, batch)
    _record(engine, removed)
    return removed


# Deletes rows of the given ids (already checked to still be old, and locked) in a write.
Remove = Callable[[Connection, list[int]], Purged]


def _in_batches(
    engine: Engine, stopping: threading.Event, table: Table, condition: ColumnElement[bool],
    remove: Remove, batch: int,
) -> Purged:  # fmt: skip
    """Delete the table's rows that meet condition, batch after batch, until none is left.

    Each batch is found in a read, which holds up no writer (SQLite's WAL, PostgreSQL), then
    deleted in a short write that checks those rows again: a row changed meanwhile (an old
    ticket updated, a dead letter replayed) is left alone.
    """
    removed = Purged()
    find = select(table.c.id).where(condition).order_by(table.c.id).limit(batch)
    while not stopping.is_set():
        with reading(engine) as conn:
            ids = [int(i) for i in conn.execute(find).scalars()]
        if not ids:
            break
        with engine.begin() as conn:
            if table is not deliveries:  # as erasure: no record is linked meanwhile
                lock_identities(conn)
            still = select(table.c.id).where(table.c.id.in_(ids), condition)
            if conn.dialect.name == "postgresql":
                still = still.with_for_update(of=table)
            old = [int(i) for i in conn.execute(still).scalars()]
            done = remove(conn, old) if old else Purged()
        removed += done
        if len(ids) < batch or not done.total:
            break
    return removed


def _delete_deliveries(conn: Connection, ids: list[int]) -> Purged:
    # The foreign keys cascade too; deleting explicitly does not depend on them.
    conn.execute(delete(delivery_keys).where(delivery_keys.c.delivery_id.in_(ids)))
    conn.execute(delete(delivery_customers).where(delivery_customers.c.delivery_id.in_(ids)))
    gone = conn.execute(delete(deliveries).where(deliveries.c.id.in_(ids))).rowcount
    return Purged(deliveries=int(gone or 0))


def _delete_items(conn: Connection, ids: list[int]) -> Purged:
    notes = conn.execute(delete(writes).where(writes.c.interaction_id.in_(ids))).rowcount
    conn.execute(delete(delivery_records).where(delivery_records.c.interaction_id.in_(ids)))
    items = conn.execute(delete(interactions).where(interactions.c.id.in_(ids))).rowcount
    return Purged(timeline_items=int(items or 0), notes=int(notes or 0))


def _delete_customers(conn: Connection, ids: list[int]) -> Purged:
    gone = conn.execute(delete(customers).where(customers.c.id.in_(ids))).rowcount
    return Purged(customers=int(gone or 0))


def _record(engine: Engine, removed: Purged) -> None:
    """Remember the run for the overview, and forget all but the newest KEPT_RUNS."""
    with engine.begin() as conn:
        conn.execute(purge_runs.insert().values(
            finished_at=utcnow(), deliveries=removed.deliveries,
            timeline_items=removed.timeline_items, notes=removed.notes,
            customers=removed.customers,
        ))  # fmt: skip
        oldest_kept = (
            select(purge_runs.c.id).order_by(purge_runs.c.id.desc())
            .offset(KEPT_RUNS - 1).limit(1).scalar_subquery()
        )  # fmt: skip
        conn.execute(delete(purge_runs).where(purge_runs.c.id < oldest_kept))


def last_purge(conn: Connection) -> PurgeRun | None:
    """Return the newest purge run, or None when none ran yet."""
    row = conn.execute(select(purge_runs).order_by(purge_runs.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    purged = Purged(row.deliveries, row.timeline_items, row.notes, row.customers)
    return PurgeRun(row.finished_at, purged)


def purge_due(engine: Engine, now: datetime, every_s: float = PURGE_EVERY_S) -> bool:
    """Tell whether the last purge (by any process) finished more than every_s ago."""
    with reading(engine) as conn:
        last = conn.execute(select(func.max(purge_runs.c.finished_at))).scalar()
    return last is None or (now - last).total_seconds() >= every_s


def keeps_everything(retention: Mapping[str, Any]) -> bool:
    """Tell whether both periods are 0: nothing is ever purged."""
    return not retention["deliveries_days"] and not retention["timeline_days"]
