"""THE lifecycle of requests, their stages and their assets: states, events, allowed moves.

Every status change in procure goes through `fire()`: it checks the move against the
tables below, writes the new status with an optimistic-lock check on `version`, appends
the audit event and queues the notifications, all in the caller's transaction. Nothing
else assigns a status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, or_, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from models import audit, outbox
from models.errors import ConcurrentUpdate, TransitionNotAllowed
from models.types import utcnow


class RequestStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    ORDERED = "ordered"
    DELIVERY_SCHEDULED = "delivery_scheduled"
    DELIVERED = "delivered"
    ROLLED_OUT = "rolled_out"
    CLOSED = "closed"


class RequestEvent(StrEnum):
    SUBMIT = "submit"
    START_REVIEW = "start_review"
    APPROVE = "approve"
    REJECT = "reject"
    SEND_BACK = "send_back"
    RESUBMIT = "resubmit"
    CANCEL = "cancel"
    REOPEN = "reopen"  # re-sourced after the approval, which no longer covers it
    ORDER = "order"
    SCHEDULE_DELIVERY = "schedule_delivery"
    DELIVER = "deliver"
    ROLL_OUT = "roll_out"
    CLOSE = "close"


class StageStatus(StrEnum):
    WAITING = "waiting"  # not open yet: an earlier stage is pending, or the request went back
    OPEN = "open"  # waiting for its approvers
    APPROVED = "approved"
    REJECTED = "rejected"
    SENT_BACK = "sent_back"
    SKIPPED = "skipped"  # its condition does not apply to this request
    CANCELLED = "cancelled"  # the request ended before the stage was decided


class StageEvent(StrEnum):
    OPEN = "open"
    APPROVE = "approve"
    REJECT = "reject"
    SEND_BACK = "send_back"
    SUSPEND = "suspend"  # another stage sent the request back
    RESET = "reset"  # a new round after resubmission (inputs changed or condition applies again)
    SKIP = "skip"
    CANCEL = "cancel"


class AssetStatus(StrEnum):
    ORDERED = "ordered"
    DELIVERED = "delivered"
    DEPLOYED = "deployed"
    RETURN_REQUESTED = "return_requested"
    RETURNED = "returned"
    ERASED = "erased"
    DISPOSED = "disposed"
    RETURNED_TO_PROVIDER = "returned_to_provider"


class AssetEvent(StrEnum):
    DELIVER = "deliver"
    DEPLOY = "deploy"
    REQUEST_RETURN = "request_return"
    CANCEL_RETURN = "cancel_return"  # the holder keeps it after all (a leave withdrawn, say)
    RECEIVE_RETURN = "receive_return"
    ERASE = "erase"
    DISPOSE = "dispose"
    RETURN_TO_PROVIDER = "return_to_provider"


class NotificationStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
    SENDING = "sending"  # claimed by a dispatcher until next_attempt_at (its lease)
    SENT = "sent"
    DEAD = "dead"  # gave up after the last attempt; the operators were told
    # Not sent: it asked someone to decide a stage that was decided (or closed) before it went,
    # or a later change made it stale (a newer delivery date, a return taken back).
    DROPPED = "dropped"


class NotificationEvent(StrEnum):
    CLAIM = "claim"  # a dispatcher takes it (also a lapsed claim: the dispatcher died)
    DELIVER = "deliver"  # every destination has it
    RETRY = "retry"  # some destination failed: try again after a back-off
    GIVE_UP = "give_up"
    REQUEUE = "requeue"  # an operator sends a dead one again
    DROP = "drop"  # what it asks for is done, or a later change made it stale: not sent


R, RE = RequestStatus, RequestEvent
S, SE = StageStatus, StageEvent
A, AE = AssetStatus, AssetEvent

REQUEST_TRANSITIONS: Mapping[tuple[str, str], str] = {
    (R.DRAFT, RE.SUBMIT): R.SUBMITTED,
    (R.SUBMITTED, RE.START_REVIEW): R.IN_REVIEW,
    (R.SUBMITTED, RE.APPROVE): R.APPROVED,  # no stage of the pipeline applies
    (R.IN_REVIEW, RE.APPROVE): R.APPROVED,
    (R.IN_REVIEW, RE.REJECT): R.REJECTED,
    (R.IN_REVIEW, RE.SEND_BACK): R.CHANGES_REQUESTED,
    (R.CHANGES_REQUESTED, RE.RESUBMIT): R.SUBMITTED,
    (R.DRAFT, RE.CANCEL): R.CANCELLED,
    (R.SUBMITTED, RE.CANCEL): R.CANCELLED,
    (R.IN_REVIEW, RE.CANCEL): R.CANCELLED,
    (R.CHANGES_REQUESTED, RE.CANCEL): R.CANCELLED,
    (R.APPROVED, RE.CANCEL): R.CANCELLED,
    (R.APPROVED, RE.REOPEN): R.IN_REVIEW,  # the stages the change concerns decide again
    (R.APPROVED, RE.ORDER): R.ORDERED,
    (R.ORDERED, RE.SCHEDULE_DELIVERY): R.DELIVERY_SCHEDULED,
    (R.DELIVERY_SCHEDULED, RE.SCHEDULE_DELIVERY): R.DELIVERY_SCHEDULED,  # rescheduled
    (R.DELIVERY_SCHEDULED, RE.DELIVER): R.DELIVERED,
    # The last unit arrived before any delivery date was agreed: delivered as it is, no date
    # made up for it (actions.deliver).
    (R.ORDERED, RE.DELIVER): R.DELIVERED,
    (R.DELIVERED, RE.ROLL_OUT): R.ROLLED_OUT,
    (R.ROLLED_OUT, RE.CLOSE): R.CLOSED,
}

STAGE_TRANSITIONS: Mapping[tuple[str, str], str] = {
    (S.WAITING, SE.OPEN): S.OPEN,
    (S.WAITING, SE.SKIP): S.SKIPPED,
    (S.WAITING, SE.RESET): S.WAITING,
    (S.WAITING, SE.CANCEL): S.CANCELLED,
    (S.OPEN, SE.APPROVE): S.APPROVED,
    (S.OPEN, SE.REJECT): S.REJECTED,
    (S.OPEN, SE.SEND_BACK): S.SENT_BACK,
    (S.OPEN, SE.SUSPEND): S.WAITING,
    (S.OPEN, SE.CANCEL): S.CANCELLED,
    (S.APPROVED, SE.RESET): S.WAITING,
    (S.APPROVED, SE.SKIP): S.SKIPPED,
    (S.SENT_BACK, SE.RESET): S.WAITING,
    (S.SKIPPED, SE.RESET): S.WAITING,
}

ASSET_TRANSITIONS: Mapping[tuple[str, str], str] = {
    (A.ORDERED, AE.DELIVER): A.DELIVERED,
    (A.DELIVERED, AE.DEPLOY): A.DEPLOYED,
    (A.DEPLOYED, AE.REQUEST_RETURN): A.RETURN_REQUESTED,
    (A.RETURN_REQUESTED, AE.CANCEL_RETURN): A.DEPLOYED,
    (A.DEPLOYED, AE.RECEIVE_RETURN): A.RETURNED,  # handed back without a prior request
    (A.RETURN_REQUESTED, AE.RECEIVE_RETURN): A.RETURNED,
    (A.RETURNED, AE.ERASE): A.ERASED,
    # A unit that holds no data (its catalog item says so: a dock, a headset) has nothing to
    # erase: back in IT's hands it is done, and goes on from there (actions.dispose checks).
    (A.RETURNED, AE.DISPOSE): A.DISPOSED,
    (A.RETURNED, AE.RETURN_TO_PROVIDER): A.RETURNED_TO_PROVIDER,
    (A.ERASED, AE.DEPLOY): A.DEPLOYED,  # re-imaged and handed to someone else
    (A.ERASED, AE.DISPOSE): A.DISPOSED,
    (A.ERASED, AE.RETURN_TO_PROVIDER): A.RETURNED_TO_PROVIDER,
}


N, NE = NotificationStatus, NotificationEvent

NOTIFICATION_TRANSITIONS: Mapping[tuple[str, str], str] = {
    (N.PENDING, NE.CLAIM): N.SENDING,
    (N.SENDING, NE.CLAIM): N.SENDING,  # the lease lapsed: whoever held it is gone
    (N.SENDING, NE.DELIVER): N.SENT,
    (N.SENDING, NE.RETRY): N.PENDING,
    (N.SENDING, NE.GIVE_UP): N.DEAD,
    (N.SENDING, NE.DROP): N.DROPPED,
    (N.DEAD, NE.REQUEUE): N.PENDING,
}


@dataclass(frozen=True)
class Machine:
    """One entity's states and allowed moves, as data."""

    name: str
    states: type[StrEnum]
    events: type[StrEnum]
    transitions: Mapping[tuple[str, str], str]

    def target(self, state: str, event: str, what: str | None = None) -> str:
        """The state `event` leads to from `state`; a clear error if the move is not allowed."""
        try:
            return self.transitions[(state, event)]
        except KeyError:
            pass
        subject = what or self.name
        if event not in {e.value for e in self.events}:
            raise TransitionNotAllowed(f"{subject}: unknown event {event!r}")
        allowed = self.allowed_events(state)
        hint = f"; possible now: {', '.join(allowed)}" if allowed else "; it is final"
        raise TransitionNotAllowed(f"{subject} is {state}: cannot {event}{hint}")

    def allowed_events(self, state: str) -> list[str]:
        return [e for (s, e) in self.transitions if s == state]

    def is_final(self, state: str) -> bool:
        return not self.allowed_events(state)


