"""Deliveries found by the record they carried: which interactions each delivery recorded,
and indexes to look records up by their id or number and notes by their record.

Deliveries processed before this revision get their links from their trails, where each
processed step reads "<event key>: <source>:<kind>:<external id> → …".

Revision ID: 0013
Revises: 0012
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "delivery_records",
        sa.Column(
            "delivery_id", Id, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
        ),  # fmt: skip
        sa.Column("interaction_id", Id, primary_key=True),
    )
    op.create_index("ix_delivery_records_interaction", "delivery_records", ["interaction_id"])
    op.create_index("ix_interactions_external_id", "interactions", ["external_id"])
    op.create_index("ix_interactions_number", "interactions", ["number"])
    op.create_index("ix_writes_interaction", "writes", ["interaction_id"])
    _link_processed_deliveries(op.get_bind())


BATCH = 500
ARROW = " \u2192 "


def _record_refs(trail_json: str) -> set[tuple[str, str, str]]:
    """Return (source, kind, external id) of each record a trail says was processed."""
    try:
        trail = json.loads(trail_json or "[]")
    except ValueError:
        return set()
    found = set()
    for step in trail if isinstance(trail, list) else []:
        detail = step.get("detail") if isinstance(step, dict) else None
        if step.get("step") != "processed" or not isinstance(detail, str) or ARROW not in detail:
            continue
        ref = detail.split(ARROW, 1)[0].rsplit(": ", 1)[-1]
        parts = ref.split(":", 2)
        if len(parts) == 3:
            found.add((parts[0], parts[1], parts[2]))
    return found


def _link_processed_deliveries(conn: sa.Connection) -> None:
    deliveries = sa.table("deliveries", sa.column("id"), sa.column("trail"))
    interactions = sa.table("interactions", sa.column("id"), sa.column("source"),
                            sa.column("kind"), sa.column("external_id"))  # fmt: skip
    links = sa.table("delivery_records", sa.column("delivery_id"), sa.column("interaction_id"))
    last = 0
    while True:
        rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.trail)
            .where(deliveries.c.id > last)
            .order_by(deliveries.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        last = rows[-1].id
        pairs = set()
        for row in rows:
            for source, kind, external_id in _record_refs(row.trail):
                found = conn.execute(
                    sa.select(interactions.c.id).where(
                        interactions.c.source == source,
                        interactions.c.kind == kind,
                        interactions.c.external_id == external_id,
                    )
                ).scalar()
                if found is not None:
                    pairs.add((row.id, found))
        if pairs:
            conn.execute(
                links.insert(), [{"delivery_id": d, "interaction_id": i} for d, i in sorted(pairs)]
            )


def downgrade() -> None:
    op.drop_index("ix_writes_interaction", "writes")
    op.drop_index("ix_interactions_number", "interactions")
    op.drop_index("ix_interactions_external_id", "interactions")
    op.drop_table("delivery_records")
