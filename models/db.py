"""Engines and transactions for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, event, insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.pool import NullPool
from sqlmodel import Session, create_engine, select

from models import reference  # its session hooks: reference data cached across transactions


def insert_unless_taken(table: Table, key: list[str], *returning: Any) -> dict[str, Any]:
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING ..., built once for each database: the
    unique key is the check, one statement and no lookup first; a row that finds its key taken
    returns nothing. By dialect name. With nothing to return, no RETURNING: the rows go to the
    driver's executemany, without a result to read."""
    statements = {}
    for name, dialect_insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert)):
        statement = dialect_insert(table).on_conflict_do_nothing(index_elements=key)
        statements[name] = statement.returning(*returning) if returning else statement
    return statements


T = TypeVar("T")
_BY_ID: dict[Any, Any] = {}


def by_id(session: Session, model: type[T], id_: int, *, read_only: bool = False) -> T | None:
    """session.get() for the steps' lookups: the session's own object when it has one (and it is
    not expired), else one SELECT built once per model, which also refreshes an expired one or
    finds its row gone. (session.get builds its SELECT anew on every call, which costs more than
    the reference cache's answer to it.)

    read_only: a reference row the caller only reads (a requester's address, a cost centre's
    owner), shared across transactions as reference.shared() hands them out."""
    mapper = sa_inspect(model)
    statement = _BY_ID.get(model)
    if statement is None:
        statement = _BY_ID[model] = select(model).where(mapper.primary_key[0] == bindparam("id"))
    if read_only:  # the shared row, even where the session has its own: it reads the same
        rows = reference.shared(session, statement, {"id": id_})
        return cast(T | None, rows[0] if rows else None)
    found = session.identity_map.get(mapper.identity_key_from_primary_key((id_,)))
    if found is not None and not sa_inspect(found).expired:
        return cast(T, found)
    return cast(T | None, session.execute(statement, {"id": id_}).scalars().first())


_ADDS: dict[tuple[Table, tuple[str, ...]], dict[str, Any]] = {}


def add_unless_taken(session: Session, row: Any, key: Sequence[str]) -> bool:
    """Write a new row (with an integer `id`) in one INSERT unless its unique `key` is taken:
    then False, nothing written and the transaction usable (no error to catch, no savepoint).
    The row joins the session as one it has read, its id set."""
    table = row.__table__
    statements = _ADDS.get((table, tuple(key)))
    if statements is None:
        statements = _ADDS[(table, tuple(key))] = insert_unless_taken(table, list(key), table.c.id)
    reference.writing(session, table.name)
    values = _values(row, table)
    row.id = (
        session.connection().execute(statements[session.get_bind().dialect.name], values).scalar()
    )
    if row.id is None:
        return False
    make_transient_to_detached(row)
    session.add(row)
    return True


def _values(row: Any, table: Table) -> dict[str, Any]:
    """A new row's column values for an INSERT: all but the id, a column default where the
    row leaves a value unset."""
    values = {}
    for column in table.columns:
        if column.key == "id":
            continue
        value = getattr(row, column.key)
        default: Any = column.default
        if value is None and default is not None:
            if default.is_callable:
                value = default.arg(None)  # the ORM's wrapper: a context it does not use here
            elif default.is_scalar:
                value = default.arg
            else:
                raise TypeError(f"{table.name}.{column.key}: a default insert_all cannot compute")
        values[column.key] = value
    return values


_INSERTS: dict[tuple[Table, tuple[str, ...] | None], Any] = {}


def insert_all(session: Session, rows: Sequence[Any], key: Sequence[str] | None) -> None:
    """Write new rows of one model (each with an integer `id`) in one INSERT: the ORM's flush
    sends one per row.

    `key` names columns that tell the rows apart (a unique key with the parent's id): the ids
    come back with them, so each row gets its own whatever order the database returns them in,
    and the rows join the session as ones it has read. With no key the rows are only written
    (the transaction does not use them again): no ids, not in the session."""
    if not rows:
        return
    table = rows[0].__table__
    names = tuple(key) if key is not None else None
    statement = _INSERTS.get((table, names))
    if statement is None:
        statement = insert(table)
        if names is not None:
            statement = statement.returning(table.c.id, *(table.c[name] for name in names))
        _INSERTS[(table, names)] = statement
    reference.writing(session, table.name)
    values = [_values(row, table) for row in rows]
    if names is None:
        session.connection().execute(statement, values)
        return
    by_key = {tuple(getattr(row, name) for name in names): row for row in rows}
    if len(by_key) != len(rows):
        raise ValueError(f"{table.name}: rows to insert share a key {names}")
    for found in session.connection().execute(statement, values):
        by_key[tuple(found[1:])].id = found[0]
    for row in rows:
        make_transient_to_detached(row)
    session.add_all(rows)


def normalize_url(url: str) -> str:
    """Accept postgres://, postgresql:// and sqlite paths; pick the psycopg 3 driver for PostgreSQL."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE writes."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=NullPool if parsed.database in (None, "", ":memory:") else None,
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below): pysqlite's implicit transactions start too late.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock up front so two read-then-write transactions never deadlock.
        if connection.get_execution_options().get("procure_readonly"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def transaction(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error (nothing half written)."""
    bind = engine.execution_options(procure_readonly=True) if readonly else engine
    with Session(bind, expire_on_commit=False, autoflush=True) as session:
        try:
            yield session
            if not readonly:
                session.commit()
            # A read-only session just closes: the connection's reset rolls back, and the
            # loaded objects stay readable after the block.
        except BaseException:
            session.rollback()
            raise
