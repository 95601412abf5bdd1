"""One write per ticket, interaction and purpose, whatever its marker says.

Markers now carry a MAC keyed with the installation's secret, so the marker alone no longer
names a write for good (a process without a shared secret_key keys its own): this index
keeps a note from being queued twice for one ticket.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "uq_writes_purpose",
        "writes",
        ["target", "target_ref", "interaction_id", "purpose"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_writes_purpose", table_name="writes")
