"""What admins do with customers: find, read, split an identity off, merge, prefer, erase."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, or_, select, update

from middleware.customers.identity import (
    create_customer,
    lock_identities,
    merge_customers,
    normalise_email,
    normalise_phone,
)
from middleware.customers.preferences import (
    ADMIN,
    SURVEY,
    Preference,
    delivery_of_record,
    known_channels,
    preference_of,
    set_preference,
)
from middleware.integrations.lookups import erase_lookups
from middleware.interaction import CHANNELS
from middleware.store.tables import (
    customers,
    deliveries,
    delivery_customers,
    delivery_records,
    dialect_insert,
    identities,
    interactions,
    merges,
    separations,
    utcnow,
    writes,
)

SEARCH_LIMIT = 50
# The longest name or identity value the store holds (both are String(255) columns): a
# longer search text matches nothing.
LONGEST_SEARCHED = 255


class CustomerError(ValueError):
    """An admin's change to a customer cannot be made; the message says why."""


@dataclass(frozen=True)
class Found:
    """One customer in search results."""

    id: int
    name: str | None
    identities: list[tuple[str, str]]
    contacts: int
    last_contact: datetime | None


def live_customer(conn: Connection, customer_id: int) -> int | None:
    """Follow merges to the customer an id stands for now; None when there is none."""
    seen: set[int] = set()
    current: int | None = customer_id
    while current is not None and current not in seen:
        seen.add(current)
        row = conn.execute(select(customers.c.merged_into).where(customers.c.id == current)).first()
        if row is None:
            return None
        if row.merged_into is None:
            return current
        current = int(row.merged_into)
    return None


def customer_name(conn: Connection, customer_id: int) -> str | None:
    """Return the customer's display name, or None when the customer has none."""
    return conn.execute(select(customers.c.name).where(customers.c.id == customer_id)).scalar()


def search_customers(conn: Connection, text: str, region: str) -> list[Found]:
    """Find customers by email, phone (any format) or part of a name or identifier."""
    text = text.strip()
    if len(text) > LONGEST_SEARCHED:
        # Nothing stored is longer, and SQLite refuses LIKE patterns over 50,000 bytes.
        return []
    query = select(customers.c.id).where(customers.c.merged_into.is_(None))
    email, phone = normalise_email(text), normalise_phone(text, region) if text else None
    if email:
        query = query.where(customers.c.id.in_(
            select(identities.c.customer_id).where(identities.c.value == email)))  # fmt: skip
    elif phone:
        query = query.where(customers.c.id.in_(
            select(identities.c.customer_id).where(identities.c.value == phone)))  # fmt: skip
    elif text:
        # What was typed is matched as text: a % or _ in it is that character, no wildcard.
        pattern = f"%{like_escaped(text.casefold())}%"
        # Part of a phone number, or one with a dialling prefix, as digits among phones.
        phones = [identities.c.value.like(f"%{digits}%") for digits in phone_fragments(text)]
        query = query.where(or_(
            func.lower(customers.c.name).like(pattern, escape="\\"),
            customers.c.id.in_(select(identities.c.customer_id).where(
                func.lower(identities.c.value).like(pattern, escape="\\"))),
            *([customers.c.id.in_(select(identities.c.customer_id).where(
                identities.c.type == "phone", or_(*phones)))] if phones else []),
        ))  # fmt: skip
    ids = [
        row.id for row in conn.execute(query.order_by(customers.c.id.desc()).limit(SEARCH_LIMIT))
    ]
    return [_found(conn, customer_id) for customer_id in ids]


