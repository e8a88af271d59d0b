"""Read models: requests, inboxes and timelines as plain dicts, for the CLI, the web app and messages.

One function per view, so every surface shows the same figures.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlmodel import Session, col, select

from models.actions import (
    ASKED_BACK,
    CONFIRMED,
    GONE,
    assets_of,
    decisions_of,
    handed_to,
    lines_of,
    receipt_state,
    spec_for,
    stages_of,
    why_not_held,
)
from models.assets import Asset, ErasureRecord
from models.audit import AuditEvent
from models.catalog import Item
from models.economics import request_economics, terms_view
from models.lifecycle import OPEN_REQUEST_STATES, AssetStatus, RequestStatus, StageStatus
from models.org import CostCentre, Person
from models.requests import Decision, Request, Stage, format_ref
from models.rules import (
    TERMS_ROLE,
    Directory,
    Seat,
    deciders,
    eligible,
    escalation_role,
    open_slots,
    seats,
    slot_delegates,
    terms_deciders,
    terms_delegates,
    terms_seats,
    terms_slot,
)
from models.types import utcnow


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _people(session: Session, ids: set[int | None]) -> dict[int, Person]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    return {
        p.id: p
        for p in session.exec(select(Person).where(col(Person.id).in_(wanted))).all()
        if p.id
    }


def pending(
    session: Session,
    request: Request,
    stages: list[Stage],
    decisions: list[Decision],
    today: date,
) -> list[dict[str, Any]]:
    """Open stages and who can decide them now: [{"stage", "roles", "approvers", "delegates",
    "escalated", "due_at"}]; `escalated`: the slots nobody may decide, with the role deciding
    them instead (whose members are among the approvers) and why; one that nobody of that role
    may decide either also says why (`nobody`) and what to do (`remedy`)."""
    if request.status != RequestStatus.IN_REVIEW:
        return []
    directory = Directory(session, request, today)
    by_id = {s.id: s for s in stages if s.id is not None}
    out = []
    for stage in stages:
        if stage.status != StageStatus.OPEN:
            continue
        roles: list[str] = []
        approvers: dict[str, Person] = {}
        delegates: set[str] = set()
        escalated: list[dict[str, Any]] = []
        for slot, slot_roles in open_slots(stage, decisions):
            roles.extend(slot_roles)
            people, escalation = deciders(
                directory, request, stage, slot, slot_roles, decisions, by_id
            )
            earlier = None if escalation else directory.escalated(stage, slot, slot_roles)
            if earlier is not None:
                # Escalated earlier in the round: its escalation role may still decide it.
                more, _ = eligible(directory, request, stage, slot, (earlier.to,), decisions, by_id)
                people, escalation = people + more, earlier if more else None
            acting = slot_delegates(directory, request, stage, slot, people, decisions, by_id)
            for p in people:
                approvers[p.email] = p
                delegates.update(f"{d.email} (for {p.email})" for d in acting.get(p.id or 0, []))
            if escalation is not None:
                escalated.append({"roles": list(slot_roles), **escalation.context})
        out.append(
            {
                "stage": stage.key,
                "name": stage.name,
                "roles": roles,
                "approvers": sorted(approvers),
                "delegates": sorted(delegates),
                "escalated": escalated,
                "due_at": _iso(stage.due_at),
            }
        )
    return out


def terms_confirmers(
    session: Session,
    request: Request,
    stages: list[Stage],
    decisions: list[Decision],
    today: date,
) -> dict[str, Any] | None:
    """Who may confirm the contract terms still open, while the request is open: {"role",
    "people", "delegates", "escalated"}; `role`: purchasing, or the role purchasing's part of the
    review is escalated to (`escalated`: as in `pending`)."""
    if request.status not in OPEN_REQUEST_STATES or not terms_view(request.terms)["missing"]:
        return None
    directory = Directory(session, request, today)
    people, escalation = terms_deciders(directory, request, stages, decisions)
    delegates = terms_delegates(directory, request, stages, decisions, people)
    return {
        "role": escalation.to if escalation else TERMS_ROLE,
        "people": sorted(p.email for p in people),
        "delegates": sorted(
            f"{d.email} (for {p.email})" for p in people for d in delegates.get(p.id or 0, [])
        ),
        "escalated": {"roles": list(escalation.roles), **escalation.context}
        if escalation
        else None,
    }


def terms_checklist(session: Session, request: Request, now: datetime) -> dict[str, Any]:
    """A request's contract terms as the joint review checks them: each term confirmed (by an
    agreement or offer, or by whom, when and with what note), those still open, and who may
    confirm them (None once nothing is open or the request is decided)."""
    spec = spec_for(session, request)
    checklist = terms_view(request.terms)
    return {
        "id": request.ref,
        "status": request.status,
        "timezone": spec.calendar.timezone,  # the organisation's, for the times of confirmations
        "checklist": checklist["confirmed"],
        "missing": checklist["missing"],
        "confirm_by": terms_confirmers(
            session,
            request,
            stages_of(session, request),
            decisions_of(session, request),
            spec.calendar.today(now),
        ),
    }


def timeline(session: Session, request_id: int) -> list[dict[str, Any]]:
    """Every audit event of a request (its stages and devices included), oldest first."""
    events = session.exec(
        select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(col(AuditEvent.seq))
    ).all()
    return [
        {
            "seq": e.seq,
            "at": _iso(e.at),
            "actor": e.actor,
            "on_behalf_of": e.on_behalf_of,
            "entity": e.entity,
            "entity_id": e.entity_id,
            "action": e.action,
            "from": e.from_status,
            "to": e.to_status,
            "details": e.details,
        }
        for e in events
    ]


# More devices than this, and a request's devices are counted by item and status where they are
# shown (request show, its notices, its page); `procure asset list --request` lists them.
DEVICES_LISTED = 12


def device_counts(assets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's devices by item and status, in the order they first appear, with how many
    deployed ones their holder has not confirmed yet; empty for DEVICES_LISTED devices or fewer
    (those are listed one by one)."""
    if len(assets) <= DEVICES_LISTED:
        return []
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for a in assets:
        row = counts.setdefault(
            (a["sku"], a["status"]),
            {"sku": a["sku"], "status": a["status"], "count": 0, "unconfirmed": 0},
        )
        row["count"] += 1
        if a["status"] == AssetStatus.DEPLOYED and not a["acknowledged_at"]:
            row["unconfirmed"] += 1
    return list(counts.values())


