"""the reference stamp: triggers give reference_version a new random stamp whenever people,
roles, delegations, cost centres, budgets, the catalog, agreements, offers or pipelines change
(models/reference.py caches those tables across transactions and checks the stamp)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The reference tables at this revision (a later revision that adds one adds its trigger).
TABLES = (
    "agreement_price",
    "budget",
    "bundle",
    "bundle_item",
    "cost_centre",
    "delegation",
    "framework_agreement",
    "item",
    "offer",
    "person",
    "person_role",
    "pipeline_version",
    "supplier",
)
SQLITE_STAMP = "lower(hex(randomblob(16)))"
POSTGRES_STAMP = "md5(random()::text || clock_timestamp()::text)"


def upgrade() -> None:
    op.create_table(
        "reference_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stamp", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    if op.get_bind().dialect.name == "sqlite":
        # The statements below are built from this file's constants only.
        op.execute(f"INSERT INTO reference_version (id, stamp) VALUES (1, {SQLITE_STAMP})")  # noqa: S608
        for table in TABLES:
            for verb in ("INSERT", "UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_{verb.lower()}_stamp AFTER {verb} ON {table} "  # noqa: S608
                    f"BEGIN UPDATE reference_version SET stamp = {SQLITE_STAMP}; END"
                )
        return
    op.execute(f"INSERT INTO reference_version (id, stamp) VALUES (1, {POSTGRES_STAMP})")  # noqa: S608
    op.execute(
        f"""
        CREATE FUNCTION reference_changed() RETURNS trigger AS $$
        BEGIN
            UPDATE reference_version SET stamp = {POSTGRES_STAMP};
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """  # noqa: S608
    )
    # BEFORE the statement: a transaction's first change to reference data takes the stamp
    # row's lock before it locks any reference row, so two writers queue on the stamp instead
    # of each holding rows the other needs.
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_stamp BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION reference_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            for verb in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{verb}_stamp")
    else:
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_stamp ON {table}")
        op.execute("DROP FUNCTION IF EXISTS reference_changed()")
    op.drop_table("reference_version")
