"""Approval links that were used: a link decides once.

The approval page's POST records the link's nonce in the same transaction as the decision it
makes; a second POST with the same link finds it (or, racing, hits the unique constraint) and
changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, Session, SQLModel, select

from models.types import UTCDateTime


class UsedLink(SQLModel, table=True):
    __tablename__ = "used_link"
    id: int | None = Field(default=None, primary_key=True)
    nonce: str = Field(max_length=64, unique=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    stage_id: int = Field(foreign_key="stage.id")
    person_id: int = Field(foreign_key="person.id")
    outcome: str = Field(max_length=16)
    used_at: datetime = Field(sa_type=UTCDateTime)


def used(session: Session, nonce: str) -> UsedLink | None:
    """The earlier use of a link, if it was used."""
    return session.exec(select(UsedLink).where(UsedLink.nonce == nonce)).first()
