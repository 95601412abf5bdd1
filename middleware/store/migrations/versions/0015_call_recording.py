"""Where agents listen to a call's recording.

`recording` is an http(s) link (for Twilio, the recording's page in the Console) that the
call note and the screen-pop show; NULL for calls that were not recorded and for every row
stored before.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("interactions", sa.Column("recording", sa.Text))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+ and PostgreSQL): a batch would copy the table, and
    # SQLite refuses to drop interactions while writes and delivery records point to it.
    op.execute("ALTER TABLE interactions DROP COLUMN recording")
