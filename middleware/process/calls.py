"""Calls: transfers within one call, and what a call note or a pop says of a call.

A call is one interaction per call id (the phone system's call id), created by its first
event and updated by the later ones. An answer by a different agent or queue within the same
call is a transfer: it becomes an interaction of kind "transfer" in the call's thread
(external id "<call id>#to:<agent>"), whose subject names who handed the call over, so the
next agent's pop shows what happened earlier in the call.

While the call goes on, an agent may leave a handoff note in the pop for whoever takes the
call next: an interaction of kind "handoff" in the call's thread (external id
"<call id>#note:<n>"), the agent's words, not the customer's. The next agent's pop and the
note written when the call ends show them.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from middleware.customers.redaction import redact
from middleware.customers.timeline import NEWEST_FIRST, agents_in_order, append
from middleware.interaction import (
    CALL_ANSWERED_STATUS,
    CALL_ENDED_STATUSES,
    Identity,
    Interaction,
    http_link,
)
from middleware.notes.summary import excerpt, iso
from middleware.store.tables import interactions, utcnow

MAX_AGENT = 200
HANDOFF = "handoff"
MAX_HANDOFF_CHARS = 500  # a few sentences: what the next agent needs, not a transcript
MAX_HANDOFFS = 20  # per call: the call note stays short, and a leaked link cannot flood it
SAID_CHARS = 280  # of what the caller said: a glance, the recording holds the rest


class UnusableHandoff(ValueError):
    """A handoff note's text cannot be stored as it is (empty, too long, not text)."""


class TooManyHandoffs(ValueError):
    """The call holds as many handoff notes as one call may."""


def stored_call(conn: Connection, source: str, call_id: str) -> Row | None:
    """Return the stored call of that id, or None."""
    return conn.execute(
        select(interactions).where(
            interactions.c.source == source,
            interactions.c.kind == "call",
            interactions.c.external_id == call_id,
        )
    ).first()


def latest_call(
    conn: Connection, customer_id: int, updated_since: datetime | None = None
) -> Row | None:
    """Return the customer's newest call (only one updated since a moment, if given), or None."""
    query = select(interactions).where(
        interactions.c.customer_id == customer_id, interactions.c.kind == "call"
    )
    if updated_since is not None:
        query = query.where(interactions.c.updated_at >= updated_since)
    return conn.execute(query.order_by(*NEWEST_FIRST).limit(1)).first()


def transfers_of(conn: Connection, call: Row) -> list[Row]:
    """Return the transfers recorded within a call, oldest first."""
    return _within_call(conn, call, "transfer")


def handoffs_of(conn: Connection, call: Row) -> list[Row]:
    """Return the handoff notes left within a call, oldest first."""
    return _within_call(conn, call, HANDOFF)


def _within_call(conn: Connection, call: Row, kind: str) -> list[Row]:
    return list(
        conn.execute(
            select(interactions)
            .where(
                interactions.c.source == call.source,
                interactions.c.kind == kind,
                # autoescape: a call id's own % or _ must not match other calls' rows
                interactions.c.external_id.startswith(f"{call.external_id}#", autoescape=True),
            )
            .order_by(interactions.c.occurred_at, interactions.c.id)
        )
    )


def handoff_text(raw: str) -> str:
    """Return a handoff note's text as it may be stored; raise UnusableHandoff if it cannot be.

    Line breaks are kept and tabs become spaces; other control characters are dropped.
    Card numbers and secrets are redacted after the length is checked.
    """
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in JSON) is no text, and the store refuses it.
        raise UnusableHandoff("The handoff note is not valid Unicode text") from None
    lines = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = "".join(ch for ch in lines if ch == "\n" or unicodedata.category(ch) != "Cc").strip()
    if not text:
        raise UnusableHandoff("The handoff note is empty")
    if len(text) > MAX_HANDOFF_CHARS:
        raise UnusableHandoff(
            f"A handoff note holds at most {MAX_HANDOFF_CHARS} characters "
            f"(this one has {len(text)})"
        )
    return redact(text) or text


