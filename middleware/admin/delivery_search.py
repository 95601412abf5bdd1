"""Find deliveries and notes by ticket, case, call or customer, a page at a time.

Every lookup is an equality on an indexed column, never a pattern made of what was typed:
a record by its id or number (ix_interactions_external_id, ix_interactions_number), the
deliveries that recorded it (ix_delivery_records_interaction) or spoke of a customer
(ix_delivery_customers_customer), the notes of a record (ix_writes_interaction) or on a
ticket (uq_writes_once). Only the customer part reads like the customers page does, through
search_customers. Pages go by id (keyset), so a deep page costs what the first one does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    and_,
    false,
    func,
    or_,
    select,
)

from middleware.customers.edits import LONGEST_SEARCHED, live_customer, search_customers
from middleware.store.tables import (
    customers,
    deliveries,
    delivery_customers,
    delivery_records,
    interactions,
    writes,
)

RECORDS_MATCHED = 50  # ids and numbers are nearly unique: more is a typing slip
MERGE_DEPTH = 5  # customers merged into a found one, and into those, this many steps back
CUSTOMER_ID = re.compile(r"customer[\s:#]*(\d{1,18})", re.IGNORECASE)


@dataclass(frozen=True)
class Matched:
    """What a search text was read as: records (tickets, cases, calls) or customers."""

    records: tuple[Row, ...] = ()
    customers: tuple[tuple[int, str | None], ...] = ()  # (id, name), as found
    customer_ids: frozenset[int] = frozenset()  # and every customer merged into them

    @property
    def anything(self) -> bool:
        """Tell whether the text found a record or a customer."""
        return bool(self.records or self.customer_ids)


@dataclass(frozen=True)
class Page:
    """One page of deliveries or notes, newest first, with the ids that page on."""

    rows: list[Row]
    total: int
    by_status: dict[str, int]
    newer: int | None = None  # pass as after= for the newer page
    older: int | None = None  # pass as before= for the older page


def read_search(conn: Connection, text: str, region: str) -> Matched:
    """Read a search text as a record id or number, else as a customer."""
    text = text.replace("\x00", "").strip()
    if not text or len(text) > LONGEST_SEARCHED:
        return Matched()
    explicit = CUSTOMER_ID.fullmatch(text)
    if explicit:
        found = conn.execute(
            select(customers.c.id, customers.c.name).where(customers.c.id == int(explicit.group(1)))
        ).all()
        pairs = tuple((int(r.id), r.name) for r in found)
        return Matched(customers=pairs, customer_ids=_with_merged(conn, {i for i, _ in pairs}))
    ref = text.removeprefix("#").strip()
    records = tuple(
        conn.execute(
            select(interactions)
            .where(or_(interactions.c.external_id == ref, interactions.c.number == ref))
            .order_by(interactions.c.id.desc())
            .limit(RECORDS_MATCHED)
        )
    )
    if records:
        return Matched(records=records)
    people = search_customers(conn, text, region)
    pairs = tuple((p.id, p.name) for p in people)
    return Matched(customers=pairs, customer_ids=_with_merged(conn, {p.id for p in people}))


def _with_merged(conn: Connection, ids: set[int]) -> frozenset[int]:
    """Add the customers merged into these: their deliveries still name the old id."""
    found, frontier = set(ids), set(ids)
    for _ in range(MERGE_DEPTH):
        if not frontier:
            break
        frontier = (
            set(
                conn.execute(
                    select(customers.c.id).where(customers.c.merged_into.in_(sorted(frontier)))
                ).scalars()
            )
            - found
        )
        found |= frontier
    return frozenset(found)


def inbound_filter(matched: Matched | None) -> ColumnElement[bool] | None:
    """Return the condition on deliveries that a search adds, or None for no search."""
    if matched is None:
        return None
    t = deliveries
    if matched.records:
        ids = sorted(r.id for r in matched.records)
        return t.c.id.in_(
            select(delivery_records.c.delivery_id).where(delivery_records.c.interaction_id.in_(ids))
        )
    if matched.customer_ids:
        return t.c.id.in_(
            select(delivery_customers.c.delivery_id).where(
                delivery_customers.c.customer_id.in_(sorted(matched.customer_ids))
            )
        )
    return false()


def outbound_filter(matched: Matched | None) -> ColumnElement[bool] | None:
    """Return the condition on notes that a search adds, or None for no search."""
    if matched is None:
        return None
    t = writes
    if matched.records:
        ids = sorted(r.id for r in matched.records)
        on_them = [
            and_(t.c.target == r.source, t.c.target_ref == r.external_id) for r in matched.records
        ]
        return or_(t.c.interaction_id.in_(ids), *on_them)
    if matched.customer_ids:
        theirs = select(interactions.c.id).where(
            interactions.c.customer_id.in_(sorted(matched.customer_ids))
        )
        return t.c.interaction_id.in_(theirs)
    return false()


def page_of(
    conn: Connection,
    table: Table,
    conditions: list[ColumnElement[bool]],
    status: str,
    size: int,
    *,
    before: int | None = None,
    after: int | None = None,
) -> Page:
    """Return one page of a table's rows newest first: older than `before` or newer than `after`."""
    t = table
    by_status = {
        str(s): int(n)
        for s, n in conn.execute(
            select(t.c.status, func.count()).where(*conditions).group_by(t.c.status)
        )
    }
    wanted = [*conditions, t.c.status == status] if status else conditions
    query: Select[Any] = select(t).where(*wanted)
    if after is not None:
        ascending = list(conn.execute(
            query.where(t.c.id > after).order_by(t.c.id).limit(size + 1)
        ))  # fmt: skip
        rows = list(reversed(ascending[:size]))
        more_newer = len(ascending) > size
        more_older = bool(rows) and _exists(conn, t, wanted, t.c.id < rows[-1].id)
    else:
        if before is not None:
            query = query.where(t.c.id < before)
        found = list(conn.execute(query.order_by(t.c.id.desc()).limit(size + 1)))
        rows = found[:size]
        more_older = len(found) > size
        more_newer = bool(rows) and _exists(conn, t, wanted, t.c.id > rows[0].id)
    total = by_status.get(status, 0) if status else sum(by_status.values())
    return Page(
        rows=rows,
        total=total,
        by_status=by_status,
        newer=rows[0].id if more_newer else None,
        older=rows[-1].id if more_older else None,
    )


