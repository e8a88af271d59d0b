"""Reference data kept across transactions: people and their roles, delegations, cost centres
and budgets, the catalog, agreements, offers and pipelines.

Every step reads these again (who holds a role, what an item costs under which agreement,
which pipeline applies) though they change seldom. A query that reads only these tables is
answered from a cache kept per engine, as long as the database's reference stamp is the one the
answer was read under. Triggers (migration 0006) give `reference_version` a new random stamp
whenever any of these tables changes, whoever changes it: procure, another process, an
administrator in psql.

- A transaction reads the stamp once, before its first query the cache could answer. Its
  answers then come from the state the stamp names, as a repeatable-read transaction's would.
- A transaction that writes one of these tables (or has such a change waiting to be flushed)
  reads them from the database until it ends.
- Queries that lock (FOR UPDATE), ask for fresh rows (populate_existing) or read any other
  table (a join, a subquery) go to the database; so does the rest of a transaction that has
  run SQL text, which may write anything.
- The cache hands out copies attached to the caller's session: changing a row it returned
  changes that session's copy, never the cache.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import TextClause, select
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Row
from sqlalchemy.engine.result import FrozenResult, result_tuple
from sqlalchemy.orm import ORMExecuteState, make_transient_to_detached
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm.attributes import instance_dict
from sqlalchemy.sql.util import find_tables
from sqlmodel import Field, Session, SQLModel, col

# The tables whose rows the cache may keep. Each has the trigger (migration 0006): a test
# compares this set with the triggers a migrated database has.
REFERENCE_TABLES = frozenset(
    {
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
    }
)
# Above this many answers the cache starts again (reference data is small; many distinct
# parameters would mean someone is scanning, not deciding).
MAX_ANSWERS = 20_000


# One row: the stamp of the reference data's current state.
class ReferenceVersion(SQLModel, table=True):
    __tablename__ = "reference_version"
    id: int = Field(default=1, primary_key=True)
    stamp: str = Field(max_length=32)


_STAMP = select(col(ReferenceVersion.stamp)).where(col(ReferenceVersion.id) == 1)


@dataclass
class _Cache:
    """One engine's answers: (stamp, detached copy of the result) by statement and parameters;
    and, by a statement's structure, whether it reads reference tables only."""

    answers: dict[Any, _Answer] = field(default_factory=dict)
    shapes: dict[Any, bool] = field(default_factory=dict)
    shared: dict[Any, tuple[str, tuple[Any, ...]]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0


@dataclass
class _Transaction:
    transaction: Any
    stamp: str | None = None
    wrote: bool = False


_CACHES: weakref.WeakKeyDictionary[Any, _Cache] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _cache_of(session: OrmSession) -> _Cache | None:
    bind = session.get_bind()
    pool = getattr(bind, "pool", None)  # an engine and its execution_options() copies share it
    if pool is None:
        return None
    cache = _CACHES.get(pool)
    if cache is None:
        with _LOCK:
            cache = _CACHES.setdefault(pool, _Cache())
    return cache


def stats(session: OrmSession) -> tuple[int, int]:
    """(hits, misses) of the cache behind this session's engine."""
    cache = _cache_of(session)
    return (cache.hits, cache.misses) if cache else (0, 0)


def _state(session: OrmSession) -> _Transaction:
    root = session._autobegin_t()  # the transaction the statement will run in
    found: _Transaction | None = session.info.get("reference")
    if found is None or found.transaction is not root:
        found = _Transaction(root)
        session.info["reference"] = found
    return found


def writing(session: OrmSession, table: str) -> None:
    """A write to `table` in this session's transaction (seen by the hook below, or reported by
    code that writes on the session's connection, past the ORM's execution): one to a
    reference table makes the rest of the transaction read reference data from the database."""
    if table in REFERENCE_TABLES:
        _state(session).wrote = True


def _is_reference(state_or_mapper: Any) -> bool:
    """An InstanceState's or a Mapper's table is a reference table."""
    table = getattr(state_or_mapper.mapper, "local_table", None)
    return getattr(table, "name", None) in REFERENCE_TABLES


def _changes_waiting(session: OrmSession) -> bool:
    """A reference row added, changed or deleted in this session and not flushed yet."""
    pending = (
        session._new.keys(),  # InstanceStates: cheaper than session.new
        session._deleted.keys(),
        session.identity_map._modified,
    )
    return any(_is_reference(s) for states in pending for s in states)


@sa_event.listens_for(Session, "before_flush")
def _before_flush(session: OrmSession, _context: Any, _instances: Any) -> None:
    if _changes_waiting(session):
        _state(session).wrote = True


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    hash(value)  # TypeError: not cacheable
    return value


def _reads_reference_only(cache: _Cache, state: ORMExecuteState, structure: Any) -> bool:
    """Whether a statement of this structure reads reference tables and nothing else: worked
    out once per structure (its entities first, the cheap sieve, then every table it names)."""
    known = cache.shapes.get(structure)
    if known is None:
        known = all(_is_reference(m) for m in state.all_mappers)
        if known:
            tables = find_tables(
                cast(Any, state.statement),
                check_columns=True,
                include_aliases=True,
                include_joins=True,
            )
            names = {getattr(t, "name", None) for t in tables}
            known = bool(names) and names <= REFERENCE_TABLES
        if len(cache.shapes) >= MAX_ANSWERS:
            cache.shapes.clear()
        cache.shapes[structure] = known
    return known


def _stamp(session: OrmSession, transaction: _Transaction) -> str | None:
    """The stamp this transaction's answers come from: read once, at its first cacheable query.
    None on a schema made without the migrations (no triggers): then nothing is cached."""
    if transaction.stamp is None:
        stamp = session.connection().execute(_STAMP).scalar_one_or_none()
        if stamp is None:
            transaction.wrote = True
            return None
        transaction.stamp = stamp
    return transaction.stamp


@sa_event.listens_for(Session, "do_orm_execute")
def _answer(state: ORMExecuteState) -> Any:
    """Answer a read of reference tables from the cache, or run it and keep a copy."""
    session = state.session
    statement: Any = state.statement
    if not state.is_select:
        if state.is_insert or state.is_update or state.is_delete:
            writing(session, getattr(getattr(statement, "table", None), "name", ""))
        elif isinstance(statement, TextClause):
            _state(session).wrote = True  # SQL it cannot see into may write anything
        return None
    if state.is_column_load or state.is_relationship_load:
        return None
    if getattr(statement, "_for_update_arg", None) is not None:
        return None
    options = state.execution_options
    if options.get("populate_existing") or options.get("yield_per"):
        return None
    cache = _cache_of(session)
    if cache is None:
        return None
    # Kept on the statement: the compiled-statement cache uses the same key when it runs.
    key = statement._generate_cache_key()
    if key is None or not _reads_reference_only(cache, state, key.key):
        return None
    transaction = _state(session)
    if transaction.wrote or _changes_waiting(session):
        transaction.wrote = True
        return None
    params = state.parameters or {}
    if not isinstance(params, Mapping):
        return None
    try:
        answer_key = (
            key.key,
            tuple(_hashable(b.effective_value) for b in key.bindparams),
            tuple(sorted((k, _hashable(v)) for k, v in params.items())),
        )
    except TypeError:
        return None
    stamp = _stamp(session, transaction)
    if stamp is None:
        return None
    found = cache.answers.get(answer_key)
    if found is not None and found.stamp == stamp:
        cache.hits += 1
        return found.result_in(session)
    cache.misses += 1
    frozen = state.invoke_statement().freeze()
    if len(cache.answers) >= MAX_ANSWERS:
        cache.answers.clear()
    cache.answers[answer_key] = _Answer.keep(stamp, statement, frozen)
    return frozen()


@dataclass
class _Answer:
    """A result as read under one stamp. Its objects are copies that belong to no session: the
    caller's own objects stay the caller's, and changing them never changes what the cache hands
    out. Each hit attaches fresh copies to the asking session (or that session's own object for
    the same row, if it has one)."""

    stamp: str
    frozen: FrozenResult[Any]
    entities: tuple[int, ...]  # the columns holding ORM objects
    make_row: Any

    @classmethod
    def keep(cls, stamp: str, statement: Any, frozen: FrozenResult[Any]) -> _Answer:
        columns = statement.column_descriptions
        entities = tuple(
            i
            for i, column in enumerate(columns)
            if column.get("entity") is not None and column.get("expr") is column.get("entity")
        )
        make_row = result_tuple([c["name"] for c in columns], [None] * len(columns))
        answer = cls(stamp, frozen, entities, make_row)
        answer.frozen = answer._with_objects(_copy)
        return answer

    def result_in(self, session: OrmSession) -> Any:
        if not self.entities:
            return self.frozen()
        return self._with_objects(lambda cached: _attach(session, cached))()

    def _with_objects(self, replace: Any) -> FrozenResult[Any]:
        """The result with each ORM object replaced by replace(object)."""
        rows = cast(list[list[Any]], self.frozen._rewrite_rows())  # the rows as lists
        for row in rows:
            for i in self.entities:
                if row[i] is not None:
                    row[i] = replace(row[i])
        return self.frozen.with_new_rows([self.make_row(r) for r in rows])


def _copy(instance: Any) -> Any:
    """A detached copy of a loaded object: its columns' values as loaded, its identity, no
    session (what the ORM's own loading does: the values straight into the new object's dict,
    then committed as loaded)."""
    state = sa_inspect(instance)
    mapper = state.mapper
    duplicate = mapper.class_manager.new_instance()
    values = state.dict
    instance_dict(duplicate).update(
        (a.key, _own(values[a.key])) for a in mapper.column_attrs if a.key in values
    )
    make_transient_to_detached(duplicate)
    return duplicate


def _own(value: Any) -> Any:
    """A JSON column's dict or list copied, so changing it in place changes one copy only."""
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


def _attach(session: OrmSession, cached: Any) -> Any:
    key = sa_inspect(cached).key
    mine = session.identity_map.get(key)
    if mine is not None:
        return mine
    duplicate = _copy(cached)
    session.add(duplicate)
    return duplicate


def shared(session: Session, statement: Any, params: Mapping[str, Any]) -> list[Any]:
    """The rows of a read of reference tables (a statement built once, as the module-level
    ones are) for a caller that only reads them: who holds a role, whom a delegate acts for.

    Kept across transactions while the stamp is the one they were read under, and handed out as
    they are: detached rows shared by every transaction under that stamp, not copies attached
    to the caller's session, so a hit costs a dictionary lookup instead of a query's way
    through the ORM. Never change them or add them to a session (read them with a query of
    your own to change them). A transaction that writes reference data, or has such a change
    waiting, reads them from the database, as the cache's other answers do."""
    cache = _cache_of(session)
    transaction = _state(session)
    if cache is None or transaction.wrote or _changes_waiting(session):
        if cache is not None:
            transaction.wrote = True
        return list(session.exec(statement, params=params).all())
    try:
        key = (statement, tuple(sorted((k, _hashable(v)) for k, v in params.items())))
    except TypeError:
        return list(session.exec(statement, params=params).all())
    stamp = _stamp(session, transaction)
    found = cache.shared.get(key)
    if stamp is not None and found is not None and found[0] == stamp:
        cache.hits += 1
        return list(found[1])  # the rows are shared, the list is the caller's
    rows = list(session.exec(statement, params=params).all())
    if stamp is not None and not transaction.wrote:
        cache.misses += 1
        if len(cache.shared) >= MAX_ANSWERS:
            cache.shared.clear()
        cache.shared[key] = (stamp, tuple(_detached(row) for row in rows))
    return rows


def _detached(value: Any) -> Any:
    """A row (an ORM object, or a tuple of them and plain values) as a detached copy."""
    if hasattr(value, "_sa_instance_state"):
        return _copy(value)
    if isinstance(value, Row):  # several columns: a plain tuple (unpacked as the row would be)
        return tuple(_detached(v) for v in value)
    return value
