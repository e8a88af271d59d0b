"""The audit trail: append-only events, each hash-chained to the one before it.

Nothing updates or deletes an audit row: this module only inserts, and the migration
installs triggers that refuse UPDATE and DELETE on the table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from itertools import chain
from typing import Any

from sqlalchemy import JSON, bindparam, insert, update
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Field, Session, SQLModel, col, select

from models.types import UTCDateTime, as_utc, utcnow

GENESIS = "0" * 64


# One event in the audit trail.
class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = Field(sa_type=UTCDateTime)
    actor: str = Field(max_length=254)
    on_behalf_of: str | None = Field(default=None, max_length=254)
    entity: str = Field(max_length=32)
    entity_id: str = Field(max_length=100)
    request_id: int | None = Field(default=None, index=True)
    action: str = Field(max_length=64)
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str | None = Field(default=None, max_length=32)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


# The chain's head: the last sequence number and hash (one row, locked by every append).
class AuditHead(SQLModel, table=True):
    __tablename__ = "audit_head"
    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = Field(default=GENESIS, max_length=64)


def plain_json(value: Any) -> Any:
    """Make details JSON-plain and deterministic: Decimals and dates as strings."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain_json(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return plain_json(value.value)
    if isinstance(value, float):
        raise TypeError("floats are not allowed in audit details; use Decimal")
    return value


