"""Where a customer's preferred channels came from: a survey answer or an admin, when, and
the record or admin that set them (no source: derived from behaviour).

Revision ID: 0016
Revises: 0015
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("preferred_source", sa.String(16)),
    ("preferred_at", sa.DateTime()),
    ("preferred_caused_by", sa.String(255)),
]


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("customers", sa.Column(name, kind))
    # Preferences set before sources were kept were set on the admin customer page.
    op.execute(
        "UPDATE customers SET preferred_source = 'admin', preferred_caused_by = 'admin' "
        "WHERE preferred_channels IS NOT NULL"
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+ and PostgreSQL): a batch would copy the customers table,
    # and SQLite refuses to drop a table that identities and interactions point to.
    for name, _ in reversed(COLUMNS):
        op.execute(f"ALTER TABLE customers DROP COLUMN {name}")
