"""Create the inbox, identity, timeline and outbox tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("plugin", sa.String(32), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("event_keys", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires_at", sa.DateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("trail", sa.Text, nullable=False),
        sa.Column("finished_at", sa.DateTime),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "delivery_keys",
        sa.Column("plugin", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column(
            "delivery_id",
            Id,
            sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.create_table(
        "customers",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("merged_into", Id, sa.ForeignKey("customers.id")),
        sa.Column("preferred_channels", sa.Text),
    )
    op.create_table(
        "identities",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("customer_id", Id, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("shared", sa.Boolean, nullable=False),
        sa.Column("caused_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("type", "value", "customer_id", name="uq_identities_holder"),
    )
    op.create_index("ix_identities_lookup", "identities", ["type", "value"])
    op.create_index("ix_identities_customer", "identities", ["customer_id"])
    op.create_table(
        "merges",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("from_customer", Id, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("into_customer", Id, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("caused_by", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "interactions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("customer_id", Id, sa.ForeignKey("customers.id")),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(16)),
        sa.Column("occurred_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(32)),
        sa.Column("subject", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("customer_name", sa.String(255)),
        sa.Column("agent", sa.String(255)),
        sa.Column("team", sa.String(255)),
        sa.Column("link", sa.Text),
        sa.Column("duration_s", sa.Integer),
        sa.Column("identities", sa.Text, nullable=False),
        sa.Column("candidates", sa.Text),
        sa.UniqueConstraint("source", "kind", "external_id", name="uq_interactions_record"),
    )
    op.create_index("ix_interactions_customer", "interactions", ["customer_id", "occurred_at"])
    op.create_table(
        "writes",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("target_ref", sa.String(255), nullable=False),
        sa.Column("interaction_id", Id, sa.ForeignKey("interactions.id"), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("marker", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires_at", sa.DateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("done_at", sa.DateTime),
        sa.UniqueConstraint("target", "target_ref", "marker", name="uq_writes_once"),
    )
    op.create_index("ix_writes_due", "writes", ["status", "next_attempt_at"])
    op.create_index("ix_writes_done", "writes", ["target", "done_at"])


def downgrade() -> None:
    for table in ("writes", "interactions", "merges", "identities", "customers"):
        op.drop_table(table)
    op.drop_table("delivery_keys")
    op.drop_table("deliveries")
