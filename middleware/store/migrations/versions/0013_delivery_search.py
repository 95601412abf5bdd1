"""Deliveries found by the record they carried: which interactions each delivery recorded,
and indexes to look records up by their id or number and notes by their record.

Revision ID: 0013
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
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


def downgrade() -> None:
    op.drop_index("ix_writes_interaction", "writes")
    op.drop_index("ix_interactions_number", "interactions")
    op.drop_index("ix_interactions_external_id", "interactions")
    op.drop_table("delivery_records")
