"""Alembic environment: runs against the connection procure hands over (procure init)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from migrations import migrating
from models.db import make_engine
from models.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # `alembic` on the command line (for developers writing migrations): PROCURE_DATABASE_URL.
    import os

    url = os.environ.get("PROCURE_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set PROCURE_DATABASE_URL to the database to migrate")
    engine = make_engine(url)
    try:
        with migrating(engine) as conn:  # as `procure init` migrates: SQLite's keys checked
            _run(conn)
    finally:
        engine.dispose()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
