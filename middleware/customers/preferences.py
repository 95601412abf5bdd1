"""Preferred channels and where each preference came from: a survey, an admin, or behaviour.

A preference a customer stated (a survey answer mapped with `preferred_channels`) or that an
admin set is explicit and kept with its source, when and what caused it (the record, or
"admin:<name>"). Without one the preferred channels are the most used ones ("behaviour"),
derived when read, never stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from middleware.interaction import CHANNELS
from middleware.store.tables import customers, delivery_records, interactions

SURVEY = "survey"  # the customer's own answer, in a record that a mapping read
ADMIN = "admin"  # set on the admin customer page
BEHAVIOUR = "behaviour"  # nothing explicit: the most used channels


@dataclass(frozen=True)
class Preference:
    """A customer's explicit preferred channels, with where they came from."""

    channels: tuple[str, ...]
    source: str  # SURVEY or ADMIN
    at: datetime
    caused_by: str  # the record ("generic:survey:resp-1") or "admin:<name>"


def known_channels(names: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split channel names into the channels Carryover knows and the others, in order."""
    known = tuple(dict.fromkeys(n for n in names if n in CHANNELS))
    return known, tuple(n for n in names if n not in CHANNELS)


def set_preference(conn: Connection, customer_id: int, preference: Preference | None) -> None:
    """Store a customer's explicit preference, or clear it (None: back to behaviour)."""
    if preference is None or not preference.channels:
        values: dict[str, Any] = {"preferred_channels": None, "preferred_source": None,
                                  "preferred_at": None, "preferred_caused_by": None}  # fmt: skip
    else:
        values = {
            "preferred_channels": json.dumps(list(preference.channels)),
            "preferred_source": preference.source,
            "preferred_at": preference.at,
            "preferred_caused_by": preference.caused_by[:255],
        }
    conn.execute(update(customers).where(customers.c.id == customer_id).values(**values))


def record_preference(conn: Connection, customer_id: int, names: tuple[str, ...],
                      record_ref: str, said_at: datetime) -> str:  # fmt: skip
    """Set what a record says the customer prefers (source survey); return the trail's words.

    Names that are not channels are dropped and said; a record naming none changes nothing,
    and neither does one older than the preference in place (a late or replayed answer).
    """
    known, unknown = known_channels(names)
    dropped = f"; dropped {', '.join(repr(n) for n in unknown)} (not channels)" if unknown else ""
    if not known:
        return f"preferred channels unchanged (none named){dropped}"
    person = conn.execute(select(customers).where(customers.c.id == customer_id)).one()
    current = preference_of(person)
    if current is not None and current.at > said_at:
        return f"preferred channels kept (set later, by {current.caused_by}){dropped}"
    set_preference(conn, customer_id, Preference(known, SURVEY, said_at, record_ref))
    return f"preferred channels {', '.join(known)} (from {record_ref}){dropped}"


def preference_of(person: Row[Any]) -> Preference | None:
    """Return a customer row's explicit preference, or None (derive it from behaviour)."""
    channels = tuple(json.loads(person.preferred_channels or "[]"))
    if not channels:
        return None
    # Rows from before sources were kept were all set by an admin.
    return Preference(channels, person.preferred_source or ADMIN,
                      person.preferred_at or person.created_at,
                      person.preferred_caused_by or "admin")  # fmt: skip


def newer_preference(source: Row[Any], target: Row[Any]) -> Preference | None:
    """Return the preference a merge keeps: the newer explicit one of the two customers."""
    found = [p for p in (preference_of(target), preference_of(source)) if p is not None]
    return max(found, key=lambda p: p.at) if found else None


def delivery_of_record(conn: Connection, record_ref: str) -> int | None:
    """Return the newest delivery that recorded a record, to link a preference to it."""
    source, _, rest = record_ref.partition(":")
    kind, _, external_id = rest.partition(":")
    return conn.execute(
        select(delivery_records.c.delivery_id)
        .join(interactions, interactions.c.id == delivery_records.c.interaction_id)
        .where(interactions.c.source == source, interactions.c.kind == kind,
               interactions.c.external_id == external_id)
        .order_by(delivery_records.c.delivery_id.desc())
        .limit(1)
    ).scalar()  # fmt: skip