REQUEST = Machine("request", RequestStatus, RequestEvent, REQUEST_TRANSITIONS)
STAGE = Machine("stage", StageStatus, StageEvent, STAGE_TRANSITIONS)
ASSET = Machine("asset", AssetStatus, AssetEvent, ASSET_TRANSITIONS)
NOTIFICATION = Machine(
    "notification", NotificationStatus, NotificationEvent, NOTIFICATION_TRANSITIONS
)
MACHINES = {m.name: m for m in (REQUEST, STAGE, ASSET, NOTIFICATION)}

# Request states that count as "still deciding" and as "done with the devices".
OPEN_REQUEST_STATES = frozenset({R.SUBMITTED, R.IN_REVIEW, R.CHANGES_REQUESTED})
ASSET_END_STATES = frozenset({A.ERASED, A.DISPOSED, A.RETURNED_TO_PROVIDER})


def asset_done(status: str, holds_data: bool) -> bool:
    """Whether a device needs nothing more for its request to close: erased, disposed of or
    back with its provider; one that holds no data, as soon as it is returned."""
    return status in ASSET_END_STATES or (not holds_data and status == A.RETURNED)


def _identity(entity: Any) -> tuple[str, str, int | None]:
    """(machine name, audit entity id, request id) of a request, stage or asset row."""
    from models.requests import format_ref

    table = entity.__tablename__
    if table == "request":
        return "request", format_ref(entity.id), entity.id
    if table == "stage":
        return "stage", f"{format_ref(entity.request_id)}/{entity.key}", entity.request_id
    if table == "asset":
        return "asset", entity.serial or f"asset-{entity.id}", entity.request_id
    raise TypeError(f"{type(entity).__name__} has no lifecycle")


