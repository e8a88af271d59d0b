"""The outbox: notifications recorded in the same transaction as the change that causes them.

The notification dispatcher (notifications/) delivers pending rows; a row's dedup key makes
queueing idempotent, so a retried action never queues the same message twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON
from sqlmodel import Field, Session, SQLModel, select

from models.audit import plain_json
from models.types import UTCDateTime, utcnow

PENDING = "pending"


# One message to deliver: which event, to whom (a team tag or a person), with what context.
class Notification(SQLModel, table=True):
    __tablename__ = "notification"
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
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str = Field(default="", max_length=2000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


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


def queue(
    session: Session, notice: Notice, *, request_id: int | None, at: datetime | None = None
) -> Notification | None:
    """Record a notice unless one with the same dedup key exists; returns the new row or None."""
    dedup_key = f"{notice.event}|{notice.key}|{notice.audience}"
    existing = session.exec(
        select(Notification.id).where(Notification.dedup_key == dedup_key)
    ).first()
    if existing is not None:
        return None
    row = Notification(
        event=notice.event,
        audience=notice.audience,
        request_id=request_id,
        asset_id=notice.asset_id,
        stage_id=notice.stage_id,
        context=plain_json(notice.context),
        dedup_key=dedup_key,
        created_at=at or utcnow(),
        next_attempt_at=at or utcnow(),
    )
    session.add(row)
    return row
