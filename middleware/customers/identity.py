"""Recognise the same customer across channels and tools.

Precision before recall: emails and system ids are strong and join records; a phone is weak
and joins only when nothing conflicts. Every identity row and every merge records the record
that caused it, so a link can be explained and undone.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import phonenumbers
from sqlalchemy import Connection, bindparam, func, select, text, update

from middleware.customers.preferences import newer_preference, set_preference
from middleware.integrations.plugin import IdentityType
from middleware.interaction import Identity
from middleware.store.tables import (
    advisory_key,
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


PHONE_CACHED_CHARS = 64  # longer values are no phone number, and are not kept


def normalise_phone(value: str, region: str) -> str | None:
    """Return the number in E.164, or None for junk, anonymous and invalid numbers.

    Parsing a number costs more than the rest of a record's resolution in Python, and the
    same callers ring again and again: recent answers are kept (a bounded number of short
    values, so hostile input cannot grow the cache)."""
    if len(value) <= PHONE_CACHED_CHARS:
        return _normalise_phone_cached(value, region)
    return _normalise_phone(value, region)


def _normalise_phone(value: str, region: str) -> str | None:
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


_normalise_phone_cached = functools.lru_cache(maxsize=8192)(_normalise_phone)


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
    created: bool = False  # the customer is new, made for this record: it has no other history
    merged: bool = False  # other customers were merged into it: their records are its now


_HOLDERS = (
    select(identities.c.customer_id, identities.c.shared)
    .where(identities.c.type == bindparam("type"), identities.c.value == bindparam("value"))
    .order_by(identities.c.customer_id)
)
_HOLDERS_OF_VALUES = select(
    identities.c.type, identities.c.value, identities.c.customer_id, identities.c.shared
).where(
    identities.c.type.in_(bindparam("types", expanding=True)),
    identities.c.value.in_(bindparam("values", expanding=True)),
)
_ADD_IDENTITY = identities.insert()
VALUES_PER_QUERY = 500


def _holders(conn: Connection, identity: Identity) -> list[tuple[int, bool]]:
    rows = conn.execute(_HOLDERS, {"type": identity.type, "value": identity.value})
    return [(row.customer_id, row.shared) for row in rows]


class KnownHolders:
    """Who holds which identities, as resolution goes: read once, kept up to date.

    Resolution holds its identities' locks and their holders' rows (or the whole identity
    lock: `locked`) until its transaction ends, so what it read stays true there, changed
    only by resolution itself, which tells this cache. An import reads
    the holders of a whole batch of records in one query (`load`); a webhook's resolution
    uses a cache of its own. After a merge, or a rolled-back savepoint, `forget` drops it all.
    """

    def __init__(self) -> None:
        self._held: dict[Identity, list[tuple[int, bool]]] = {}
        self.named: set[int] = set()  # customers known to have a name
        self.locked = False  # the whole identity lock is held: no finer lock is needed
        self.values_locked = False  # the caller locked the record's identities (lock_some)
        self._rows_held: set[int] = set()  # customers whose rows this transaction locked

    def lock_all_read(self, conn: Connection) -> None:
        """Lock the rows of every customer read as a holder so far, in one statement, in id
        order; if one was merged away meanwhile, forget what was read (it is read again)."""
        read = {cid for holders in self._held.values() for cid, _ in holders}
        if not self.lock_customers(conn, read):
            self.forget()

    def lock_customers(self, conn: Connection, ids: Iterable[int]) -> bool:
        """Lock the customers' rows (see lock_customers), but for those this transaction
        locked already: those stay locked, and as they were, until it ends."""
        wanted = set(ids) - self._rows_held
        if not lock_customers(conn, wanted, self.named):
            return False
        self._rows_held |= wanted
        return True

    def load(self, conn: Connection, wanted: Iterable[Identity]) -> None:
        """Read the holders of many identities at once."""
        missing = {i for i in wanted if i not in self._held}
        types = sorted({i.type for i in missing})
        values = sorted({i.value for i in missing})
        for i in range(0, len(values), VALUES_PER_QUERY):
            chunk = values[i : i + VALUES_PER_QUERY]
            for row in conn.execute(_HOLDERS_OF_VALUES, {"types": types, "values": chunk}):
                identity = Identity(row.type, row.value)
                if identity in missing:
                    self._held.setdefault(identity, []).append((row.customer_id, row.shared))
        for identity in missing:
            self._held.setdefault(identity, []).sort()

    def of(self, conn: Connection, identity: Identity) -> list[tuple[int, bool]]:
        """Return (customer id, shared) for each holder of the identity, by customer id."""
        if identity not in self._held:
            self._held[identity] = _holders(conn, identity)
        return list(self._held[identity])

    def add(self, conn: Connection, customer_id: int, identity: Identity, caused_by: str) -> None:
        """Give the customer an identity unless it already holds it."""
        self.add_all(conn, customer_id, [identity], caused_by)

    def add_all(
        self, conn: Connection, customer_id: int, wanted: Iterable[Identity], caused_by: str
    ) -> None:
        """Give the customer the identities it does not hold yet, in one statement."""
        now = utcnow()
        rows = []
        for identity in dict.fromkeys(wanted):
            holders = self.of(conn, identity)
            if any(cid == customer_id for cid, _ in holders):
                continue
            rows.append({"customer_id": customer_id, "type": identity.type,
                         "value": identity.value, "shared": False, "caused_by": caused_by,
                         "created_at": now})  # fmt: skip
            self._held[identity] = sorted([*holders, (customer_id, False)])
        if rows:
            conn.execute(_ADD_IDENTITY, rows)

    def mark_shared(self, conn: Connection, identity: Identity) -> None:
        """Mark every holder's copy of a phone number as a shared line."""
        mark_shared(conn, identity)
        if identity in self._held:
            self._held[identity] = [(cid, True) for cid, _ in self._held[identity]]

    def forget(self) -> None:
        """Drop what was read (a merge moved identities, or a savepoint was rolled back)."""
        self._held.clear()
        self.named.clear()
        self._rows_held.clear()


