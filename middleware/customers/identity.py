"""Recognise the same customer across channels and tools.

Precision before recall: emails and system ids are strong and join records; a phone is weak
and joins only when nothing conflicts. Every identity row and every merge records the record
that caused it, so a link can be explained and undone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import phonenumbers
from sqlalchemy import Connection, func, select, text, update

from middleware.integrations.plugin import IdentityType
from middleware.interaction import Identity
from middleware.store.tables import (
    customers,
    identities,
    inserted_id,
    interactions,
    merges,
    separations,
    utcnow,
)

PHONE = "phone"
EMAIL = "email"
CUSTOMER = "customer"  # Carryover's own customer id (a lookup, never stored as an identity)
JUNK_VALUES = frozenset(
    {"", "anonymous", "restricted", "unknown", "private", "unavailable", "none", "null",
     "withheld", "+266696687", "266696687", "+7378742833", "+2562533", "+86282452253"}
)  # fmt: skip
MAX_VALUE = 255
HANDLE_TYPES = ("twitter", "instagram", "facebook_handle")  # written with or without "@"


def normalise_phone(value: str, region: str) -> str | None:
    """Return the number in E.164, or None for junk, anonymous and invalid numbers."""
    raw = value.strip()
    if raw.lower() in JUNK_VALUES or not any(ch.isdigit() for ch in raw):
        return None
    digits = re.sub(r"\D", "", raw)
    if not digits.strip("0"):
        return None
    candidates = [raw]
    if not raw.startswith("+") and len(digits) >= 10:
        # PBXs often send E.164 without the plus (e.g. 493023125741).
        candidates.append("+" + digits)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            return None if e164 in JUNK_VALUES else e164
    return None


def normalise_email(value: str) -> str | None:
    """Return the address trimmed and case-folded, or None when it is not an address."""
    address = value.strip().casefold()
    if address in JUNK_VALUES or not looks_like_email(address):
        return None
    return address


def looks_like_email(address: str) -> bool:
    """Tell whether text is one local part, one @, and a domain with a dot inside it.

    Plain string tests, linear in the length: the pattern this replaces,
    ^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$, took quadratic time on "a@" and thousands of dots.
    """
    if len(address) > MAX_VALUE or address.count("@") != 1:
        return False
    if any(ch.isspace() for ch in address):
        return False
    local, _, domain = address.partition("@")
    return bool(local) and "." in domain[1:-1]


def normalise_other(value: str) -> str | None:
    """Return the value of an identity type nobody declared, trimmed; None for junk."""
    value = value.strip()
    if value.casefold() in JUNK_VALUES or not value.strip("0"):
        return None
    return value


class IdentityTypes:
    """The identity types of one installation: the core's, and those its plugins declare.

    The core knows phone, email and its own customer id; every other type a mapping writes
    is normalised by the plugin that declared it, or else kept trimmed.
    """

    def __init__(self, declared: Iterable[IdentityType] = ()) -> None:
        self.declared = {t.type: t for t in declared}
        taken = self.declared.keys() & {PHONE, EMAIL, CUSTOMER}
        if taken:
            raise ValueError(f"identity types of the core cannot be declared: {sorted(taken)}")
        # Ids one tool gives its own people: two different values of one type are two people.
        self.system_ids = frozenset(t.type for t in self.declared.values() if t.system_id)
        self.lookups = tuple(t.type for t in self.declared.values() if t.lookup)

    def lookup_params(self) -> tuple[str, ...]:
        """Return the query parameters the context API looks a customer up by."""
        return (PHONE, EMAIL, *self.lookups, CUSTOMER)

    def normalise(self, identity: Identity, region: str) -> Identity | None:
        """Return the identity in canonical form, or None when it must never link."""
        declared = self.declared.get(identity.type)
        if identity.type == PHONE:
            value = normalise_phone(identity.value, region)
        elif identity.type == EMAIL:
            value = normalise_email(identity.value)
        elif declared is not None:
            value = declared.normalise(identity.value)
        else:
            value = normalise_other(identity.value)
            if value and identity.type in HANDLE_TYPES:
                value = value.lstrip("@").casefold()
        # The store holds 255 characters; no real identifier is longer.
        return Identity(identity.type, value) if value and len(value) <= MAX_VALUE else None

    def normalise_all(self, items: Iterable[Identity], region: str) -> tuple[Identity, ...]:
        """Normalise identities, dropping junk and duplicates."""
        found = (self.normalise(i, region) for i in items)
        return tuple(dict.fromkeys(i for i in found if i is not None))


@dataclass(frozen=True)
class Resolution:
    """Who a record belongs to: one customer, or nobody with the candidates to choose from."""

    customer_id: int | None
    candidates: tuple[int, ...] = ()


def _holders(conn: Connection, identity: Identity) -> list[tuple[int, bool]]:
    rows = conn.execute(
        select(identities.c.customer_id, identities.c.shared)
        .where(identities.c.type == identity.type, identities.c.value == identity.value)
        .order_by(identities.c.customer_id)
    )
    return [(row.customer_id, row.shared) for row in rows]


def _identity_values(conn: Connection, customer_id: int) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    rows = conn.execute(
        select(identities.c.type, identities.c.value).where(identities.c.customer_id == customer_id)
    )
    for row in rows:
        found.setdefault(row.type, set()).add(row.value)
    return found


def separated(conn: Connection, a: int, b: int) -> bool:
    """Tell whether an admin split these two customers apart."""
    low, high = min(a, b), max(a, b)
    query = select(separations.c.customer_a).where(
        separations.c.customer_a == low, separations.c.customer_b == high
    )
    return conn.execute(query).first() is not None


def conflict(conn: Connection, a: int, b: int, system_ids: frozenset[str]) -> str | None:
    """Say why two customers must stay apart, or None when nothing conflicts."""
    if separated(conn, a, b):
        return "an admin split them apart"
    ids_a, ids_b = _identity_values(conn, a), _identity_values(conn, b)
    for id_type in (EMAIL, *sorted(system_ids)):
        mine, theirs = ids_a.get(id_type), ids_b.get(id_type)
        if mine and theirs and not mine & theirs:
            return f"both have {id_type} values and share none"
    return None


def create_customer(conn: Connection, name: str | None) -> int:
    """Create an empty customer and return its id."""
    result = conn.execute(customers.insert().values(name=name, created_at=utcnow()))
    return inserted_id(result)


def add_identity(
    conn: Connection, customer_id: int, identity: Identity, caused_by: str, shared: bool = False
) -> None:
    """Give the customer an identity unless it already holds it."""
    exists = conn.execute(
        select(identities.c.id).where(
            identities.c.customer_id == customer_id,
            identities.c.type == identity.type,
            identities.c.value == identity.value,
        )
    ).first()
    if exists is None:
        conn.execute(
            identities.insert().values(
                customer_id=customer_id,
                type=identity.type,
                value=identity.value,
                shared=shared,
                caused_by=caused_by,
                created_at=utcnow(),
            )
        )


def mark_shared(conn: Connection, identity: Identity) -> None:
    """Mark every holder's copy of a phone number as a shared line."""
    conn.execute(
        update(identities)
        .where(identities.c.type == identity.type, identities.c.value == identity.value)
        .values(shared=True)
    )


