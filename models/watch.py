"""Daily watches: devices nearing the end of their warranty, lease or DaaS term, and requests
slipping past their order-by or needed-by dates.

Each watch is safe to run again: notifications carry dedup keys, drafts carry idempotency
keys, and a return is only asked once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlmodel import Session, col, select

from models import actions, outbox
from models.assets import Asset, Ownership
from models.catalog import Item, Offer
from models.db import by_id
from models.economics import SPENT_STATES
from models.errors import InputError
from models.lifecycle import AssetStatus, RequestStatus
from models.org import CostCentre, Person, Role
from models.outbox import Notice, person, team
from models.pipeline import PipelineSpec
from models.requests import Request, RequestCreate, RequestKind, RequestLine
from models.types import ending

THRESHOLDS = (
    90,
    60,
    30,
)  # days before an end date: alert; at 60 draft a refresh; at 30 ask it back
DRAFT_AT = 60
RETURN_AT = 30
JUSTIFICATION_MAX: int = next(
    m.max_length
    for m in RequestCreate.model_fields["justification"].metadata
    if hasattr(m, "max_length")
)


@dataclass
class WatchResult:
    """What a watch did."""

    checked: int = 0
    alerts: int = 0
    drafts: list[str] = field(default_factory=list)
    returns: list[str] = field(default_factory=list)

    def add(self, other: WatchResult) -> None:
        self.checked += other.checked
        self.alerts += other.alerts
        self.drafts += other.drafts
        self.returns += other.returns


def ending_assets(session: Session, *, today: date) -> list[int]:
    """Devices in use whose warranty or contract ends within the first threshold."""
    horizon = today + timedelta(days=THRESHOLDS[0])
    rows = session.exec(
        select(Asset.id)
        .where(
            Asset.status == AssetStatus.DEPLOYED,
            (col(Asset.contract_end) <= horizon) | (col(Asset.warranty_end) <= horizon),
        )
        .order_by(col(Asset.id))
    ).all()
    return [i for i in rows if i is not None]


def _end_of(asset: Asset) -> tuple[date | None, str]:
    """The date that matters for a device and what ends then: a lease, a DaaS term, a warranty."""
    if asset.ownership != Ownership.BOUGHT and asset.contract_end is not None:
        return asset.contract_end, "lease" if asset.ownership == Ownership.LEASED else "daas"
    return asset.warranty_end, "warranty"


@dataclass
class _Group:
    """The devices of one request that end on the same date for the same reason: one alert to
    each team, and one refresh for them all where that is decided (see _drafts_together)."""

    request: Request
    ends: str
    end: date
    devices: list[Asset]
    holders: dict[int, Person]
    requester: Person | None  # who a group's refresh is for; None: they left (one per holder)
    together: bool = False  # one refresh for the group (else one per holder)

    def holder(self, asset: Asset) -> Person | None:
        return self.holders.get(asset.assigned_to_id) if asset.assigned_to_id else None


def lifecycle_watch(
    session: Session, *, asset_ids: Sequence[int], spec: PipelineSpec, now: datetime
) -> WatchResult:
    """For each device: alert IT and purchasing at 90/60/30 days before its end, once per group of
    devices of one request ending together; from 60 days draft one refresh for a group (or, for a
    device alone, for its holder); from 30 days ask a leased or DaaS device back."""
    today = spec.calendar.today(now)
    result = WatchResult()
    groups: dict[tuple[int, str, date], _Group] = {}
    deployed: dict[int, list[Asset]] = {}
    for asset_id in asset_ids:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.status != AssetStatus.DEPLOYED:
            continue
        end, what = _end_of(asset)
        if end is None or not _watched(session, asset, what, spec):
            continue
        result.checked += 1
        left = (end - today).days
        reached = [t for t in THRESHOLDS if left <= t]
        if not reached:
            continue
        threshold = min(reached)  # a late first run alerts once, at the tightest threshold
        key = (asset.request_id, what, end)
        group = groups.get(key)
        if group is None:
            # The whole group, whichever batch its devices come in: the alert lists them all
            # and its dedup key makes a later batch (or run) queue nothing.
            group = groups[key] = _group_of(session, asset, what, end, deployed, spec)
            result.alerts += _alert(session, group, threshold, left, now)
            if left <= DRAFT_AT and _drafts_together(session, group):
                draft = _draft_group_refresh(session, group, now)
                if draft is not None:
                    result.drafts.append(draft)
        holder = group.holder(asset)
        if left <= DRAFT_AT and not group.together and holder is not None and holder.active:
            draft = _draft_refresh(session, asset, holder, end, what, now)
            if draft is not None:
                result.drafts.append(draft)
        if left <= RETURN_AT and what in ("lease", "daas"):
            actions.request_return(
                session,
                serial=asset.serial or "",
                reason=f"the {ending(what)} ends on {end}",
                now=now,
                # A group's alert already tells IT its devices are asked back.
                tell_it=len(group.devices) == 1,
            )
            result.returns.append(asset.serial or "")
    return result


def _watched(session: Session, asset: Asset, what: str, spec: PipelineSpec) -> bool:
    """Whether a device's end is watched: a lease or a DaaS term always (it goes back), a
    warranty only for a device (a monitor's or a headset's, economics.peripheral_categories,
    is no reason to alert anyone or to draft a refresh)."""
    if what != "warranty":
        return True
    item = by_id(session, Item, asset.item_id, read_only=True)
    return item is None or spec.economics.is_device(item.category)


def _group_of(
    session: Session,
    asset: Asset,
    what: str,
    end: date,
    deployed: dict[int, list[Asset]],
    spec: PipelineSpec,
) -> _Group:
    """The devices in use of the asset's request that end when and as it does, with holders."""
    if asset.request_id not in deployed:
        deployed[asset.request_id] = list(
            session.exec(
                select(Asset)
                .where(Asset.request_id == asset.request_id, Asset.status == AssetStatus.DEPLOYED)
                .order_by(col(Asset.id))
            ).all()
        )
    devices = [
        a
        for a in deployed[asset.request_id]
        if _end_of(a) == (end, what) and _watched(session, a, what, spec)
    ]
    ids = {a.assigned_to_id for a in devices if a.assigned_to_id is not None}
    people = session.exec(select(Person).where(col(Person.id).in_(ids))).all() if ids else []
    request = session.get(Request, asset.request_id)
    assert request is not None
    requester = actions.requester_of(session, request)
    holders = {p.id: p for p in people if p.id is not None}
    return _Group(request, what, end, devices, holders, requester if requester.active else None)


