"""Export one customer's data (the counterpart of erasure): what Carryover holds about them.

The same rows erasure deletes, read instead: the customer and those merged into it, their
identities, merges and splits, timeline items with their words, the notes written about
them, and which raw deliveries spoke of them. A delivery is listed by id, integration, time
and status, never with its body: a raw webhook may hold other people's data and is shown
to admins only on its own page. Nothing secret is stored with these rows, so none is here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select

from middleware.customers.preferences import BEHAVIOUR, preference_of
from middleware.store.tables import (
    customers,
    deliveries,
    delivery_customers,
    identities,
    interactions,
    merges,
    separations,
    utcnow,
    writes,
)

EXPORT_FORMAT = 1  # raised when a field changes meaning or goes


def _time(moment: datetime | None) -> str | None:
    """Return a stored (UTC, naive) time as ISO 8601 with its zone, or None."""
    return moment.isoformat(timespec="seconds") + "Z" if moment else None


def folded_customers(conn: Connection, customer_id: int) -> list[int]:
    """Return the customer and every customer merged into it (at any depth), in id order."""
    ids = {customer_id}
    while True:
        more = set(
            conn.execute(select(customers.c.id).where(customers.c.merged_into.in_(ids))).scalars()
        ) - ids  # fmt: skip
        if not more:
            return sorted(ids)
        ids |= more


def _preference_source(person: Any) -> dict[str, Any]:
    """Say where the preferred channels came from: survey or admin (when, what), or behaviour."""
    explicit = preference_of(person)
    if explicit is None:
        return {"source": BEHAVIOUR}
    return {"source": explicit.source, "at": _time(explicit.at), "caused_by": explicit.caused_by}


def export_customer(conn: Connection, customer_id: int) -> dict[str, Any] | None:
    """Return everything held about a customer as JSON-ready data; None if there is none."""
    person = conn.execute(select(customers).where(customers.c.id == customer_id)).first()
    if person is None:
        return None
    ids = folded_customers(conn, customer_id)
    return {
        "format": EXPORT_FORMAT,
        "exported_at": _time(utcnow()),
        "customer": {
            "id": person.id,
            "name": person.name,
            "created_at": _time(person.created_at),
            "preferred_channels": json.loads(person.preferred_channels or "[]"),
            "preferred_channels_source": _preference_source(person),
            "merged_into": person.merged_into,
            "merged_from": [i for i in ids if i != customer_id],
        },
        "identities": _identities(conn, ids),
        "merges": _merges(conn, ids),
        "kept_apart_from": _separations(conn, ids),
        "timeline": _timeline(conn, ids),
        "notes": _notes(conn, ids),
        "deliveries": _deliveries(conn, ids),
    }


def _identities(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    query = select(identities).where(identities.c.customer_id.in_(ids)).order_by(identities.c.id)
    return [
        {"type": r.type, "value": r.value, "shared": bool(r.shared), "linked_by": r.caused_by,
         "linked_at": _time(r.created_at)}
        for r in conn.execute(query)
    ]  # fmt: skip


def _merges(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    query = (
        select(merges)
        .where(or_(merges.c.from_customer.in_(ids), merges.c.into_customer.in_(ids)))
        .order_by(merges.c.id)
    )
    return [
        {"from": r.from_customer, "into": r.into_customer, "by": r.caused_by,
         "reason": r.reason, "at": _time(r.at)}
        for r in conn.execute(query)
    ]  # fmt: skip


def _separations(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    query = select(separations).where(
        or_(separations.c.customer_a.in_(ids), separations.c.customer_b.in_(ids))
    )
    return [
        {"customer": r.customer_b if r.customer_a in ids else r.customer_a, "by": r.caused_by,
         "at": _time(r.at)}
        for r in conn.execute(query)
    ]  # fmt: skip


def _timeline(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    i = interactions.c
    query = select(interactions).where(i.customer_id.in_(ids)).order_by(i.occurred_at, i.id)
    return [
        {"id": r.id, "source": r.source, "kind": r.kind, "record": r.external_id,
         "number": r.number, "channel": r.channel, "direction": r.direction,
         "occurred_at": _time(r.occurred_at), "updated_at": _time(r.updated_at),
         "status": r.status, "subject": r.subject, "text": r.text, "said_by": r.said_by,
         "name_given": r.customer_name, "agent": r.agent, "team": r.team, "link": r.link,
         "duration_s": r.duration_s, "recording": r.recording}
        for r in conn.execute(query)
    ]  # fmt: skip


def _notes(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    theirs = select(interactions.c.id).where(interactions.c.customer_id.in_(ids))
    query = select(writes).where(writes.c.interaction_id.in_(theirs)).order_by(writes.c.id)
    return [
        {"id": r.id, "timeline_item": r.interaction_id, "written_to": r.target,
         "record": r.target_ref, "purpose": r.purpose, "status": r.status, "text": r.body,
         "queued_at": _time(r.created_at), "written_at": _time(r.done_at)}
        for r in conn.execute(query)
    ]  # fmt: skip


def _deliveries(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    theirs = select(delivery_customers.c.delivery_id).where(
        delivery_customers.c.customer_id.in_(ids)
    )
    query = (
        select(deliveries.c.id, deliveries.c.plugin, deliveries.c.received_at, deliveries.c.status)
        .where(deliveries.c.id.in_(theirs))
        .order_by(deliveries.c.id)
    )
    return [
        {"id": r.id, "integration": r.plugin, "received_at": _time(r.received_at),
         "status": r.status}
        for r in conn.execute(query)
    ]  # fmt: skip