def merge_customers(
    conn: Connection, source: int, target: int, caused_by: str, reason: str
) -> None:
    """Fold customer `source` into `target`: identities, history and all."""
    if source == target:
        return
    held = {
        (row.type, row.value): row.id
        for row in conn.execute(
            select(identities.c.id, identities.c.type, identities.c.value).where(
                identities.c.customer_id == target
            )
        )
    }
    for row in conn.execute(select(identities).where(identities.c.customer_id == source)).all():
        if (row.type, row.value) in held:
            if row.shared:
                conn.execute(
                    update(identities)
                    .where(identities.c.id == held[(row.type, row.value)])
                    .values(shared=True)
                )
            conn.execute(identities.delete().where(identities.c.id == row.id))
        else:
            conn.execute(
                update(identities).where(identities.c.id == row.id).values(customer_id=target)
            )
    # A line shared only by these two is now one customer's number: calls from it are theirs.
    for row in conn.execute(
        select(identities.c.id, identities.c.type, identities.c.value).where(
            identities.c.customer_id == target, identities.c.shared.is_(True)
        )
    ).all():
        if len(_holders(conn, Identity(row.type, row.value))) == 1:
            conn.execute(update(identities).where(identities.c.id == row.id).values(shared=False))
    conn.execute(
        update(interactions).where(interactions.c.customer_id == source).values(customer_id=target)
    )
    conn.execute(update(customers).where(customers.c.id == target).values(
        name=func.coalesce(customers.c.name, select(customers.c.name).where(
            customers.c.id == source).scalar_subquery())
    ))  # fmt: skip
    conn.execute(update(customers).where(customers.c.id == source).values(merged_into=target))
    conn.execute(
        merges.insert().values(
            from_customer=source, into_customer=target, caused_by=caused_by, reason=reason,
            at=utcnow(),
        )
    )  # fmt: skip