def like_escaped(text: str) -> str:
    """Return text for a LIKE pattern (escape character \\) that matches it literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


PHONE_CHARACTERS = frozenset("0123456789 +-().")
MIN_PHONE_DIGITS = 4


def phone_fragments(text: str) -> tuple[str, ...]:
    """Return the digit runs a phone number written in part, or with a dialling prefix, can
    be found by among stored E.164 numbers: "555-0142" → 5550142; "001 415 555 0142" →
    0014155550142 and 14155550142 (00 and 011 dial abroad; a leading 0 is a trunk prefix).
    Nothing for text that is not a phone number's characters."""
    if not text or not set(text) <= PHONE_CHARACTERS:
        return ()
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) < MIN_PHONE_DIGITS:
        return ()
    found = [digits]
    for prefix in ("011", "00", "0"):
        if digits.startswith(prefix) and len(digits) - len(prefix) >= MIN_PHONE_DIGITS:
            found.append(digits[len(prefix) :])
            break
    return tuple(found)


def _found(conn: Connection, customer_id: int) -> Found:
    name = conn.execute(select(customers.c.name).where(customers.c.id == customer_id)).scalar()
    held = conn.execute(
        select(identities.c.type, identities.c.value)
        .where(identities.c.customer_id == customer_id)
        .order_by(identities.c.id)
    ).all()
    count, last = conn.execute(
        select(func.count(), func.max(interactions.c.occurred_at)).where(
            interactions.c.customer_id == customer_id
        )
    ).one()
    return Found(customer_id, name, [(r.type, r.value) for r in held], int(count), last)


def customer_profile(conn: Connection, customer_id: int) -> dict[str, Any]:
    """Return a customer with each identity and the record that linked it, and the merges."""
    person = conn.execute(select(customers).where(customers.c.id == customer_id)).one()
    held = conn.execute(
        select(identities).where(identities.c.customer_id == customer_id).order_by(identities.c.id)
    ).all()
    history = conn.execute(
        select(merges)
        .where(or_(merges.c.into_customer == customer_id, merges.c.from_customer == customer_id))
        .order_by(merges.c.at)
    ).all()
    apart = conn.execute(
        select(separations).where(or_(separations.c.customer_a == customer_id,
                                      separations.c.customer_b == customer_id))
    ).all()  # fmt: skip
    preference = preference_of(person)
    return {
        "id": person.id,
        "name": person.name,
        "created_at": person.created_at,
        "preferred_channels": json.loads(person.preferred_channels or "[]"),
        "preference": preference,
        # The delivery of the survey answer that set the preference, to link it.
        "preference_delivery": (
            delivery_of_record(conn, preference.caused_by)
            if preference is not None and preference.source == SURVEY
            else None
        ),
        "identities": held,
        "merges": history,
        "separations": [
            {
                "other": s.customer_b if s.customer_a == customer_id else s.customer_a,
                "caused_by": s.caused_by,
                "at": s.at,
            }
            for s in apart
        ],  # fmt: skip
    }


def split_identity(conn: Connection, customer_id: int, identity_id: int, admin: str) -> int:
    """Move one identity, and the records only it linked, to a new customer kept apart."""
    lock_identities(conn)
    row = conn.execute(
        select(identities).where(identities.c.id == identity_id,
                                 identities.c.customer_id == customer_id)
    ).first()  # fmt: skip
    if row is None:
        raise CustomerError(f"customer {customer_id} holds no identity {identity_id}")
    others = conn.execute(
        select(identities.c.type, identities.c.value).where(
            identities.c.customer_id == customer_id, identities.c.id != identity_id
        )
    ).all()
    if not others:
        raise CustomerError("this is the customer's only identity: there is nothing to split off")
    new_customer = create_customer(conn, None)
    conn.execute(update(identities).where(identities.c.id == identity_id)
                 .values(customer_id=new_customer, caused_by=f"admin:{admin} (split)"))  # fmt: skip
    kept = {(r.type, r.value) for r in others}
    moved = []
    for record in conn.execute(
        select(interactions.c.id, interactions.c.identities).where(
            interactions.c.customer_id == customer_id
        )
    ):
        carried = {tuple(pair) for pair in json.loads(record.identities or "[]")}
        if (row.type, row.value) in carried and not carried & kept:
            moved.append(record.id)
    if moved:
        conn.execute(update(interactions).where(interactions.c.id.in_(moved))
                     .values(customer_id=new_customer))  # fmt: skip
    _separate(conn, customer_id, new_customer, f"admin:{admin}")
    return new_customer


