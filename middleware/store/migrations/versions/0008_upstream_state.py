"""Upstream pauses and the note budget's ledger, shared by every process; retries by time.

A 429 or a run of 5xx pauses an upstream for every worker (`upstream_state`); a note write
reserves its slot in `write_slots` before it is sent, so workers cannot overshoot the
budget together. `attempted_at` tells when a write whose outcome is unknown was sent, and
`failing_since` when a row's transient failures began (they retry for a time, not a count);
`waiting_for` what holds a row back besides its own backoff (a pause, the note budget, the
check of a write whose outcome is unknown), so admins see a throttle as a throttle.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "upstream_state",
        sa.Column("target", sa.String(32), primary_key=True),
        sa.Column("blocked_until", sa.DateTime),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reason", sa.Text),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", sa.DateTime),
        sa.Column("last_ok_at", sa.DateTime),
    )
    op.create_table(
        "write_slots",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_write_slots_target", "write_slots", ["target", "at"])
    with op.batch_alter_table("writes") as batch:
        batch.add_column(sa.Column("attempted_at", sa.DateTime))
        batch.add_column(sa.Column("failing_since", sa.DateTime))
        batch.add_column(sa.Column("waiting_for", sa.String(16)))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("failing_since", sa.DateTime))
        batch.add_column(sa.Column("waiting_for", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("waiting_for")
        batch.drop_column("failing_since")
    with op.batch_alter_table("writes") as batch:
        batch.drop_column("waiting_for")
        batch.drop_column("failing_since")
        batch.drop_column("attempted_at")
    op.drop_index("ix_write_slots_target", table_name="write_slots")
    op.drop_table("write_slots")
    op.drop_table("upstream_state")
