"""Alembic migrations of the procure schema; HEAD is the revision this code needs."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
# Every revision in order (tests check this against the scripts in versions/).
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")
HEAD = REVISIONS[-1]


@contextmanager
def migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction to run migrations on, up or down (`procure init`, and
    `alembic` on the command line). SQLite changes a table by copying it; foreign keys would
    refuse dropping the old copy while other tables point at it: they are off for the
    migration (outside any transaction, where SQLite accepts it), and checked before the
    transaction commits."""
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        raw = connection.connection.driver_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the migration left broken references: {broken[:5]}")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