_MOVES: dict[tuple[Any, tuple[str, ...]], Any] = {}


def _move_statement(model: Any, keys: tuple[str, ...]) -> Any:
    """The version-checked UPDATE that moves rows of `model`, setting `keys`: built once per
    shape and reused with new parameters (building and keying a statement costs more than
    running it). On the table, run on the session's connection with one row's parameters or a
    list of rows' at once."""
    statement = _MOVES.get((model, keys))
    if statement is None:
        table = model.__table__
        statement = _MOVES[(model, keys)] = (
            update(table)
            .where(table.c.id == bindparam("e_id"), table.c.version == bindparam("e_version"))
            .values({key: bindparam(f"v_{key}") for key in keys})
        )
    return statement


@dataclass(frozen=True)
class Move:
    """One row for fire_many(): what else changes with its status, its audit details and the
    notifications it causes."""

    entity: Any
    changes: Mapping[str, Any] = field(default_factory=dict)
    details: dict[str, Any] | None = None
    notices: Sequence[outbox.Notice] = ()


class _Planned(NamedTuple):
    """A move checked against its machine: the row's new values, status and version included."""

    move: Move
    name: str  # the machine
    entity_id: str
    request_id: int | None
    source: str
    values: dict[str, Any]


def fire(
    session: Session,
    entity: Any,
    event: str,
    *,
    actor: str,
    at: datetime | None = None,
    on_behalf_of: str | None = None,
    details: dict[str, Any] | None = None,
    notices: Iterable[outbox.Notice] = (),
    changes: dict[str, Any] | None = None,
) -> str:
    """Move `entity` by `event`: status + version (checked), audit row and outbox rows, one transaction."""
    move = Move(entity, changes or {}, details, list(notices))
    (target,) = fire_many(session, [move], event, actor=actor, at=at, on_behalf_of=on_behalf_of)
    return target


