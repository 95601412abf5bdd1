"""Calls: transfers within one call, and what a call note or a pop says of a call.

A call is one interaction per call id (the phone system's call id), created by its first
event and updated by the later ones. An answer by a different agent or queue within the same
call is a transfer: it becomes an interaction of kind "transfer" in the call's thread
(external id "<call id>#to:<agent>"), whose subject names who handed the call over, so the
next agent's pop shows what happened earlier in the call.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from middleware.customers.timeline import NEWEST_FIRST, append
from middleware.interaction import (
    CALL_ANSWERED_STATUS,
    CALL_ENDED_STATUSES,
    Interaction,
)
from middleware.notes.summary import iso
from middleware.store.tables import interactions

MAX_AGENT = 200


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
    return list(
        conn.execute(
            select(interactions)
            .where(
                interactions.c.source == call.source,
                interactions.c.kind == "transfer",
                interactions.c.external_id.like(f"{call.external_id}#%"),
            )
            .order_by(interactions.c.occurred_at, interactions.c.id)
        )
    )


def record_transfer(conn: Connection, interaction: Interaction, before: Row | None) -> Row | None:
    """Record a transfer if the event is one; return the stored call if it has ended with a
    known customer (its note is then due), else None."""
    call = stored_call(conn, interaction.source, interaction.external_id)
    if call is None:
        return None
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
    """Describe one call for notes and pops: when, who, how long, who answered, transfers."""
    transfers = transfers_of(conn, call)
    if transfers:
        agents = [transfers[0].subject] + [t.agent for t in transfers]
    else:
        agents = [call.agent] if call.agent else []
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
        "agents": [a for a in agents if a],
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
    }