def _digest(fields: dict[str, Any]) -> str:
    """The SHA-256 of one event's fields (an audit_event row's columns) with the previous hash."""
    body = {
        "seq": fields["seq"],
        "at": as_utc(fields["at"]).isoformat(),
        "actor": fields["actor"],
        "on_behalf_of": fields["on_behalf_of"],
        "entity": fields["entity"],
        "entity_id": fields["entity_id"],
        "request_id": fields["request_id"],
        "action": fields["action"],
        "from": fields["from_status"],
        "to": fields["to_status"],
        "details": fields["details"],
        "prev": fields["prev_hash"],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


_COLUMNS = (
    "seq",
    "at",
    "actor",
    "on_behalf_of",
    "entity",
    "entity_id",
    "request_id",
    "action",
    "from_status",
    "to_status",
    "details",
    "prev_hash",
)


def compute_hash(event: AuditEvent) -> str:
    """The SHA-256 of the event's content together with the previous row's hash."""
    return _digest({name: getattr(event, name) for name in _COLUMNS})


def append(
    session: Session,
    *,
    actor: str,
    entity: str,
    entity_id: str,
    action: str,
    from_status: str | None = None,
    to_status: str | None = None,
    details: dict[str, Any] | None = None,
    request_id: int | None = None,
    on_behalf_of: str | None = None,
    at: datetime | None = None,
) -> None:
    """Append one event to the chain inside the caller's transaction (written with the
    transaction's other events, before anything reads the trail and at the latest at commit)."""
    append_many(
        session,
        [
            {
                "actor": actor,
                "on_behalf_of": on_behalf_of,
                "entity": entity,
                "entity_id": entity_id,
                "request_id": request_id,
                "action": action,
                "from_status": from_status,
                "to_status": to_status,
                "details": details,
                "at": at,
            }
        ],
    )


def append_many(session: Session, events: list[dict[str, Any]]) -> None:
    """Append many events (the keyword arguments of append() each): a directory of thousands of
    people is audited without building an object per row."""
    if not events:
        return
    chain = _chain(session)
    for given in events:
        row = {
            "seq": chain.seq + 1,
            "at": as_utc(given.get("at") or utcnow()),
            "actor": given["actor"],
            "on_behalf_of": given.get("on_behalf_of"),
            "entity": given["entity"],
            "entity_id": given["entity_id"],
            "request_id": given.get("request_id"),
            "action": given["action"],
            "from_status": given.get("from_status"),
            "to_status": given.get("to_status"),
            "details": plain_json(given.get("details") or {}),
            "prev_hash": chain.hash,
        }
        row["hash"] = _digest(row)
        chain.rows.append(row)
        chain.seq, chain.hash = row["seq"], row["hash"]


@dataclass
class _Chain:
    """One transaction's end of the chain. The head row is read (and locked) at the first
    append; the events appended since wait in `rows` and are written in one INSERT before a
    query that may read the trail and at commit, when the head row is written once.

    A step that appends five events used to send five INSERTs and move the head five times."""

    transaction: Any
    seq: int
    hash: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    written: int = 0  # rows[:written] are in the database (in this transaction)
    # Per open savepoint: (rows appended, rows written, seq, hash) when it began.
    marks: dict[Any, tuple[int, int, int, str]] = field(default_factory=dict)


_TABLE = AuditEvent.__table__  # type: ignore[attr-defined]
_MAPPER = sa_inspect(AuditEvent)
# Built once and run on the session's connection: the chain's statements are plain rows in and
# out, so they skip the ORM's execution (and its hooks) that every step would otherwise pay.
_HEADS = AuditHead.__table__  # type: ignore[attr-defined]
_HEAD = select(_HEADS.c.seq, _HEADS.c.hash).where(_HEADS.c.id == 1).with_for_update()
_NEW_HEAD = insert(_HEADS).values(id=1, seq=0, hash=GENESIS)
_MOVE_HEAD = (
    update(_HEADS).where(_HEADS.c.id == 1).values(seq=bindparam("seq"), hash=bindparam("hash"))
)
_INSERT = insert(_TABLE)


def _chain(session: Session) -> _Chain:
    # The head row is locked once per transaction (FOR UPDATE on PostgreSQL; SQLite's
    # BEGIN IMMEDIATE already serialises writers), so concurrent writers never fork the chain.
    chain: _Chain | None = session.info.get("audit_chain")
    if chain is not None and chain.transaction is session.get_transaction():
        return chain
    connection = session.connection()
    found = connection.execute(_HEAD).first()
    if found is None:
        connection.execute(_NEW_HEAD)
    seq, hash_ = (found.seq, found.hash) if found is not None else (0, GENESIS)
    # Remembered with the transaction the query above belongs to (it may have begun it).
    chain = _Chain(session.get_transaction(), seq, hash_)
    nested = session.get_nested_transaction()
    if nested is not None:  # appended first inside a savepoint: its rollback empties the chain
        chain.marks[nested] = (0, 0, chain.seq, chain.hash)
    session.info["audit_chain"] = chain
    return chain


def _write_rows(session: Session, chain: _Chain) -> None:
    rows = chain.rows[chain.written :]
    if rows:
        chain.written = len(chain.rows)
        session.connection().execute(_INSERT, rows)


@sa_event.listens_for(Session, "do_orm_execute")
def _before_reading(state: Any) -> None:
    """Write the waiting events before a statement that may read the trail: a query on
    audit_event, or any query the ORM cannot see into (text, a table)."""
    chain: _Chain | None = state.session.info.get("audit_chain")
    if chain is None or chain.written == len(chain.rows):
        return
    if state.is_insert or state.is_update or state.is_delete:
        return
    mappers = state.all_mappers
    if not mappers or _MAPPER in mappers:
        _write_rows(state.session, chain)


@sa_event.listens_for(Session, "after_transaction_create")
def _savepoint_began(session: Session, transaction: Any) -> None:
    chain: _Chain | None = session.info.get("audit_chain")
    if transaction.nested and chain is not None:
        chain.marks[transaction] = (len(chain.rows), chain.written, chain.seq, chain.hash)


@sa_event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous_transaction: Any) -> None:
    """A transaction rolled back forgets its chain. A savepoint rolled back takes its own events
    with it; those written inside it are gone from the database, so the ones appended before it
    wait to be written again."""
    chain: _Chain | None = session.info.get("audit_chain")
    if chain is None:
        return
    if not previous_transaction.nested:
        if previous_transaction.parent is None:
            session.info.pop("audit_chain", None)
        return
    mark = chain.marks.pop(previous_transaction, None)
    if mark is not None:
        appended, written, chain.seq, chain.hash = mark
        del chain.rows[appended:]
        chain.written = min(chain.written, written)


