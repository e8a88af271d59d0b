"""an item says whether its units hold data (item.holds_data): a returned dock or headset is
disposed of or handed out again without a certified erasure; a laptop still needs one

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every item already in the catalog holds data until its catalog says otherwise. A plain
    # ALTER TABLE (not a batch): on SQLite a batch copies the table and loses its triggers.
    op.add_column(
        "item", sa.Column("holds_data", sa.Boolean(), nullable=False, server_default=sa.true())
    )


def downgrade() -> None:
    op.drop_column("item", "holds_data")
