"""Create-or-update of reference data (people, cost centres, suppliers, items) with audit rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlmodel import Session, SQLModel, select

from models import audit

T = TypeVar("T", bound=SQLModel)
LOOKUP: Any = object()  # upsert's default: find the existing row by `match`


def upsert(
    session: Session,
    model: type[T],
    *,
    match: dict[str, Any],
    values: dict[str, Any],
    entity: str,
    entity_id: str,
    actor: str,
    at: datetime | None = None,
    existing: Any = LOOKUP,
    flush: bool = True,
) -> tuple[T, str]:
    """Insert or update the row whose fields equal `match`; returns (row, what happened).

    What happened is "created", "updated" or "unchanged"; only the first two write an audit row.
    A bulk load passes the row it already looked up (`existing`, None for a new one) and
    `flush=False`, then flushes once for all its rows.
    """
    if existing is LOOKUP:
        query = select(model)
        for name, value in match.items():
            query = query.where(getattr(model, name) == value)
        existing = session.exec(query).first()
    if existing is None:
        row = model(**match, **values)
        session.add(row)
        if flush:
            session.flush()
        audit.append(
            session,
            actor=actor,
            entity=entity,
            entity_id=entity_id,
            action="create",
            details={**match, **values},
            at=at,
        )
        return row, "created"
    changed = {
        name: [getattr(existing, name), value]
        for name, value in values.items()
        if getattr(existing, name) != value
    }
    if not changed:
        return existing, "unchanged"
    for name, (_, value) in changed.items():
        setattr(existing, name, value)
    session.add(existing)
    audit.append(
        session,
        actor=actor,
        entity=entity,
        entity_id=entity_id,
        action="update",
        details={"changed": changed},
        at=at,
    )
    return existing, "updated"


def tally(results: list[str]) -> dict[str, int]:
    """Count created / updated / unchanged."""
    return {k: results.count(k) for k in ("created", "updated", "unchanged")}
