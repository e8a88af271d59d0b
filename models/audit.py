"""The audit trail: append-only events, each hash-chained to the one before it.

Nothing updates or deletes an audit row: this module only inserts, and the migration
installs triggers that refuse UPDATE and DELETE on the table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from types import SimpleNamespace
from typing import Any

from sqlalchemy import JSON, insert, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm.attributes import set_committed_value
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


def compute_hash(event: AuditEvent) -> str:
    """The SHA-256 of the event's content together with the previous row's hash."""
    body = {
        "seq": event.seq,
        "at": as_utc(event.at).isoformat(),
        "actor": event.actor,
        "on_behalf_of": event.on_behalf_of,
        "entity": event.entity,
        "entity_id": event.entity_id,
        "request_id": event.request_id,
        "action": event.action,
        "from": event.from_status,
        "to": event.to_status,
        "details": event.details,
        "prev": event.prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction."""
    head = _locked_head(session)
    event = AuditEvent(
        seq=head.seq + 1,
        at=as_utc(at or utcnow()),
        actor=actor,
        on_behalf_of=on_behalf_of,
        entity=entity,
        entity_id=entity_id,
        request_id=request_id,
        action=action,
        from_status=from_status,
        to_status=to_status,
        details=plain_json(details or {}),
        prev_hash=head.hash,
        hash="",
    )
    event.hash = compute_hash(event)
    _advance_head(session, head, event.seq, event.hash)
    session.add(event)
    return event


def append_many(session: Session, events: list[dict[str, Any]]) -> None:
    """Append many events (the keyword arguments of append() each) in one bulk INSERT: a
    directory of thousands of people is audited without building an object per row."""
    if not events:
        return
    head = _locked_head(session)
    rows = []
    seq, prev = head.seq, head.hash
    for given in events:
        seq += 1
        row = {
            "seq": seq,
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
            "prev_hash": prev,
            "hash": "",
        }
        # compute_hash reads attributes: the same fields, without building an ORM object.
        row["hash"] = prev = compute_hash(SimpleNamespace(**row))  # type: ignore[arg-type]
        rows.append(row)
    session.execute(insert(AuditEvent), rows)
    _advance_head(session, head, seq, prev)


def _advance_head(session: Session, head: AuditHead, seq: int, hash_: str) -> None:
    """Move the head in memory; the row is written once, when the transaction commits (not
    before every autoflushed query: a step that appends five events wrote it five times)."""
    set_committed_value(head, "seq", seq)
    set_committed_value(head, "hash", hash_)
    session.info["audit_head_dirty"] = head


@sa_event.listens_for(Session, "before_commit")
def _write_head(session: Session) -> None:
    head = session.info.pop("audit_head_dirty", None)
    if head is not None:
        session.execute(
            update(AuditHead)
            .where(col(AuditHead.id) == 1)
            .values(seq=head.seq, hash=head.hash)
            .execution_options(synchronize_session=False)
        )


@sa_event.listens_for(Session, "after_rollback")
def _forget_head(session: Session) -> None:
    session.info.pop("audit_head_dirty", None)
    session.info.pop("audit_head", None)


def _locked_head(session: Session) -> AuditHead:
    # The head row is locked once per transaction (FOR UPDATE on PostgreSQL; SQLite's
    # BEGIN IMMEDIATE already serialises writers), so concurrent writers never fork the chain.
    cached = session.info.get("audit_head")
    if cached is not None and cached[0] is session.get_transaction():
        return cached[1]
    head = session.exec(select(AuditHead).where(AuditHead.id == 1).with_for_update()).first()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    # Remembered with the transaction the query above belongs to (it may have begun it).
    session.info["audit_head"] = (session.get_transaction(), head)
    return head


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
    for event in iter_events(session):
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
    return VerifyResult(checked, True)