def _exists(
    conn: Connection, t: Table, wanted: list[ColumnElement[bool]], beyond: ColumnElement[bool]
) -> bool:
    return conn.execute(select(t.c.id).where(*wanted, beyond).limit(1)).first() is not None


def links_of_delivery(conn: Connection, delivery_id: int) -> dict[str, Any]:
    """Return what a delivery links to: the customers it spoke of, its records, their notes."""
    spoke_of = conn.execute(
        select(delivery_customers.c.customer_id)
        .where(delivery_customers.c.delivery_id == delivery_id)
        .order_by(delivery_customers.c.customer_id)
    ).scalars()
    people = [_customer(conn, customer_id) for customer_id in spoke_of]
    records = list(conn.execute(
        select(interactions)
        .join(delivery_records, delivery_records.c.interaction_id == interactions.c.id)
        .where(delivery_records.c.delivery_id == delivery_id)
        .order_by(interactions.c.id)
    ))  # fmt: skip
    notes = list(conn.execute(
        select(writes).where(writes.c.interaction_id.in_([r.id for r in records]))
        .order_by(writes.c.id)
    )) if records else []  # fmt: skip
    return {"people": [p for p in people if p is not None], "records": records, "notes": notes}


def links_of_note(conn: Connection, row: Row) -> dict[str, Any]:
    """Return what a note links to: the record that caused it, its customer, its deliveries."""
    record = conn.execute(
        select(interactions).where(interactions.c.id == row.interaction_id)
    ).first()
    person = _customer(conn, record.customer_id) if record and record.customer_id else None
    carried = list(conn.execute(
        select(deliveries.c.id, deliveries.c.plugin, deliveries.c.received_at,
               deliveries.c.status, deliveries.c.attempts, deliveries.c.event_keys)
        .join(delivery_records, delivery_records.c.delivery_id == deliveries.c.id)
        .where(delivery_records.c.interaction_id == row.interaction_id)
        .order_by(deliveries.c.id)
    ))  # fmt: skip
    return {"record": record, "person": person, "carried": carried}


def _customer(conn: Connection, customer_id: int) -> Row | None:
    """Return the customer an id stands for now (merges followed), with its name."""
    live = live_customer(conn, customer_id)
    if live is None:
        return None
    return conn.execute(
        select(customers.c.id, customers.c.name).where(customers.c.id == live)
    ).first()