def lock_identities(conn: Connection) -> None:
    """Serialise identity resolution across workers (SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7240001)"))


def resolve_customer(
    conn: Connection,
    found: Sequence[Identity],
    caused_by: str,
    name: str | None = None,
    *,
    types: IdentityTypes,
) -> Resolution:
    """Find or create the customer behind a record's normalised identities, linking as allowed."""
    lock_identities(conn)
    strong = [i for i in found if i.type != PHONE]
    phones = [i for i in found if i.type == PHONE]

    customer: int | None = None
    strong_holders = sorted({cid for i in strong for cid, _ in _holders(conn, i)})
    if strong_holders:
        customer = strong_holders[0]
        for other in strong_holders[1:]:
            if not separated(conn, customer, other):
                merge_customers(conn, other, customer, caused_by, "share a strong identifier")
    elif strong:
        customer = create_customer(conn, name)
    for identity in strong:
        holding = {cid for cid, _ in _holders(conn, identity)}
        if holding and customer not in holding:
            continue  # held by a customer an admin split from this one: it stays theirs
        add_identity(conn, customer, identity, caused_by)  # type: ignore[arg-type]

    candidates: tuple[int, ...] = ()
    for phone in phones:
        holders = _holders(conn, phone)
        others = [(cid, shared) for cid, shared in holders if cid != customer]
        if customer is None:
            if not holders:
                customer = create_customer(conn, name)
                add_identity(conn, customer, phone, caused_by)
            elif len(holders) == 1 and not holders[0][1]:
                customer = holders[0][0]
            else:
                candidates = tuple(cid for cid, _ in holders)
            continue
        if not others:
            add_identity(conn, customer, phone, caused_by)
        elif len(others) == 1 and len(holders) == 1 and not others[0][1]:
            other = others[0][0]
            if conflict(conn, customer, other, types.system_ids) is None:
                merge_customers(conn, other, customer, caused_by, f"share phone {phone.value}")
            else:
                add_identity(conn, customer, phone, caused_by)
                mark_shared(conn, phone)
        else:
            add_identity(conn, customer, phone, caused_by)
            mark_shared(conn, phone)

    if customer is not None and name:
        conn.execute(
            update(customers)
            .where(customers.c.id == customer, customers.c.name.is_(None))
            .values(name=name)
        )
    return Resolution(customer, candidates)


def find_holders(conn: Connection, identity: Identity) -> list[tuple[int, bool]]:
    """Return (customer id, shared) for each customer holding the identity."""
    return _holders(conn, identity)


def candidates_of(conn: Connection, customer_ids: Sequence[int]) -> list[dict[str, object]]:
    """Name the customers a shared line could be, for an agent to choose from."""
    names = dict(
        conn.execute(
            select(customers.c.id, customers.c.name).where(customers.c.id.in_(customer_ids))
        ).all()
    )
    return [{"id": cid, "name": names.get(cid)} for cid in customer_ids]
