"""The outbox: notifications recorded in the same transaction as the change that causes them.

The notification dispatcher (notifications/) delivers pending rows; a row's dedup key makes
queueing idempotent, so a retried action never queues the same message twice.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, Index, or_
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select

from models.audit import plain_json
from models.db import insert_unless_taken
from models.types import UTCDateTime, utcnow

PENDING = "pending"


# One message to deliver: which event, to whom (a team tag or a person), with what context.
class Notification(SQLModel, table=True):
    __tablename__ = "notification"
    # The dispatcher's question: which rows are due (pending, or sending with a lapsed lease)?
    __table_args__ = (Index("ix_notification_due", "status", "next_attempt_at"),)
    id: int | None = Field(default=None, primary_key=True)
    event: str = Field(max_length=64, index=True)
    audience: str = Field(max_length=300)
    request_id: int | None = Field(default=None, foreign_key="request.id", index=True)
    asset_id: int | None = Field(default=None, foreign_key="asset.id")
    stage_id: int | None = Field(default=None, foreign_key="stage.id")
    context: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    dedup_key: str = Field(max_length=300, unique=True)
    status: str = Field(default=PENDING, max_length=16, index=True)
    attempts: int = 0
    # pending: when to try (again); sending: until when the dispatcher that claimed it holds it.
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str = Field(default="", max_length=2000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# One attempt to deliver a notification to one destination, kept for `procure notify status`
# and so that a retry skips the destinations that already have the message.
class Delivery(SQLModel, table=True):
    __tablename__ = "notification_delivery"
    id: int | None = Field(default=None, primary_key=True)
    notification_id: int = Field(foreign_key="notification.id", index=True)
    attempt: int
    # The destination with its secrets masked: "email it-team@example.com via mailtos://...".
    target: str = Field(max_length=500)
    ok: bool
    error: str = Field(default="", max_length=2000)
    at: datetime = Field(sa_type=UTCDateTime)


@dataclass(frozen=True)
class Notice:
    """A notification an action wants sent: event, audience and what makes it unique."""

    event: str
    audience: str
    key: str
    context: dict[str, Any] = field(default_factory=dict)
    stage_id: int | None = None
    asset_id: int | None = None


def team(role: str) -> str:
    """The audience string for a team (an Apprise tag)."""
    return f"team:{role}"


def person(email: str) -> str:
    """The audience string for one person."""
    return f"person:{email}"


def dedup_key(notice: Notice) -> str:
    return f"{notice.event}|{notice.key}|{notice.audience}"


def queue(
    session: Session, notice: Notice, *, request_id: int | None, at: datetime | None = None
) -> int | None:
    """Record a notice unless one with the same dedup key exists; the new row's id, or None."""
    (row,) = queue_many(session, [notice], request_id=request_id, at=at)
    return row


def queue_many(
    session: Session,
    notices: Sequence[Notice],
    *,
    request_id: int | None,
    at: datetime | None = None,
) -> list[int | None]:
    """Record several notices in one statement; returns each new row's id, or None where the
    key was queued before (in an earlier transaction, earlier in this one or in this call).

    One INSERT ... ON CONFLICT (dedup_key) DO NOTHING RETURNING: the database's unique key is
    the check, so there is no lookup first, and two transactions queueing the same key at once
    keep one row (the second waits for the first, then skips it)."""
    if not notices:
        return []
    _write_waiting(session)  # deferred earlier in this transaction: those keys come first
    rows = _rows(notices, request_id, at)
    statement = _STATEMENTS[session.get_bind().dialect.name]
    # One multi-row statement per call (SQLAlchemy's "insertmanyvalues" batches the rows
    # behind one cached compiled statement); the keys that come back are the new rows.
    new = {key: id_ for key, id_ in session.connection().execute(statement, list(rows.values()))}
    # A key given twice in one call is new once: the first time.
    answer: list[int | None] = []
    for notice in notices:
        answer.append(new.pop(dedup_key(notice), None))
    return answer


def _rows(
    notices: Sequence[Notice], request_id: int | None, at: datetime | None
) -> dict[str, dict[str, Any]]:
    """The notification rows for these notices, by dedup key (a key given twice: the first)."""
    moment = at or utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for notice in notices:
        key = dedup_key(notice)
        if key not in rows:
            rows[key] = {
                "event": notice.event,
                "audience": notice.audience,
                "request_id": request_id,
                "asset_id": notice.asset_id,
                "stage_id": notice.stage_id,
                "context": plain_json(notice.context),
                "dedup_key": key,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": moment,
                "last_error": "",
                "created_at": moment,
                "sent_at": None,
            }
    return rows


class Sibling(NamedTuple):
    """Another notification of the same thread (see siblings()), as much as is needed to judge
    whether it supersedes a row or was ever delivered."""

    id: int
    event: str
    delivered: bool  # some destination has it


