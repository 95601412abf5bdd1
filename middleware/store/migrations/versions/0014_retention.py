"""Retention: a table of purge runs (when the last purge ran and what it removed, for the
overview), and indexes that let the purge find the oldest timeline items, their notes, the
keys of deleted deliveries and customers merged into others without reading whole tables.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_interactions_updated", "interactions", "updated_at"),
    ("ix_delivery_keys_delivery", "delivery_keys", "delivery_id"),
    ("ix_customers_merged_into", "customers", "merged_into"),
]
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
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
    op.drop_table("purge_runs")