def request_detail(
    session: Session, request: Request, *, now: datetime | None = None
) -> dict[str, Any]:
    """Everything about one request: lines, stages with decisions, who is pending, timeline, devices."""
    now = now or utcnow()
    assert request.id is not None
    lines = lines_of(session, request)
    stages = stages_of(session, request)
    decisions = decisions_of(session, request)
    assets = assets_of(session, request)
    spec = spec_for(session, request)
    people = _people(
        session,
        {request.requester_id, request.on_behalf_of_id}
        | {d.actor_id for d in decisions}
        | {d.on_behalf_of_id for d in decisions}
        | {a.assigned_to_id for a in assets},
    )
    centre = session.get(CostCentre, request.cost_centre_id)
    items = {
        i.id: i
        for i in session.exec(
            select(Item).where(col(Item.id).in_([ln.item_id for ln in lines]))
        ).all()
    }
    erasures = {
        e.asset_id: e
        for e in session.exec(
            select(ErasureRecord).where(col(ErasureRecord.asset_id).in_([a.id for a in assets]))
        ).all()
    }

    def email(person_id: int | None) -> str | None:
        return people[person_id].email if person_id in people else None

    # The terms checklist says who may confirm what it still misses.
    economics = request_economics(
        session, request, economics=spec.economics, today=spec.calendar.today(now)
    )
    economics["terms"]["confirm_by"] = terms_confirmers(
        session, request, stages, decisions, spec.calendar.today(now)
    )
    stage_views = []
    for stage in stages:
        stage_views.append(
            {
                "stage": stage.key,
                "name": stage.name,
                "roles": stage.roles,
                "mode": stage.mode,
                "status": stage.status,
                "round": stage.round,
                "after": stage.after,
                "opened_at": _iso(stage.opened_at),
                "due_at": _iso(stage.due_at),
                "closed_at": _iso(stage.closed_at),
                "decisions": [
                    {
                        "by": email(d.actor_id),
                        "on_behalf_of": email(d.on_behalf_of_id),
                        "role": d.role,
                        "outcome": d.outcome,
                        "comment": d.comment,
                        "at": _iso(d.decided_at),
                        "round": d.round,
                    }
                    for d in decisions
                    if d.stage_id == stage.id
                ],
            }
        )
    detail = {
        "id": request.ref,
        "status": request.status,
        "kind": request.kind,
        "version": request.version,
        "round": request.round,
        "requester": email(request.requester_id),
        "on_behalf_of": email(request.on_behalf_of_id),
        "cost_centre": centre.code if centre else None,
        "needed_by": _iso(request.needed_by),
        "order_by": _iso(request.order_by),
        "delivery_on": _iso(request.delivery_on),
        "justification": request.justification,
        "currency": request.currency,
        "total": str(request.total),
        "pipeline": f"{spec.name}@{spec.version}",
        "idempotency_key": request.idempotency_key,
        "created_at": _iso(request.created_at),
        "submitted_at": _iso(request.submitted_at),
        "decided_at": _iso(request.decided_at),
        "closed_at": _iso(request.closed_at),
        "lines": [
            {
                "line": ln.line_no,
                "sku": ln.sku,
                "name": items[ln.item_id].name if ln.item_id in items else ln.sku,
                "category": items[ln.item_id].category if ln.item_id in items else None,
                "quantity": ln.quantity,
                "unit_price": str(ln.unit_price),
                "total": str(ln.total),
                "ownership": ln.ownership,
                "term_months": ln.term_months,
            }
            for ln in lines
        ],
        "stages": stage_views,
        "pending": pending(session, request, stages, decisions, spec.calendar.today(now)),
        "assets": [
            {
                "serial": a.serial,
                "sku": a.sku,
                "status": a.status,
                "ownership": a.ownership,
                "assigned_to": email(a.assigned_to_id),
                "acknowledged_at": _iso(a.acknowledged_at),
                "warranty_end": _iso(a.warranty_end),
                "contract_end": _iso(a.contract_end),
                "erasure": (
                    {
                        "certificate": erasures[a.id].certificate_id,
                        "method": erasures[a.id].method,
                        "provider": erasures[a.id].provider,
                        "at": _iso(erasures[a.id].erased_at),
                    }
                    if a.id in erasures
                    else None
                ),
            }
            for a in assets
        ],
        "timeline": timeline(session, request.id),
        # The money: sourcing, buy/lease/DaaS, delivery plan, late-involvement ledger, budget,
        # bundling and the terms checklist (one function for every surface that shows them).
        **economics,
    }
    detail["device_counts"] = device_counts(detail["assets"])
    return detail