def siblings(
    session: Session, rows: Sequence[Notification], events: Collection[str]
) -> dict[int, list[Sibling]]:
    """For each row (by id), the other notifications of `events` to the same audience about the
    same request and device (its thread: the delivery dates of a request told to HR, a device
    asked back and kept), oldest first, whatever their status, each with whether any
    destination has it. Two queries for all the rows."""
    mine = [r for r in rows if r.id is not None and (r.request_id, r.asset_id) != (None, None)]
    if not mine or not events:
        return {}
    Row = Notification
    subject = or_(
        col(Row.request_id).in_({r.request_id for r in mine if r.request_id is not None}),
        col(Row.asset_id).in_({r.asset_id for r in mine if r.asset_id is not None}),
    )
    names = ("id", "event", "audience", "request_id", "asset_id")
    found = session.execute(
        sa_select(*(col(getattr(Row, name)) for name in names))
        .where(
            col(Row.event).in_(set(events)),
            col(Row.audience).in_({r.audience for r in mine}),
            subject,
        )
        .order_by(col(Row.id))
    ).all()
    ids = [f[0] for f in found]
    delivered = (
        set(
            session.exec(
                select(Delivery.notification_id)
                .where(col(Delivery.notification_id).in_(ids), col(Delivery.ok).is_(True))
                .distinct()
            ).all()
        )
        if ids
        else set()
    )
    threads: dict[tuple[str, int | None, int | None], list[Sibling]] = {}
    for id_, event, audience, request_id, asset_id in found:
        sibling = Sibling(id_, event, id_ in delivered)
        threads.setdefault((audience, request_id, asset_id), []).append(sibling)
    return {
        r.id: [s for s in threads.get((r.audience, r.request_id, r.asset_id), []) if s.id != r.id]
        for r in mine
        if r.id is not None
    }


# ------------------------------------------------------------------ deferred notices
# A step queues notices with each change it makes (a stage closes, the request moves on):
# two or three INSERTs a step. defer() keeps them and writes the transaction's notices in one
# INSERT, before it commits or before a statement that may read them. Nothing outside the
# transaction sees the difference: it sees the rows at commit either way.


@dataclass
class _Waiting:
    """One transaction's deferred notification rows, by dedup key (first wins), and the rows
    written while savepoints were open, by savepoint: deferred before it (defer() in a
    savepoint writes at once), so they wait to be written again if it rolls back."""

    transaction: Any
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    inside: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)


def defer(
    session: Session,
    notices: Sequence[Notice],
    *,
    request_id: int | None,
    at: datetime | None = None,
) -> None:
    """Queue notices as queue_many() does, written with the transaction's other deferred
    notices in one INSERT (before commit, or before a query that may read the outbox). For
    callers that need not know which notices were new. In a savepoint: written at once."""
    if not notices:
        return
    if session.in_nested_transaction():
        queue_many(session, notices, request_id=request_id, at=at)
        return
    waiting: _Waiting | None = session.info.get("outbox_waiting")
    transaction = session.get_transaction() or session.begin()  # the one the notices belong to
    if waiting is None or waiting.transaction is not transaction:
        waiting = session.info["outbox_waiting"] = _Waiting(transaction)
    for key, row in _rows(notices, request_id, at).items():
        waiting.rows.setdefault(key, row)


def _write_waiting(session: Session) -> None:
    waiting: _Waiting | None = session.info.get("outbox_waiting")
    if waiting is None or not waiting.rows:
        return
    if waiting.transaction is not session.get_transaction():  # left by a transaction that ended
        session.info.pop("outbox_waiting", None)
        return
    rows = list(waiting.rows.values())
    waiting.rows = {}
    savepoint = session.get_nested_transaction()
    while savepoint is not None and savepoint.nested:  # each open savepoint, innermost first
        waiting.inside.setdefault(savepoint, []).extend(rows)
        savepoint = savepoint.parent
    session.connection().execute(_DEFERRED[session.get_bind().dialect.name], rows)


@sa_event.listens_for(Session, "do_orm_execute")
def _before_reading(state: Any) -> None:
    """Write the waiting notices before a statement on the outbox, or one the ORM cannot see
    into (text, a table)."""
    waiting: _Waiting | None = state.session.info.get("outbox_waiting")
    if waiting is None or not waiting.rows:
        return
    mappers = state.all_mappers
    if not mappers or _MAPPER in mappers:
        _write_waiting(state.session)


@sa_event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    _write_waiting(session)
    session.info.pop("outbox_waiting", None)


@sa_event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous_transaction: Any) -> None:
    """A transaction rolled back forgets its notices. A savepoint rolled back took with it the
    notices written inside it that were deferred before it: they wait to be written again."""
    waiting: _Waiting | None = session.info.get("outbox_waiting")
    if waiting is None:
        return
    if not previous_transaction.nested:
        if previous_transaction.parent is None:
            session.info.pop("outbox_waiting", None)
        return
    for row in waiting.inside.pop(previous_transaction, []):
        waiting.rows.setdefault(row["dedup_key"], row)


_TABLE = Notification.__table__  # type: ignore[attr-defined]
_MAPPER = sa_inspect(Notification)
_STATEMENTS = insert_unless_taken(_TABLE, ["dedup_key"], _TABLE.c.dedup_key, _TABLE.c.id)
_DEFERRED = insert_unless_taken(_TABLE, ["dedup_key"])  # nobody asks which were new
