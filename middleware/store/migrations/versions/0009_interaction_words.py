"""Who wrote an interaction's text, and the number agents know its record by.

`said_by` ("customer", "agent", or NULL when the payload did not tell) keeps an agent's words
out of what the customer already said; `number` is the record's human number (a Salesforce
CaseNumber, a Zendesk ticket id), NULL for calls. Rows stored before keep NULL in both.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("number", sa.String(64)))
        batch.add_column(sa.Column("said_by", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("said_by")
        batch.drop_column("number")