_VALUES_OF = select(identities.c.type, identities.c.value).where(
    identities.c.customer_id == bindparam("customer_id")
)


def _identity_values(conn: Connection, customer_id: int) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row in conn.execute(_VALUES_OF, {"customer_id": customer_id}):
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
    return inserted_id(conn.execute(_NEW_CUSTOMER, {"name": name, "created_at": utcnow()}))


_NEW_CUSTOMER = customers.insert()


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
    _keep_newer_preference(conn, source, target)
    conn.execute(update(customers).where(customers.c.id == source).values(merged_into=target))
    conn.execute(
        merges.insert().values(
            from_customer=source, into_customer=target, caused_by=caused_by, reason=reason,
            at=utcnow(),
        )
    )  # fmt: skip


def _keep_newer_preference(conn: Connection, source: int, target: int) -> None:
    """Give the merged customer the newer explicit preference of the two (if any)."""
    rows = {
        r.id: r for r in conn.execute(select(customers).where(customers.c.id.in_((source, target))))
    }
    set_preference(conn, target, newer_preference(rows[source], rows[target]))


# On PostgreSQL, resolution locks only what it touches, so that workers resolve different
# customers side by side: the identities a record carries (advisory locks keyed by a hash of
# each, taken in sorted order), then the rows of the customers holding them. Whatever rewrites
# customers wholesale (an admin's edit, erasure, the purge, an import's batch) takes the whole
# lock instead, which waits for every resolution under way and keeps new ones out. SQLite
# needs none of it: its BEGIN IMMEDIATE lets one writer in at a time.
WHOLE_LOCK = 7240001  # shared by every resolution, exclusive for the whole
IDENTITY_LOCK_SPACE = 7240002  # one identity: the first key of its two-key advisory lock
_LOCK_WHOLE = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=WHOLE_LOCK)
_LOCK_SOME = text(
    "SELECT pg_advisory_xact_lock_shared(:whole), count(pg_advisory_xact_lock(:space, key))"
    " FROM (SELECT key FROM unnest(CAST(:keys AS integer[])) WITH ORDINALITY AS k(key, n)"
    " ORDER BY n) AS sorted"
).bindparams(whole=WHOLE_LOCK, space=IDENTITY_LOCK_SPACE)
_LOCK_CUSTOMERS = (
    select(customers.c.id, customers.c.merged_into, customers.c.name.is_not(None).label("named"))
    .where(customers.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(customers.c.id)
    .with_for_update()
)
RECORD_LOCK = "\x00record"  # the type of a record's lock key (see record_lock)
RESOLVE_TRIES = 5  # a holder merged away meanwhile is read again; a merge per try is plenty


class ResolutionRaced(Exception):
    """Customers kept being merged away while a record was being resolved; try it later."""


def lock_identities(conn: Connection) -> None:
    """Take the whole identity lock until commit, for a change that may touch any customer."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_WHOLE)


def lock_some(conn: Connection, found: Iterable[Identity]) -> None:
    """Lock the identities a record carries until commit (none: only keep the whole out).

    Taken in one statement, in sorted order, so two resolutions never wait in a circle. The
    pipeline adds the record itself (see record_lock), so that two events of one record are
    recorded one after the other even when they carry different identities.
    """
    if conn.dialect.name == "postgresql":
        keys = sorted({identity_key(i) for i in found})
        conn.execute(_LOCK_SOME, {"keys": keys})


def record_lock(source: str, kind: str, external_id: str) -> Identity:
    """Name a record as lock_some locks it: a key no identity type shares."""
    return Identity(RECORD_LOCK, f"{source}\x00{kind}\x00{external_id}")


def identity_key(identity: Identity) -> int:
    """Return the 32-bit signed advisory-lock key of an identity (collisions only wait)."""
    return advisory_key(f"{identity.type}\x00{identity.value}")


def lock_customers(conn: Connection, ids: Iterable[int], named: set[int] | None = None) -> bool:
    """Lock customers' rows until commit; False when one was merged away or erased meanwhile.

    A resolution holds the rows of the customers it read as holders, so that no merge moves
    their identities or records under it; a merge that committed before the lock was granted
    shows here, and the caller reads the holders again. `named` gets the ids of those that
    have a name (their name is not asked for again).
    """
    wanted = sorted(set(ids))
    if not wanted or conn.dialect.name != "postgresql":
        return True
    rows = conn.execute(_LOCK_CUSTOMERS, {"ids": wanted}).all()
    if named is not None:
        named.update(row.id for row in rows if row.named)
    return len(rows) == len(wanted) and all(row.merged_into is None for row in rows)


def resolve_customer(
    conn: Connection,
    found: Sequence[Identity],
    caused_by: str,
    name: str | None = None,
    *,
    types: IdentityTypes,
    known: KnownHolders | None = None,
) -> Resolution:
    """Find or create the customer behind a record's normalised identities, linking as allowed.

    `known` carries what earlier resolutions in the same transaction read (an import's batch).
    """
    known = known if known is not None else KnownHolders()
    if not (known.locked or known.values_locked):
        lock_some(conn, found)
    for _ in range(RESOLVE_TRIES):
        if len(found) > 1:
            known.load(conn, found)  # one query for the holders of every identity
        read = {holder for i in found for holder, _ in known.of(conn, i)}
        if known.locked or known.lock_customers(conn, read):
            break
        known.forget()  # a holder was merged away before its lock was granted: read again
    else:
        raise ResolutionRaced(f"the customers of {caused_by} kept changing; tried {RESOLVE_TRIES}")
    strong = [i for i in found if i.type != PHONE]
    phones = [i for i in found if i.type == PHONE]

    customer: int | None = None
    created = merged = False
    strong_holders = sorted({cid for i in strong for cid, _ in known.of(conn, i)})
    if strong_holders:
        customer = strong_holders[0]
        for other in strong_holders[1:]:
            if not separated(conn, customer, other):
                merge_customers(conn, other, customer, caused_by, "share a strong identifier")
                known.forget()
                merged = True
    elif strong:
        customer, created = create_customer(conn, name), True
    ours = []
    for identity in strong:
        holding = {cid for cid, _ in known.of(conn, identity)}
        if holding and customer not in holding:
            continue  # held by a customer an admin split from this one: it stays theirs
        ours.append(identity)
    if ours:
        known.add_all(conn, customer, ours, caused_by)  # type: ignore[arg-type]

    candidates: tuple[int, ...] = ()
    for phone in phones:
        holders = known.of(conn, phone)
        others = [(cid, shared) for cid, shared in holders if cid != customer]
        if customer is None:
            if not holders:
                customer, created = create_customer(conn, name), True
                known.add(conn, customer, phone, caused_by)
            elif len(holders) == 1 and not holders[0][1]:
                customer = holders[0][0]
            else:
                candidates = tuple(cid for cid, _ in holders)
            continue
        if not others:
            known.add(conn, customer, phone, caused_by)
        elif len(others) == 1 and len(holders) == 1 and not others[0][1]:
            other = others[0][0]
            if conflict(conn, customer, other, types.system_ids) is None:
                merge_customers(conn, other, customer, caused_by, f"share phone {phone.value}")
                known.forget()
                merged = True
                created = False  # not new any more: it holds the other's history now
            else:
                known.add(conn, customer, phone, caused_by)
                known.mark_shared(conn, phone)
        else:
            known.add(conn, customer, phone, caused_by)
            known.mark_shared(conn, phone)

    if customer is not None and name and not created and customer not in known.named:
        conn.execute(_NAME_IF_UNKNOWN, {"customer": customer, "name": name})
    if customer is not None and name:
        known.named.add(customer)  # named now, if it was not: no need to ask again
    return Resolution(customer, candidates, created, merged)


_NAME_IF_UNKNOWN = (
    update(customers)
    .where(customers.c.id == bindparam("customer"), customers.c.name.is_(None))
    .values(name=bindparam("name"))
)


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