def _alert(session: Session, group: _Group, threshold: int, left: int, now: datetime) -> int:
    """One lifecycle alert to IT and one to purchasing listing the group; how many were queued."""
    devices = [
        {
            "serial": a.serial,
            "sku": a.sku,
            "holder": holder.email if (holder := group.holder(a)) else None,
        }
        for a in group.devices
    ]
    context = {
        "ref": group.request.ref,
        "ends": group.ends,
        "end": group.end,
        "days_left": left,
        "count": len(devices),
        "devices": devices,
        # Who a group's refresh goes to; none: the requester left, each holder gets one.
        "requester": group.requester.email if group.requester else None,
    }
    key = f"{group.request.ref}/{group.ends}/{group.end}/{threshold}"
    only = group.devices[0].id if len(group.devices) == 1 else None
    queued = outbox.queue_many(
        session,
        [
            Notice("lifecycle_alert", team(role), key, context, asset_id=only)
            for role in (Role.IT, Role.PURCHASING)
        ],
        request_id=group.request.id,
        at=now,
    )
    return sum(1 for q in queued if q is not None)


def _device_key(serial: str | None, end: date) -> str:
    """The idempotency key of a refresh drafted for one device's holder."""
    return f"lifecycle:{serial}:{end}"


def _group_key(group: _Group) -> str:
    """The idempotency key of the one refresh drafted for a group."""
    return f"lifecycle:{group.request.ref}:{group.ends}:{group.end}"


