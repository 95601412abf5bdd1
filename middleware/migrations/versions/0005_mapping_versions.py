"""Mappings saved in the admin UI, every version kept for rollback.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mapping_versions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("plugin", sa.String(32), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("note", sa.String(255), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_mapping_versions_plugin", "mapping_versions", ["plugin", "id"])


def downgrade() -> None:
    op.drop_table("mapping_versions")