def _separate(conn: Connection, a: int, b: int, caused_by: str) -> None:
    statement = dialect_insert(conn, separations).values(
        customer_a=min(a, b), customer_b=max(a, b), caused_by=caused_by, at=utcnow()
    )
    conn.execute(statement.on_conflict_do_nothing())


def merge_by_admin(conn: Connection, source: int, target: int, admin: str) -> None:
    """Fold customer `source` into `target`, as an admin decided (a split between them ends)."""
    lock_identities(conn)
    if source == target:
        raise CustomerError("a customer cannot be merged into itself")
    for customer_id in (source, target):
        if live_customer(conn, customer_id) != customer_id:
            raise CustomerError(f"there is no customer {customer_id} (or it was merged already)")
    conn.execute(delete(separations).where(
        separations.c.customer_a == min(source, target),
        separations.c.customer_b == max(source, target),
    ))  # fmt: skip
    merge_customers(conn, source, target, f"admin:{admin}", "merged by an admin")


def set_preferred_channels(
    conn: Connection, customer_id: int, channels: list[str], admin: str = "admin"
) -> None:
    """Record the channels an admin says the customer prefers (empty: derive from contacts)."""
    known, unknown = known_channels(channels)
    if unknown:
        raise CustomerError(f"{unknown[0]!r} is not one of {', '.join(CHANNELS)}")
    preference = Preference(known, ADMIN, utcnow(), f"admin:{admin}") if known else None
    set_preference(conn, customer_id, preference)


def erase_customer(conn: Connection, customer_id: int) -> dict[str, int]:
    """Delete every row about a customer, the customers merged into it and the raw deliveries
    that spoke of them; return how many rows of each kind went."""
    lock_identities(conn)
    ids = {customer_id}
    while True:
        more = {row.id for row in conn.execute(
            select(customers.c.id).where(customers.c.merged_into.in_(ids)))} - ids  # fmt: skip
        if not more:
            break
        ids |= more
    their_interactions = select(interactions.c.id).where(interactions.c.customer_id.in_(ids))
    their_deliveries = select(delivery_customers.c.delivery_id).where(
        delivery_customers.c.customer_id.in_(ids)
    )
    conn.execute(delete(delivery_records).where(
        delivery_records.c.interaction_id.in_(their_interactions)))  # fmt: skip
    looked_up = erase_lookups(conn, ids)  # found by the identities, so before they go
    counts = {
        "notes": _delete(conn, delete(writes).where(
            writes.c.interaction_id.in_(their_interactions))),
        "deliveries": _delete(conn, delete(deliveries).where(
            deliveries.c.id.in_(their_deliveries))),
        "interactions": _delete(conn, delete(interactions).where(
            interactions.c.customer_id.in_(ids))),
        "identities": _delete(conn, delete(identities).where(identities.c.customer_id.in_(ids))),
        "cached lookups": looked_up,
    }  # fmt: skip
    conn.execute(delete(delivery_customers).where(delivery_customers.c.customer_id.in_(ids)))
    conn.execute(delete(merges).where(or_(merges.c.from_customer.in_(ids),
                                          merges.c.into_customer.in_(ids))))  # fmt: skip
    conn.execute(delete(separations).where(or_(separations.c.customer_a.in_(ids),
                                               separations.c.customer_b.in_(ids))))  # fmt: skip
    conn.execute(update(customers).where(customers.c.id.in_(ids)).values(merged_into=None))
    counts["customers"] = _delete(conn, delete(customers).where(customers.c.id.in_(ids)))
    return counts


def _delete(conn: Connection, statement: Any) -> int:
    return int(conn.execute(statement).rowcount or 0)
