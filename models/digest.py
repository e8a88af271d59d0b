"""The weekly digest: for each team, what waits for it and what is late (its decisions past their
deadline, the stages escalated to it past theirs, purchasing's requests past their order-by
date)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from models import outbox
from models.actions import decisions_of, spec_for, stages_of
from models.assets import Asset
from models.catalog import Item
from models.lifecycle import AssetStatus, RequestStatus, StageStatus
from models.org import Role
from models.outbox import Notice, team
from models.pipeline import PipelineSpec
from models.requests import Request, RequestKind, Stage, format_ref
from models.rules import escalation_role
from models.views import pending

LIMIT = 20  # items listed per section; the counts cover all


def open_parts(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Every open stage of a request in review with a part still to decide, oldest deadline
    first: the roles deciding those parts (as the inbox has them, from views.pending: the roles
    of the open parts and the role any of them went to), who may decide them now, the stage's
    escalation role and, past its deadline, by how many working hours of the request's
    calendar (SLAs count those)."""
    requests = session.exec(
        select(Request)
        .where(
            Request.status == RequestStatus.IN_REVIEW,
            col(Request.id).in_(select(Stage.request_id).where(Stage.status == StageStatus.OPEN)),
        )
        .order_by(col(Request.id))
    ).all()
    out = []
    for request in requests:
        stages = stages_of(session, request)
        by_key = {s.key: s for s in stages}
        calendar = spec_for(session, request).calendar
        today = calendar.today(now)
        for part in pending(session, request, stages, decisions_of(session, request), today):
            roles = {*part["roles"], *(e["to"] for e in part["escalated"])}
            stage = by_key[part["stage"]]
            due_at = stage.due_at
            hours = None  # past the deadline: working hours since
            if due_at is not None and due_at < now:
                hours = calendar.business_hours_between(due_at, now)
            out.append(
                {
                    "id": request.ref,
                    "stage": part["stage"],
                    "name": part["name"],
                    "due_at": due_at,
                    "roles": roles,
                    # Who still has to decide: the open parts' roles, and the people who may.
                    "waiting_on": list(dict.fromkeys(part["roles"])),
                    "approvers": part["approvers"],
                    "escalate_to": escalation_role(stage),
                    "late_hours": None if hours is None else int(hours),
                    "late_workdays": None
                    if hours is None
                    else int(hours // calendar.workday_hours),
                }
            )
    out.sort(key=lambda p: (p["due_at"] is None, p["due_at"] or now, p["id"]))
    return out


def _waiting(role: str, parts: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Open stages with a part this role decides: how many, how many overdue, the oldest
    deadlines first."""
    mine = [p for p in parts if role in p["roles"]]
    overdue = [p for p in mine if p["due_at"] is not None and p["due_at"] < now]
    return {
        "count": len(mine),
        "overdue": len(overdue),
        "items": [
            {
                "id": p["id"],
                "stage": p["stage"],
                "name": p["name"],  # as the other notices name it: "Finance approval"
                "due_at": p["due_at"],
                "overdue": p in overdue,
            }
            for p in mine[:LIMIT]
        ],
    }


def _late(role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Open stages past their deadline whose escalation role is this team (the SLA watchdog
    escalated them to it, sla.sweep): how many, the longest overdue first, each with by how much
    and who still has to decide."""
    mine = [p for p in parts if p["late_hours"] is not None and p["escalate_to"] == role]
    return {
        "count": len(mine),
        "items": [
            {
                "id": p["id"],
                "stage": p["stage"],
                "name": p["name"],
                "due_at": p["due_at"],
                "late_hours": p["late_hours"],
                "late_workdays": p["late_workdays"],
                "waiting_on": p["waiting_on"],
                "approvers": p["approvers"],
            }
            for p in mine[:LIMIT]
        ],
    }


def _requests(
    session: Session,
    *statuses: str,
    kind: str | None = None,
    needed_before: Any = None,
    order_by_before: Any = None,
) -> dict[str, Any]:
    query = select(Request).where(col(Request.status).in_(list(statuses)))
    if kind is not None:
        query = query.where(Request.kind == kind)
    if needed_before is not None:
        query = query.where(Request.needed_by <= needed_before)
    if order_by_before is not None:
        query = query.where(col(Request.order_by) < order_by_before)
    rows = session.exec(query.order_by(col(Request.needed_by))).all()
    return {
        "count": len(rows),
        "items": [
            {"id": r.ref, "status": r.status, "needed_by": r.needed_by, "total": r.total}
            for r in rows[:LIMIT]
        ],
    }


def _assets(session: Session, status: str, *, holding_data: bool | None = None) -> dict[str, Any]:
    """Devices in a status; `holding_data`: only those whose item does (or does not) hold data."""
    where: list[Any] = [Asset.status == status]
    if holding_data is not None:
        where.append(col(Asset.item_id).in_(select(Item.id).where(Item.holds_data == holding_data)))
    count = session.exec(select(func.count()).select_from(Asset).where(*where)).one()
    rows = session.exec(select(Asset).where(*where).order_by(col(Asset.id)).limit(LIMIT)).all()
    return {
        "count": count,
        "items": [
            {"serial": a.serial, "sku": a.sku, "request": format_ref(a.request_id)} for a in rows
        ],
    }


def team_digest(
    session: Session,
    role: str,
    *,
    spec: PipelineSpec,
    now: datetime,
    parts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What one team should look at this week (`parts`: open_parts, when known already)."""
    today = spec.calendar.today(now)
    if parts is None:
        parts = open_parts(session, now)
    sections: dict[str, Any] = {"waiting_for_you": _waiting(role, parts, now)}
    late = _late(role, parts)
    # A team some stage escalates to hears what is late each week, nothing as well; another
    # (IT, say) only when a request's own pipeline escalated a stage to it.
    if late["count"] or role in {escalation_role(s) for s in spec.stages if s.sla_hours}:
        sections["escalated_late"] = late
    if role == Role.PURCHASING:
        sections["to_order"] = _requests(session, RequestStatus.APPROVED)
        sections["past_order_by"] = _requests(
            session,
            RequestStatus.SUBMITTED,
            RequestStatus.IN_REVIEW,
            RequestStatus.APPROVED,
            order_by_before=today,
        )
    elif role == Role.IT:
        sections["to_roll_out"] = _requests(session, RequestStatus.DELIVERED)
        sections["returns_to_collect"] = _assets(session, AssetStatus.RETURN_REQUESTED)
        # A returned dock or headset needs no erasure: it is done once back.
        sections["awaiting_erasure"] = _assets(session, AssetStatus.RETURNED, holding_data=True)
    elif role == Role.HR:
        sections["starting_soon"] = _requests(
            session,
            *(
                s.value
                for s in RequestStatus
                if s not in (RequestStatus.CANCELLED, RequestStatus.REJECTED, RequestStatus.CLOSED)
            ),
            kind=RequestKind.ONBOARDING,
            needed_before=today + timedelta(days=30),
        )
    return {"team": role, "week": _week(now, spec), "sections": sections}


def _week(now: datetime, spec: PipelineSpec) -> str:
    year, week, _ = spec.calendar.today(now).isocalendar()
    return f"{year}-W{week:02d}"


def send_digests(session: Session, *, spec: PipelineSpec, now: datetime) -> list[str]:
    """Queue this week's digest for every team (once a week: the week is in the dedup key)."""
    sent = []
    parts = open_parts(session, now)
    for role in Role:
        if role == Role.REQUESTER:
            continue
        content = team_digest(session, role.value, spec=spec, now=now, parts=parts)
        if outbox.queue(
            session,
            Notice("digest", team(role), f"digest/{content['week']}", content),
            request_id=None,
            at=now,
        ):
            sent.append(role.value)
    return sent