def _drafts_together(session: Session, group: _Group) -> bool:
    """Decide whether the group gets one refresh (group.together; else one per holder, as a
    device alone does) and say whether that one is still to draft. The first answer sticks: a
    group drafted per device before (by an earlier version, or while it was one device) is not
    drafted again as a whole, nor a whole group again per device (its requester left since)."""
    keys = [_device_key(a.serial, group.end) for a in group.devices]
    drafted = set(
        session.exec(
            select(Request.idempotency_key).where(
                col(Request.idempotency_key).in_([_group_key(group), *keys])
            )
        ).all()
    )
    if _group_key(group) in drafted:
        group.together = True
        return False
    group.together = not drafted and len(group.devices) > 1 and group.requester is not None
    return group.together


def _draft_group_refresh(session: Session, group: _Group, now: datetime) -> str | None:
    """One refresh for a group's devices, for the original requester to check and send: its
    SKUs with their counts, priced as one request (so an agreement's volume tier applies)."""
    items = {
        i.id: i
        for i in session.exec(
            select(Item).where(col(Item.id).in_({a.item_id for a in group.devices}))
        ).all()
    }
    covered = [a for a in group.devices if (item := items.get(a.item_id)) and item.active]
    if not covered:
        return None
    counts = Counter((items[a.item_id].sku, _sourced_as(session, a)) for a in covered)
    requester = group.requester
    centre = session.get(CostCentre, group.request.cost_centre_id)
    assert requester is not None and centre is not None
    # For the one person who holds them all (an onboarding's kit), else for the requester.
    holders = {a.assigned_to_id for a in covered}
    only = group.holder(covered[0]) if len(holders) == 1 else None
    create = RequestCreate.model_validate(
        {
            "kind": RequestKind.REFRESH.value,
            "requester": requester.email,
            "on_behalf_of": only.email if only is not None and only.active else None,
            "cost_centre": centre.code,
            "needed_by": group.end.isoformat(),
            "justification": _naming(group, covered),
            "lines": [_line(sku, n, sourced) for (sku, sourced), n in counts.items()],
        }
    )
    try:
        submitted = actions.draft_request(
            session,
            create=create,
            key=_group_key(group),
            actor=actions.SYSTEM,
            now=now,
            context={
                "devices": len(covered),
                "ref": group.request.ref,
                "ends": group.ends,
                "end": group.end,
            },
        )
    except InputError:
        return None  # e.g. the end date has passed: the alert still went out
    return submitted.ref if submitted.created else None


def _sourced_as(session: Session, asset: Asset) -> tuple[str, int | None]:
    """How a device's refresh is sourced: as the device was, bought, or leased / DaaS over the
    term of the offer it came by (offers are kept, so the same offer prices the renewal)."""
    if asset.ownership == Ownership.BOUGHT:
        return Ownership.BOUGHT.value, None
    line = session.get(RequestLine, asset.line_id)
    offer = session.get(Offer, line.offer_id) if line is not None and line.offer_id else None
    return asset.ownership, offer.term_months if offer is not None else None


def _line(sku: str, quantity: int, sourced: tuple[str, int | None]) -> dict[str, object]:
    """A refresh's line for `quantity` of `sku`, sourced as the devices it replaces."""
    ownership, term = sourced
    if ownership == Ownership.BOUGHT:
        return {"sku": sku, "quantity": quantity}
    return {"sku": sku, "quantity": quantity, "ownership": ownership, "term_months": term}


# A group refresh's justification names this many devices at most: it is read in every email
# and page of the request; the rest are a command away.
NAMED_DEVICES = 10


def _naming(group: _Group, devices: list[Asset]) -> str:
    """A group refresh's justification: what ends when, and the devices (the first
    NAMED_DEVICES, as many as fit, then how many more and where they are listed)."""
    head = (
        f"The {ending(group.ends)} of {len(devices)} devices of {group.request.ref} ends on "
        f"{group.end}: "
    )
    names = [f"{a.serial} ({a.sku})" for a in devices]
    text = head + ", ".join(names) + "."
    if len(names) <= NAMED_DEVICES and len(text) <= JUSTIFICATION_MAX:
        return text
    tail = f" and {{}} more (procure asset list --request {group.request.ref})."
    room = JUSTIFICATION_MAX - len(head) - len(tail.format(len(names)))
    shown: list[str] = []
    for name in names[:NAMED_DEVICES]:
        room -= len(name) + len(", ")
        if room < 0:
            break
        shown.append(name)
    return head + ", ".join(shown) + tail.format(len(names) - len(shown))