@sa_event.listens_for(Session, "before_commit")
def _write_head(session: Session) -> None:
    chain: _Chain | None = session.info.pop("audit_chain", None)
    if chain is None or chain.transaction is not session.get_transaction() or not chain.rows:
        return
    _write_rows(session, chain)
    session.connection().execute(_MOVE_HEAD, {"seq": chain.seq, "hash": chain.hash})


@dataclass(frozen=True)
class VerifyResult:
    """What verify() found: how many rows it checked and the first one that is wrong, if any."""

    checked: int
    ok: bool
    problem: str | None = None
    seq: int | None = None


def iter_events(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    """All events in order, fetched in batches so a long trail does not fill memory."""
    last = 0
    while True:
        rows = session.exec(
            select(AuditEvent)
            .where(AuditEvent.seq > last)
            .order_by(col(AuditEvent.seq))
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def verify(session: Session) -> VerifyResult:
    """Walk the chain from the first row; name the first row that does not match."""
    expected_prev = GENESIS
    expected_seq = 1
    checked = 0
    moves: dict[tuple[str, str], tuple[int, str]] = {}  # entity -> (status changes, the last)
    for event in iter_events(session):
        if event.to_status is not None:
            key = (event.entity, event.entity_id)
            moves[key] = (moves.get(key, (0, ""))[0] + 1, event.to_status)
        where = f"audit row {event.seq} ({event.entity} {event.entity_id}, {event.action})"
        if event.seq != expected_seq:
            return VerifyResult(
                checked,
                False,
                f"audit row {expected_seq} is missing (next row found is {event.seq})",
                expected_seq,
            )
        if event.prev_hash != expected_prev:
            return VerifyResult(
                checked,
                False,
                f"{where}: previous-hash link does not match row {event.seq - 1}",
                event.seq,
            )
        if compute_hash(event) != event.hash:
            return VerifyResult(
                checked, False, f"{where}: hash does not match its contents", event.seq
            )
        expected_prev = event.hash
        expected_seq += 1
        checked += 1
    head = session.get(AuditHead, 1)
    if head is None and checked:
        return VerifyResult(
            checked,
            False,
            f"the chain's head row is missing ({checked} rows found): it was deleted",
            checked + 1,
        )
    if head is not None and (head.seq != checked or head.hash != expected_prev):
        return VerifyResult(
            checked,
            False,
            f"the chain ends at row {checked} but its head records row {head.seq}: "
            "rows at the end were removed",
            checked + 1,
        )
    unexplained = _unexplained_state(session, moves)
    if unexplained:
        return VerifyResult(checked, False, unexplained, checked + 1)
    return VerifyResult(checked, True)


def _unexplained_state(session: Session, moves: dict[tuple[str, str], tuple[int, str]]) -> str:
    """The first request, stage or device whose status the trail does not explain, described.

    Every status change bumps the row's version and is chained as one audit row: a row at
    version v has v - 1 of them, the last one leading to its status. A trail cut short, wiped
    and rebuilt, or a status edited by hand leaves a row it does not account for."""
    from models.assets import Asset
    from models.requests import Request, Stage, format_ref

    requests = session.exec(
        select(Request.id, Request.status, Request.version).order_by(col(Request.id))
    )
    stages = session.exec(
        select(Stage.request_id, Stage.key, Stage.status, Stage.version).order_by(col(Stage.id))
    )
    assets = session.exec(
        select(Asset.id, Asset.serial, Asset.status, Asset.version).order_by(col(Asset.id))
    )
    rows = chain(
        (("request", format_ref(r_id or 0), status, v) for r_id, status, v in requests),
        (("stage", f"{format_ref(r_id)}/{key}", status, v) for r_id, key, status, v in stages),
        (("asset", serial or f"asset-{a_id}", status, v) for a_id, serial, status, v in assets),
    )
    for entity, entity_id, status, version in rows:
        count, last = moves.get((entity, entity_id), (0, ""))
        if count != version - 1 or (count and last != status):
            changes = "1 status change" if count == 1 else f"{count} status changes"
            trail = f"{changes} ending at {last}" if count else "no status change"
            return (
                f"{entity} {entity_id} is {status} at version {version}, but the trail records "
                f"{trail}: audit rows were removed, or the {entity} was changed by hand"
            )
    return ""
