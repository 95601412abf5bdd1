"""Which deliveries spoke of which customer (for erasure), and customers an admin split apart.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "delivery_customers",
        sa.Column(
            "delivery_id", Id, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
        ),  # fmt: skip
        sa.Column("customer_id", Id, primary_key=True),
    )
    op.create_index("ix_delivery_customers_customer", "delivery_customers", ["customer_id"])
    op.create_table(
        "separations",
        sa.Column("customer_a", Id, sa.ForeignKey("customers.id"), primary_key=True),
        sa.Column("customer_b", Id, sa.ForeignKey("customers.id"), primary_key=True),
        sa.Column("caused_by", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("separations")
    op.drop_table("delivery_customers")