def _draft_refresh(
    session: Session, asset: Asset, holder: Person, end: date, what: str, now: datetime
) -> str | None:
    """A refresh request for the device's holder, ready for them to check and send."""
    original = session.get(Request, asset.request_id)
    item = session.get(Item, asset.item_id)
    if original is None or item is None or not item.active:
        return None
    centre = session.get(CostCentre, original.cost_centre_id)
    assert centre is not None
    create = RequestCreate.model_validate(
        {
            "kind": RequestKind.REFRESH.value,
            "requester": holder.email,
            "on_behalf_of": holder.email,
            "cost_centre": centre.code,
            "needed_by": end.isoformat(),
            "justification": f"The {ending(what)} of {asset.serial} ({asset.sku}) ends on {end}.",
            "lines": [_line(item.sku, 1, _sourced_as(session, asset))],
        }
    )
    try:
        submitted = actions.draft_request(
            session,
            create=create,
            key=_device_key(asset.serial, end),
            actor=actions.SYSTEM,
            now=now,
        )
    except InputError:
        return None  # e.g. the end date has passed: the alert still went out
    return submitted.ref if submitted.created else None


@dataclass
class SlipResult:
    checked: int = 0
    late_orders: list[str] = field(default_factory=list)
    late_deliveries: list[str] = field(default_factory=list)


def slipping_requests(session: Session) -> list[int]:
    """Requests still to be ordered or delivered: the ones whose dates can slip."""
    rows = session.exec(
        select(Request.id)
        .where(
            col(Request.status).in_(
                [
                    RequestStatus.SUBMITTED,
                    RequestStatus.IN_REVIEW,
                    RequestStatus.CHANGES_REQUESTED,
                    RequestStatus.APPROVED,
                    RequestStatus.ORDERED,
                    RequestStatus.DELIVERY_SCHEDULED,
                ]
            )
        )
        .order_by(col(Request.id))
    ).all()
    return [i for i in rows if i is not None]


def delivery_slips(
    session: Session, *, request_ids: Sequence[int], spec: PipelineSpec, now: datetime
) -> SlipResult:
    """Tell purchasing when a request passes its order-by date unordered, and purchasing, IT (and
    HR for a new hire) when its delivery falls after the needed-by date."""
    today = spec.calendar.today(now)
    result = SlipResult()
    for request_id in request_ids:
        request = session.get(Request, request_id)
        if request is None:
            continue
        result.checked += 1
        context = {
            "order_by": request.order_by,
            "needed_by": request.needed_by,
            "delivery_on": request.delivery_on,
        }
        unordered_late = (
            request.status not in SPENT_STATES
            and request.order_by is not None
            and request.order_by < today
        )
        # Same key as the notice at submission: a request late from the start is told once.
        if unordered_late and outbox.queue(
            session,
            Notice("order_by_missed", team(Role.PURCHASING), request.ref, context),
            request_id=request.id,
            at=now,
        ):
            result.late_orders.append(request.ref)
        late_delivery = request.status in (
            RequestStatus.ORDERED,
            RequestStatus.DELIVERY_SCHEDULED,
        ) and (
            (request.delivery_on is not None and request.delivery_on > request.needed_by)
            or (request.delivery_on is None and request.needed_by < today)
        )
        if late_delivery:
            roles = [Role.PURCHASING, Role.IT] + (
                [Role.HR] if request.kind == RequestKind.ONBOARDING else []
            )
            key = f"{request.ref}/{request.delivery_on or 'unscheduled'}"
            queued = [
                outbox.queue(
                    session,
                    Notice("delivery_slip", team(r), key, context),
                    request_id=request.id,
                    at=now,
                )
                for r in roles
            ]
            requester = session.get(Person, request.requester_id)
            if requester is not None:
                queued.append(
                    outbox.queue(
                        session,
                        Notice("delivery_slip", person(requester.email), key, context),
                        request_id=request.id,
                        at=now,
                    )
                )
            if any(q is not None for q in queued):
                result.late_deliveries.append(request.ref)
    return result