def request_rows(
    session: Session, *, status: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """One row per request for listings, newest first."""
    requester = Person.__table__.alias("requester")  # type: ignore[attr-defined]
    query = (
        select(Request, requester.c.email, CostCentre.code)
        .join(requester, requester.c.id == Request.requester_id)
        .join(CostCentre, CostCentre.id == Request.cost_centre_id)  # type: ignore[arg-type]
        .order_by(col(Request.id).desc())
    )
    if status is not None:
        query = query.where(Request.status == status)
    if limit is not None:
        query = query.limit(limit)
    rows = session.exec(query).all()
    ids = [r.id for r, _, _ in rows]
    open_stages: dict[int, list[str]] = {}
    if ids:
        for request_id, key in session.exec(
            select(Stage.request_id, Stage.key).where(
                col(Stage.request_id).in_(ids), Stage.status == StageStatus.OPEN
            )
        ).all():
            open_stages.setdefault(request_id, []).append(key)
    return [
        {
            "id": r.ref,
            "status": r.status,
            "kind": r.kind,
            "requester": email,
            "cost_centre": code,
            "total": str(r.total),
            "currency": r.currency,
            "needed_by": _iso(r.needed_by),
            "submitted_at": _iso(r.submitted_at),
            "waiting_for": open_stages.get(r.id or 0, []),
        }
        for r, email, code in rows
    ]


def asset_rows(
    session: Session,
    *,
    request_id: int | None = None,
    status: str | None = None,
    holder: Person | None = None,
    unacknowledged: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Devices for listings, by request and serial (an order's units before delivery have no
    serial yet): those of one request, in one status, held by one person, or handed out and not
    yet confirmed by their holder (`unacknowledged`)."""
    holders = Person.__table__.alias("holder")  # type: ignore[attr-defined]
    query = (
        select(Asset, holders.c.email, Item.name)
        .outerjoin(holders, holders.c.id == Asset.assigned_to_id)
        .join(Item, col(Item.id) == col(Asset.item_id))
        .order_by(col(Asset.request_id), col(Asset.id))
    )
    if request_id is not None:
        query = query.where(Asset.request_id == request_id)
    if status is not None:
        query = query.where(Asset.status == status)
    if holder is not None:
        query = query.where(Asset.assigned_to_id == holder.id)
    if unacknowledged:
        query = query.where(
            Asset.status == AssetStatus.DEPLOYED, col(Asset.acknowledged_at).is_(None)
        )
    if limit is not None:
        query = query.limit(limit)
    return [
        {
            "serial": a.serial,
            "request": format_ref(a.request_id),
            "sku": a.sku,
            "name": name,
            "status": a.status,
            "ownership": a.ownership,
            "assigned_to": email,
            "acknowledged_at": _iso(a.acknowledged_at),
            "warranty_end": _iso(a.warranty_end),
            "contract_end": _iso(a.contract_end),
        }
        for a, email, name in session.exec(query).all()
    ]


def inbox(session: Session, person: Person, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """What waits for this person (directly or as a delegate), oldest deadline first: the parts
    of stages they may decide (`what`: decision), the contract terms still open on an open
    request that they may confirm (`what`: terms, with the `terms`; `stage` None); and the parts
    that nobody may decide, to those who hold their roles or their escalation role. Nothing for
    someone no longer active: they may decide nothing."""
    now = now or utcnow()
    if not person.active:
        return []
    candidates = session.exec(
        select(Request)
        .where(col(Request.status).in_(OPEN_REQUEST_STATES))
        .order_by(col(Request.id))
    ).all()
    items: list[dict[str, Any]] = []
    for request in candidates:
        missing = terms_view(request.terms)["missing"]
        if request.status != RequestStatus.IN_REVIEW and not missing:
            continue
        spec = spec_for(session, request)
        directory = Directory(session, request, spec.calendar.today(now))
        stages = stages_of(session, request)
        decisions = decisions_of(session, request)
        decide: list[dict[str, Any]] = []
        if request.status == RequestStatus.IN_REVIEW:
            decide = _stage_items(request, person, directory, stages, decisions, now)
            items.extend(decide)
        if missing:
            # The contract terms still open, to whoever may confirm them (procure terms): the
            # final approval waits for them. Not while the reader's own part they belong to is
            # listed to decide: its approval form confirms them (one line, not two).
            mine, _ = terms_seats(directory, person, request, stages, decisions)
            part, _ = terms_slot(stages)
            deciding = part is not None and any(
                i["stage"] == part.key and i["role"] == mine[0].role and not i["nobody"]
                for i in decide
                if mine
            )
            if mine and not deciding:
                items.append(_terms_item(request, stages, mine[0], missing, now))
    items.sort(key=lambda i: (i["due_at"] is None, i["due_at"] or "", i["id"]))
    return items


def _stage_items(
    request: Request,
    person: Person,
    directory: Directory,
    stages: list[Stage],
    decisions: list[Decision],
    now: datetime,
) -> list[dict[str, Any]]:
    """The inbox lines of a request in review: the parts of its open stages the person may
    decide, or, held by their roles, one that nobody may decide."""
    items: list[dict[str, Any]] = []
    found, _ = seats(directory, person, request, stages, decisions)
    listed: set[str] = set()
    for seat in found:
        if seat.stage.key in listed:
            continue
        listed.add(seat.stage.key)
        items.append(
            _inbox_item(
                request,
                seat.stage,
                now,
                role=seat.role,
                on_behalf_of=seat.principal.email if seat.delegated else None,
                escalated=seat.escalation.text if seat.escalation else None,
            )
        )
    # A part nobody may decide, nor its escalation role, is shown to those who hold its roles
    # or the escalation role (though they may not decide it either): why, and what to do.
    by_id = {s.id: s for s in stages if s.id is not None}
    for stage in stages:
        if stage.status != StageStatus.OPEN or stage.key in listed:
            continue
        for slot, roles in open_slots(stage, decisions):
            held = [r for r in (*roles, escalation_role(stage)) if directory.holds(person, r)]
            if not held:
                continue
            _, escalation = deciders(directory, request, stage, slot, roles, decisions, by_id)
            if escalation is not None and escalation.nobody:
                listed.add(stage.key)
                nobody = f"{escalation.text}; what to do: {escalation.remedy}"
                items.append(_inbox_item(request, stage, now, role=held[0], nobody=nobody))
                break
    return items


def _terms_item(
    request: Request, stages: list[Stage], seat: Seat, missing: list[str], now: datetime
) -> dict[str, Any]:
    """One line of an inbox: the contract terms still open that the person may confirm (in the
    seat given: purchasing, on someone's behalf, or escalated), due when the request's next
    open stage is (what the terms hold up)."""
    due = min((s.due_at for s in stages if s.status == StageStatus.OPEN and s.due_at), default=None)
    return _inbox_row(
        request,
        now,
        due,
        what="terms",
        stage=None,
        stage_name="Contract terms",
        terms=missing,
        role=seat.role,
        on_behalf_of=seat.principal.email if seat.delegated else None,
        escalated=seat.escalation.text if seat.escalation else None,
        nobody=None,
    )


def _inbox_item(
    request: Request,
    stage: Stage,
    now: datetime,
    *,
    role: str,
    on_behalf_of: str | None = None,
    escalated: str | None = None,
    nobody: str | None = None,
) -> dict[str, Any]:
    """One line of an inbox: a stage the person may decide (`nobody`: one that nobody may, why
    and what to do)."""
    return _inbox_row(
        request,
        now,
        stage.due_at,
        what="decision",
        stage=stage.key,
        stage_name=stage.name,
        terms=None,
        role=role,
        on_behalf_of=on_behalf_of,
        escalated=escalated,
        nobody=nobody,
    )


def _inbox_row(
    request: Request, now: datetime, due: datetime | None, **item: Any
) -> dict[str, Any]:
    """An inbox line: what is asked (`item`), then the request's kind, money and dates."""
    return {
        "id": request.ref,
        **item,
        "kind": request.kind,
        "total": str(request.total),
        "currency": request.currency,
        "needed_by": _iso(request.needed_by),
        "due_at": _iso(due),
        "overdue": bool(due and due < now),
    }


def received(session: Session, request: Request, holder: Person) -> list[dict[str, Any]]:
    """The devices of a request handed to a person, as their receipt link's page lists them:
    serial, sku, item name, `state` (actions.WAITING, CONFIRMED, ASKED_BACK or GONE), when they
    confirmed it, and why one is no longer theirs to confirm."""
    assets = handed_to(session, request, holder)
    names = dict(
        session.exec(
            select(Item.id, Item.name).where(col(Item.id).in_({a.item_id for a in assets}))
        ).all()
    )
    out = []
    for a in assets:
        state = receipt_state(a, holder)
        out.append(
            {
                "serial": a.serial,
                "sku": a.sku,
                "name": names.get(a.item_id),
                "state": state,
                "acknowledged_at": _iso(a.acknowledged_at) if state == CONFIRMED else None,
                "why": why_not_held(a, holder) if state in (GONE, ASKED_BACK) else None,
            }
        )
    return out


def asset_detail(session: Session, asset: Asset) -> dict[str, Any]:
    holder = session.get(Person, asset.assigned_to_id) if asset.assigned_to_id else None
    erasure = session.exec(select(ErasureRecord).where(ErasureRecord.asset_id == asset.id)).first()
    item = session.get(Item, asset.item_id)
    events = session.exec(
        select(AuditEvent)
        .where(AuditEvent.entity == "asset", AuditEvent.request_id == asset.request_id)
        .order_by(col(AuditEvent.seq))
    ).all()
    return {
        "serial": asset.serial,
        "sku": asset.sku,
        "status": asset.status,
        "request": format_ref(asset.request_id),
        "ownership": asset.ownership,
        "assigned_to": holder.email if holder else None,
        "acknowledged_at": _iso(asset.acknowledged_at),
        "warranty_end": _iso(asset.warranty_end),
        "contract_end": _iso(asset.contract_end),
        "delivered_at": _iso(asset.delivered_at),
        "deployed_at": _iso(asset.deployed_at),
        "returned_at": _iso(asset.returned_at),
        # False: a dock, a headset; once returned it needs no certified erasure (the catalog's).
        "holds_data": item.holds_data if item else True,
        "erasure": (
            {
                "certificate": erasure.certificate_id,
                "method": erasure.method,
                "provider": erasure.provider,
                "at": _iso(erasure.erased_at),
                "recorded_by": erasure.recorded_by,
            }
            if erasure
            else None
        ),
        "history": [
            {
                "at": _iso(e.at),
                "actor": e.actor,
                "action": e.action,
                "from": e.from_status,
                "to": e.to_status,
            }
            for e in events
            if e.entity_id in (asset.serial, f"asset-{asset.id}")
        ],
    }
