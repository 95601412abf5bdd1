"""Calls: transfers within one call, and a short note on open tickets when a call ends.

A call is one interaction per call id (the phone system's call id), created by its first
event and updated by the later ones. An answer by a different agent or queue within the same
call is a transfer: it becomes an interaction of kind "transfer" in the call's thread
(external id "<call id>#to:<agent>"), whose subject names who handed the call over, so the
next agent's pop shows what happened earlier in the call.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, select

from middleware.customers.edits import customer_name
from middleware.customers.timeline import NEWEST_FIRST, append, open_items, scope, thread_of
from middleware.integrations.plugin import Capability
from middleware.interaction import (
    CALL_ANSWERED_STATUS,
    CALL_ENDED_STATUSES,
    Interaction,
)
from middleware.notes.outbox import Outbox
from middleware.notes.summary import iso
from middleware.store.tables import interactions, utcnow

if TYPE_CHECKING:
    from middleware.installation import Installation

CALL_NOTE = "call"
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


def record_transfer_and_queue_call_notes(
    core: Installation, conn: Connection, interaction: Interaction, before: Row | None
) -> int:
    """Record a transfer, and queue call notes when the call has ended; return notes queued."""
    call = stored_call(conn, interaction.source, interaction.external_id)
    if call is None:
        return 0
    previous = before.agent if before is not None else None
    if (
        interaction.status == CALL_ANSWERED_STATUS
        and interaction.agent
        and previous
        and interaction.agent != previous
    ):
        _record_transfer(conn, interaction, interaction.agent, call, previous, before)
    if (call.status or "") in CALL_ENDED_STATUSES and call.customer_id is not None:
        return queue_call_notes(core, conn, call)
    return 0


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


def open_items_of(conn: Connection, customer_id: int, source: str, open_days: int) -> list[Row]:
    """Return the customer's open tickets or cases in one tool, updated within open_days."""
    since = utcnow() - timedelta(days=open_days)
    where = [*scope(customer_id), interactions.c.source == source,
             interactions.c.updated_at >= since]  # fmt: skip
    return open_items(conn, where, limit=None)


def queue_call_notes(core: Installation, conn: Connection, call: Row) -> int:
    """Queue one short note about an ended call on each open ticket or case of its customer."""
    queued = 0
    facts = call_facts(conn, call)
    name = customer_name(conn, call.customer_id)
    body = core.renderer.render_call(facts, name)
    for plugin in core.registry.with_capability(Capability.WRITE_NOTE):
        items = open_items_of(conn, call.customer_id, plugin.key,
                              core.config.call_notes["open_days"])  # fmt: skip
        for item in items:
            target = thread_of(item.external_id)
            if Outbox.enqueue(conn, core.markers, plugin.key, target, call.id, CALL_NOTE, body,
                              max_bytes=plugin.note_max_bytes):  # fmt: skip
                queued += 1
    return queued


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
