"""Refused deliveries: a count per integration, reason and hour, and the last few of each
integration with time, reason and address, so that a setup mistake (a wrong secret, org or
public_url) shows on the admin pages instead of answering 401 in silence.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "refusal_counts",
        sa.Column("plugin", sa.String(32), primary_key=True),
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("hour", sa.DateTime, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("last_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "refusals",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("plugin", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
    )
    op.create_index("ix_refusals_plugin", "refusals", ["plugin", "id"])


def downgrade() -> None:
    op.drop_index("ix_refusals_plugin", "refusals")
    op.drop_table("refusals")
    op.drop_table("refusal_counts")
