"""Imports of past records (`carryover backfill`): each run's cursor and counts, and the key
and version of every record imported, so that an import resumes and never imports twice.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "history_imports",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("plugin", sa.String(32), nullable=False),
        sa.Column("since", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cursor", sa.Text),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("imported", sa.Integer, nullable=False),
        sa.Column("unchanged", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("refused", sa.Integer, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("progress", sa.Float),
        sa.Column("api_calls", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_history_imports_plugin", "history_imports", ["plugin", "id"])
    op.create_table(
        "history_keys",
        sa.Column("plugin", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("import_id", Id, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("history_keys")
    op.drop_index("ix_history_imports_plugin", "history_imports")
    op.drop_table("history_imports")
