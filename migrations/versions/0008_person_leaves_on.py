"""a leaver's last day is kept on the person (person.leaves_on), so the lifecycle watch asks
their devices back shortly before it even when the HR export named them only once

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leaves_on", sa.Date(), nullable=True))
        batch_op.create_index(batch_op.f("ix_person_leaves_on"), ["leaves_on"], unique=False)


def downgrade() -> None:
    # Plain DROPs (not a batch): on SQLite a batch copies the table, and the copy loses the
    # triggers that stamp changes to person (0006), which no upgrade puts back.
    op.drop_index(op.f("ix_person_leaves_on"), table_name="person")
    op.drop_column("person", "leaves_on")
