"""Retention: a table of purge runs (when the last purge ran and what it removed, for the
overview), and an index that lets the purge find the oldest timeline items without reading
them all.

Revision ID: 0015
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0011"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "purge_runs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("finished_at", sa.DateTime, nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("timeline_items", sa.Integer, nullable=False),
        sa.Column("notes", sa.Integer, nullable=False),
        sa.Column("customers", sa.Integer, nullable=False),
    )
    op.create_index("ix_interactions_updated", "interactions", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_interactions_updated", table_name="interactions")
    op.drop_table("purge_runs")