def fire_many(
    session: Session,
    moves: Sequence[Move],
    event: str,
    *,
    actor: str,
    at: datetime | None = None,
    on_behalf_of: str | None = None,
) -> list[str]:
    """Move rows by the same `event` as fire() moves one (a delivery's devices, a rollout's):
    every move is checked against the machine and every row's version first, then one UPDATE
    runs with all the rows' parameters, and their audit and outbox rows go in one INSERT each.
    All or nothing: a row someone else changed meanwhile refuses the lot. Returns the states."""
    if not moves:
        return []
    at = at or utcnow()
    planned = []
    for move in moves:
        name, entity_id, request_id = _identity(move.entity)
        source = move.entity.status
        target = MACHINES[name].target(source, event, what=f"{name} {entity_id}")
        values = {"status": target, "version": move.entity.version + 1, **move.changes}
        planned.append(_Planned(move, name, entity_id, request_id, source, values))
    shapes: dict[tuple[Any, tuple[str, ...]], list[_Planned]] = {}
    for plan in planned:
        shapes.setdefault((type(plan.move.entity), tuple(plan.values)), []).append(plan)
    many = len(planned) > 1
    # The UPDATE runs on the connection, past the ORM: what the ORM holds is flushed first
    # (begin_nested does that too), so the rows it checks are the rows as the caller left them.
    # Several rows: in a savepoint, so that one stale row undoes the others' UPDATE even when
    # the caller catches the refusal and commits.
    if not many:
        session.flush()
    with session.begin_nested() if many else nullcontext():
        connection = session.connection()
        for (model, keys), group in shapes.items():
            rows = [
                {
                    "e_id": plan.move.entity.id,
                    "e_version": plan.move.entity.version,
                    **{f"v_{k}": v for k, v in plan.values.items()},
                }
                for plan in group
            ]
            statement = _move_statement(model, keys)
            result = connection.execute(statement, rows if many else rows[0])
            if result.rowcount != len(rows):
                names = ", ".join(f"{plan.name} {plan.entity_id}" for plan in group)
                raise ConcurrentUpdate(
                    f"{names}: changed by someone else meanwhile; read them again and retry"
                    if len(group) > 1
                    else f"{names} was changed by someone else meanwhile; read it again and retry"
                )
    events: list[dict[str, Any]] = []
    notices: dict[int | None, list[outbox.Notice]] = {}
    for plan in planned:
        for key, value in plan.values.items():
            set_committed_value(plan.move.entity, key, value)
        _, entity_id, _ = _identity(plan.move.entity)  # a delivered asset: by its new serial
        events.append(
            {
                "actor": actor,
                "on_behalf_of": on_behalf_of,
                "entity": plan.name,
                "entity_id": entity_id,
                "request_id": plan.request_id,
                "action": str(event),
                "from_status": plan.source,
                "to_status": plan.values["status"],
                "details": plan.move.details,
                "at": at,
            }
        )
        notices.setdefault(plan.request_id, []).extend(plan.move.notices)
    audit.append_many(session, events)
    for request_id, queued in notices.items():
        outbox.defer(session, queued, request_id=request_id, at=at)
    return [plan.values["status"] for plan in planned]


# ------------------------------------------------------------------ notifications
# Delivery attempts are not audit events (the notification_delivery table records them), but
# their statuses move by the same table as everything else, and only here.


def claim_notifications(
    session: Session,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    request_ids: Sequence[int] | None = None,
) -> list[outbox.Notification]:
    """Take up to `limit` due notifications for this dispatcher until `lease_until`: pending ones
    whose time has come and sending ones whose claim lapsed. Oldest first. Two dispatchers
    never take the same row (row locks on PostgreSQL, the write lock on SQLite)."""
    Row = outbox.Notification
    due = and_(
        col(Row.status).in_([NotificationStatus.PENDING, NotificationStatus.SENDING]),
        or_(col(Row.next_attempt_at).is_(None), col(Row.next_attempt_at) <= now),
    )
    query = select(Row.id).where(due).order_by(col(Row.id)).limit(limit)
    if request_ids is not None:
        query = query.where(col(Row.request_id).in_(request_ids))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.exec(query).all())
    if not ids:
        return []
    for source in (NotificationStatus.PENDING, NotificationStatus.SENDING):
        NOTIFICATION.target(source, NotificationEvent.CLAIM)
    session.execute(
        update(Row)
        .where(col(Row.id).in_(ids), due)
        .values(
            status=NotificationStatus.SENDING,
            attempts=col(Row.attempts) + 1,
            next_attempt_at=lease_until,
        )
        .execution_options(synchronize_session=False)
    )
    rows = session.exec(
        select(Row)
        .where(col(Row.id).in_(ids), Row.status == NotificationStatus.SENDING)
        .execution_options(populate_existing=True)
    ).all()
    return sorted(rows, key=lambda n: n.id or 0)


def settle_notification(
    session: Session,
    row: outbox.Notification,
    event: str,
    *,
    notices: Sequence[outbox.Notice] = (),
    at: datetime | None = None,
    **changes: Any,
) -> bool:
    """Record how a claimed send ended (deliver, retry, give up) or requeue a dead row, and
    queue the notices that go with it (the operators' alert for a dead row).

    Checked against the status and attempt the caller saw: if another dispatcher re-claimed
    the row meanwhile (this one outlived its lease), nothing is written and False returned."""
    target = NOTIFICATION.target(row.status, event, what=f"notification {row.id}")
    Row = outbox.Notification
    result = session.execute(
        update(Row)
        .where(
            col(Row.id) == row.id,
            col(Row.status) == row.status,
            col(Row.attempts) == row.attempts,
        )
        .values(status=target, **changes)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    set_committed_value(row, "status", target)
    for key, value in changes.items():
        set_committed_value(row, key, value)
    outbox.queue_many(session, list(notices), request_id=row.request_id, at=at)
    return True
