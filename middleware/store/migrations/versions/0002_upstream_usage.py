"""Keep the last API usage each upstream reported (Salesforce's Sforce-Limit-Info).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upstream_usage",
        sa.Column("target", sa.String(32), primary_key=True),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("allowed", sa.Integer, nullable=False),
        sa.Column("seen_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("upstream_usage")
