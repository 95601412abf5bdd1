"""Lookups shared by every process: the lookup_cache table (what plugins looked up upstream,
keyed by the identity type and value it is about, with when it expires).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lookup_cache",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("plugin", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("fetched_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_lookup_cache_expires", "lookup_cache", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_lookup_cache_expires", table_name="lookup_cache")
    op.drop_table("lookup_cache")
