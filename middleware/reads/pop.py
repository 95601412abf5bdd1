"""What the screen-pop shows for a caller's number: the customer, this call, the history.

A number held by one customer shows that customer's context and the call going on; a number
several customers share shows them as candidates; a withheld number shows nothing. The same
rules find the call a handoff note typed in the pop belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row

from middleware.customers.identity import JUNK_VALUES, candidates_of, find_holders, normalise_phone
from middleware.interaction import CALL_ENDED_STATUSES, Identity
from middleware.notes.summary import CustomerContext, build_context
from middleware.process.calls import call_facts, handoff_text, latest_call, record_handoff
from middleware.store.tables import utcnow

LIVE_CALL_WINDOW = timedelta(hours=2)  # a call older than this is history, not "this call"


class NotAPhoneNumber(ValueError):
    """The phone parameter cannot be a phone number."""


class NoCallInProgress(LookupError):
    """A handoff note has no call to go with: no customer, a shared line, or no live call."""


@dataclass(frozen=True)
class SavedHandoff:
    """A handoff note as stored, and the customer whose pops should show it."""

    customer_id: int
    external_id: str
    text: str


@dataclass
class PopView:
    """What one pop shows; `state` is known, unknown, shared or withheld."""

    state: str
    phone: str
    context: CustomerContext | None = None
    call: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    earlier: list[dict[str, Any]] = field(default_factory=list)

    def topics(self) -> set[str]:
        """Name the changes that may alter this pop: its number and its customers."""
        found = {f"phone:{self.phone}"}
        if self.context is not None:
            found.add(f"customer:{self.context.customer['id']}")
        return found | {f"customer:{c['id']}" for c in self.candidates}


def caller_number(raw: str, region: str) -> str | None:
    """Return the caller's number in E.164; None when the caller withheld it."""
    value = raw.strip()
    if len(value) > 64 or not value.isprintable():
        raise NotAPhoneNumber("phone: expected a phone number")
    if value.lower() in JUNK_VALUES or (value and not value.strip("+0")):
        return None
    number = normalise_phone(value, region)
    if number is None:
        raise NotAPhoneNumber(f"phone: {value!r} cannot be a valid phone number")
    return number


def pop_view(
    conn: Connection, phone: str | None, raw: str, recent_limit: int, mood: bool = True
) -> PopView:
    """Gather what the pop shows for one caller number (no mood with `mood` false)."""
    if phone is None:
        return PopView("withheld", raw)
    holders = find_holders(conn, Identity("phone", phone))
    if not holders:
        return PopView("unknown", phone)
    if len(holders) > 1 or holders[0][1]:
        candidates = candidates_of(conn, [cid for cid, _ in holders])
        return PopView("shared", phone, candidates=candidates)
    customer_id = holders[0][0]
    context = build_context(conn, customer_id, recent_limit + 1, mood=mood)
    call_row = latest_call(conn, customer_id, updated_since=utcnow() - LIVE_CALL_WINDOW)
    call = call_facts(conn, call_row) if call_row is not None else None
    this_call = (call["source"], call["external_id"]) if call else None
    earlier = [i for i in context.interactions if (i["source"], i["external_id"]) != this_call]
    return PopView("known", phone, context, call, earlier=earlier[:recent_limit])


def call_in_progress(conn: Connection, phone: str | None) -> Row:
    """Return the call going on from a caller's number; raise NoCallInProgress if none is."""
    if phone is None:
        raise NoCallInProgress("The caller withheld their number: there is no call to note")
    holders = find_holders(conn, Identity("phone", phone))
    if not holders:
        raise NoCallInProgress(f"No customer holds {phone}: there is no call to note")
    if len(holders) > 1 or holders[0][1]:
        raise NoCallInProgress(
            f"{phone} is a shared line: Carryover cannot tell whose call this is"
        )
    call = latest_call(conn, holders[0][0], updated_since=utcnow() - LIVE_CALL_WINDOW)
    if call is None or (call.status or "") in CALL_ENDED_STATUSES:
        raise NoCallInProgress(f"No call in progress from {phone}")
    return call


def save_handoff(engine: Engine, phone: str | None, raw_text: str) -> SavedHandoff:
    """Store a handoff note on the call going on from a number, in one transaction.

    Raise UnusableHandoff (bad text), NoCallInProgress or TooManyHandoffs.
    """
    text = handoff_text(raw_text)
    with engine.begin() as conn:
        call = call_in_progress(conn, phone)
        note = record_handoff(conn, call, text)
    return SavedHandoff(call.customer_id, note.external_id, note.text)
