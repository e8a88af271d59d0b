"""a line bought at a recorded quote names the quote, so its purchase order goes to the quote's
supplier and reports count the spend there

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("request_line", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quote_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_request_line_quote_id_quote", "quote", ["quote_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("request_line", schema=None) as batch_op:
        batch_op.drop_constraint("fk_request_line_quote_id_quote", type_="foreignkey")
        batch_op.drop_column("quote_id")