def record_handoff(conn: Connection, call: Row, text: str, now: datetime | None = None) -> Row:
    """Store a handoff note (text from handoff_text) in the call's thread; return its row.

    The note names the call's current agent, who typed it. The text of the call's last note
    sent again (a double click) is not stored twice. Raise TooManyHandoffs past MAX_HANDOFFS.
    """
    if conn.dialect.name == "postgresql":
        # One note at a time per call, so that two notes never take the same number.
        conn.execute(
            select(interactions.c.id).where(interactions.c.id == call.id).with_for_update()
        )
    earlier = handoffs_of(conn, call)
    if earlier and earlier[-1].text == text:
        return earlier[-1]
    if len(earlier) >= MAX_HANDOFFS:
        raise TooManyHandoffs(f"This call holds {MAX_HANDOFFS} handoff notes already")
    numbers = [int(n) for r in earlier if (n := r.external_id.rsplit("#note:", 1)[-1]).isdigit()]
    external_id = f"{call.external_id}#note:{max(numbers, default=0) + 1}"
    moment = now or utcnow()
    note = Interaction(
        source=call.source,
        external_id=external_id,
        kind=HANDOFF,
        channel="phone",
        direction="internal",
        occurred_at=moment,
        updated_at=moment,
        record_ref=f"{call.source}:{HANDOFF}:{external_id}",
        text=text,
        agent=call.agent,
        team=call.team,
        said_by="agent",  # the agent's words: never under what the customer already said
        # The call's identifiers, so that an admin's split moves the note with its call.
        identities=tuple(Identity(t, v) for t, v in json.loads(call.identities or "[]")),
    )
    append(conn, note, call.customer_id)
    return handoffs_of(conn, call)[-1]


def record_transfer(
    conn: Connection, interaction: Interaction, call: Row, before: Row | None
) -> Row | None:
    """Record a transfer if the event is one; return the stored call (`call`, as the event
    left it) if it has ended with a known customer (its note is then due), else None."""
    previous = before.agent if before is not None else None
    if (
        interaction.status == CALL_ANSWERED_STATUS
        and interaction.agent
        and previous
        and interaction.agent != previous
    ):
        _record_transfer(conn, interaction, interaction.agent, call, previous, before)
    if (call.status or "") in CALL_ENDED_STATUSES and call.customer_id is not None:
        return call
    return None


def _record_transfer(
    conn: Connection,
    interaction: Interaction,
    agent: str,
    call: Row,
    previous: str,
    before: Row | None,
) -> None:
    handed_over = previous + (f" ({before.team})" if before is not None and before.team else "")
    taken = agent + (f" ({interaction.team})" if interaction.team else "")
    external_id = f"{call.external_id}#to:{agent[:MAX_AGENT]}"
    transfer = Interaction(
        source=interaction.source,
        external_id=external_id,
        kind="transfer",
        channel="phone",
        direction="internal",
        occurred_at=interaction.updated_at,
        updated_at=interaction.updated_at,
        record_ref=f"{interaction.source}:transfer:{external_id}",
        subject=previous,
        text=f"Transferred from {handed_over} to {taken}",
        agent=agent,
        team=interaction.team,
    )
    append(conn, transfer, call.customer_id)


def call_facts(conn: Connection, call: Row) -> dict[str, Any]:
    """Describe one call for notes and pops: when, who, how long, who answered, transfers,
    the handoff notes agents left, its recording and what the caller said on it."""
    transfers = transfers_of(conn, call)
    agents = agents_in_order(call.agent, transfers)
    phones = [value for kind, value in json.loads(call.identities or "[]") if kind == "phone"]
    return {
        "source": call.source,
        "external_id": call.external_id,
        "direction": call.direction,
        "status": call.status,
        "ended": (call.status or "") in CALL_ENDED_STATUSES,
        "started_at": iso(call.occurred_at),
        "updated_at": iso(call.updated_at),
        "duration_s": call.duration_s,
        "phone": phones[0] if phones else None,
        "agents": agents,
        "team": call.team,
        "transfers": [
            {
                "at": iso(t.occurred_at),
                "from": t.subject,
                "to": t.agent,
                "team": t.team,
                "text": t.text,
            }
            for t in transfers
        ],  # fmt: skip
        "handoffs": [
            {"at": iso(h.occurred_at), "by": h.agent, "text": h.text}
            for h in handoffs_of(conn, call)
        ],
        "recording": http_link(call.recording),
        # Only the caller's own words (a transcript of their channel), never an agent's.
        "said": excerpt(call.text, SAID_CHARS) if call.said_by == "customer" else None,
    }
