"""What people and flows do to requests and assets.

Each action is one transaction's worth of work: the caller opens it (models.db.transaction)
and it either commits whole or not at all. Actions validate everything before they write,
change statuses only through `lifecycle.fire`, and are safe to retry: the same submission
or decision a second time changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, func
from sqlmodel import Session, col, select

from models import audit, outbox, pipeline
from models.assets import Asset, Assignment, ErasureRecord, Ownership, SerialIn
from models.audit import AuditEvent
from models.calendar import add_months
from models.catalog import (
    Bundle,
    BundleItem,
    CallOff,
    FrameworkAgreement,
    Item,
    Offer,
    Supplier,
)
from models.db import add_unless_taken, by_id, insert_all
from models.economics import (
    SPENT_STATES,
    TERMS,
    agreement_options,
    budget_status,
    called_off,
    freeze_ledger,
    items_by_id,
    lead_time,
    order_by_date,
    supplier_of,
    terms_from_agreements,
    terms_view,
)
from models.errors import (
    AlreadyDecided,
    InputError,
    NotFound,
    Problem,
    RuleViolation,
    TransitionNotAllowed,
    in_file_order,
)
from models.fields import amount, code, multi_line, single_line
from models.fields import email as check_email
from models.lifecycle import (
    ASSET,
    OPEN_REQUEST_STATES,
    REQUEST,
    AssetEvent,
    AssetStatus,
    Move,
    RequestEvent,
    RequestStatus,
    StageEvent,
    StageStatus,
    asset_done,
    fire,
    fire_many,
)
from models.org import PERSON_BY_EMAIL, CostCentre, Person, Role, roles_of
from models.outbox import Notice, person, team
from models.pipeline import PipelineSpec, StageSpec
from models.reference import shared
from models.requests import (
    COMMENT_NEEDED,
    SEAT,
    Decision,
    Draft,
    LineCreate,
    Outcome,
    Quote,
    Request,
    RequestCreate,
    RequestKind,
    RequestLine,
    RequestUpdate,
    Stage,
    format_ref,
    parse_ref,
)
from models.rules import (
    ANY_SLOT,
    Directory,
    Escalation,
    Seat,
    current,
    deciders,
    open_slots,
    recorded_escalations,
    seats,
    slot_delegates,
    slot_key,
    slots_of,
    terms_deciders,
    terms_delegates,
    terms_seats,
    terms_slot,
)
from models.sources import remap
from models.types import difference_text, label, moment_text, money, money_text, plural, utcnow

SYSTEM = "system"
MAX_HORIZON_DAYS = 5 * 366
DONE = frozenset({StageStatus.APPROVED, StageStatus.SKIPPED})


# ------------------------------------------------------------------ lookups


_CENTRE = select(CostCentre).where(CostCentre.code == bindparam("code"))
_ITEM = select(Item).where(Item.sku == bindparam("sku"))


class Lookup:
    """People, cost centres and items by their keys, cached for one action: shared, read-only
    rows (reference.shared), to name and price a request, not to change."""

    def __init__(self, session: Session):
        self.session = session
        self._people: dict[str, Person | None] = {}
        self._centres: dict[str, CostCentre | None] = {}
        self._items: dict[str, Item | None] = {}

    def _one(self, statement: Any, params: dict[str, Any]) -> Any:
        rows = shared(self.session, statement, params)
        return rows[0] if rows else None

    def person(self, email: str) -> Person | None:
        if email not in self._people:
            self._people[email] = self._one(PERSON_BY_EMAIL, {"email": email})
        return self._people[email]

    def centre(self, code_: str) -> CostCentre | None:
        if code_ not in self._centres:
            self._centres[code_] = self._one(_CENTRE, {"code": code_})
        return self._centres[code_]

    def item(self, sku: str) -> Item | None:
        if sku not in self._items:
            self._items[sku] = self._one(_ITEM, {"sku": sku})
        return self._items[sku]

    def bundle(self, code_: str) -> list[tuple[str, int]] | None:
        """A bundle's (sku, quantity) pairs, or None if there is no such bundle."""
        found = self.session.exec(select(Bundle).where(Bundle.code == code_)).first()
        if found is None:
            return None
        rows = self.session.exec(
            select(Item.sku, BundleItem.quantity)
            .join(Item, col(Item.id) == col(BundleItem.item_id))
            .where(BundleItem.bundle_id == found.id)
            .order_by(col(Item.sku))
        ).all()
        return [(sku, quantity) for sku, quantity in rows]


def find_person(
    session: Session, email: str, *, what: str = "person", read_only: bool = False
) -> Person:
    """The person with this email, or NotFound naming the argument. read_only: a shared row
    (reference.shared), for a caller that only reads it."""

    try:
        address = check_email(email)
    except ValueError as exc:
        raise InputError(Problem(str(exc), field=what)) from None
    if read_only:
        rows = shared(session, PERSON_BY_EMAIL, {"email": address})
        found = rows[0] if rows else None
    else:
        found = session.exec(PERSON_BY_EMAIL, params={"email": address}).first()
    if found is None:
        raise NotFound(Problem(f"no person with email {address}", field=what))
    return found


def find_actor(session: Session, email: str, *, what: str = "as") -> Person:
    """The person acting (--as, or `what` where their email came under another name): found as
    find_person() finds them, a shared, read-only row."""
    return find_person(session, email, what=what, read_only=True)


def lock_request(session: Session, ref: str | int) -> Request:
    """Load a request for change, locking its row (PostgreSQL) so decisions on it serialise."""
    request_id = parse_ref(ref)
    found = session.exec(_LOCK_REQUEST, params={"id": request_id}).first()
    if found is None:
        raise NotFound(Problem(f"no request {format_ref(request_id)}"))
    return found


def requester_of(session: Session, request: Request) -> Person:
    """The person who asked for the request (the foreign key guarantees the row): a shared,
    read-only row (to address them, not to change them)."""
    found = by_id(session, Person, request.requester_id, read_only=True)
    assert found is not None
    return found


def get_request(session: Session, ref: str | int) -> Request:
    request_id = parse_ref(ref)
    found = by_id(session, Request, request_id)
    if found is None:
        raise NotFound(Problem(f"no request {format_ref(request_id)}"))
    return found


def find_asset(session: Session, serial: str, *, lock: bool = True) -> Asset:
    try:
        serial = code(serial)
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="serial")) from None
    query = select(Asset).where(Asset.serial == serial)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    found = session.exec(query).first()
    if found is None:
        raise NotFound(Problem(f"no asset with serial {serial}"))
    return found


# The statements every action runs, built once (building and keying a statement costs more than
# running it on SQLite) and run with new parameters.
_LOCK_REQUEST = (
    select(Request)
    .where(Request.id == bindparam("id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_STAGES = select(Stage).where(Stage.request_id == bindparam("id")).order_by(col(Stage.position))
_DECISIONS = (
    select(Decision).where(Decision.request_id == bindparam("id")).order_by(col(Decision.id))
)
_LINES = (
    select(RequestLine)
    .where(RequestLine.request_id == bindparam("id"))
    .order_by(col(RequestLine.line_no))
)
_ASSETS = select(Asset).where(Asset.request_id == bindparam("id")).order_by(col(Asset.id))
_BY_KEY = select(Request).where(Request.idempotency_key == bindparam("key"))


def stages_of(session: Session, request: Request) -> list[Stage]:
    return list(session.exec(_STAGES, params={"id": request.id}).all())


def decisions_of(session: Session, request: Request) -> list[Decision]:
    return list(session.exec(_DECISIONS, params={"id": request.id}).all())


def lines_of(session: Session, request: Request) -> list[RequestLine]:
    return list(session.exec(_LINES, params={"id": request.id}).all())


def assets_of(session: Session, request: Request) -> list[Asset]:
    return list(session.exec(_ASSETS, params={"id": request.id}).all())


def spec_for(session: Session, request: Request) -> PipelineSpec:
    """The pipeline the request was submitted under."""
    row = (
        by_id(session, pipeline.PipelineVersion, request.pipeline_id, read_only=True)
        if request.pipeline_id
        else None
    )
    if row is None:
        raise RuleViolation(f"{request.ref} has no pipeline recorded")
    return pipeline.spec_of(row)


# ------------------------------------------------------------------ request content


@dataclass
class ResolvedLine:
    """One line priced and sourced: under an agreement's tier, individually, or from a lease or
    DaaS offer (priced at its monthly rate over its term: the contract's value per device)."""

    line: LineCreate
    item: Item
    unit_price: Decimal
    sourcing: str  # framework | individual | offer
    agreement: FrameworkAgreement | None
    framework_available: bool
    note: str
    offer: Offer | None = None

    @property
    def total(self) -> Decimal:
        return money(self.unit_price * self.line.quantity)


@dataclass
class Resolved:
    """A request's fields resolved against the organisation, the catalog and the agreements."""

    kind: str
    requester: Person
    on_behalf_of: Person
    centre: CostCentre
    needed_by: date
    justification: str
    currency: str
    lines: list[ResolvedLine]

    @property
    def total(self) -> Decimal:
        return money(sum((ln.total for ln in self.lines), Decimal(0)))


def resolve(
    lookup: Lookup,
    *,
    kind: str,
    requester: str,
    on_behalf_of: str | None,
    cost_centre: str,
    needed_by: date,
    justification: str,
    currency: str | None,
    lines: list[LineCreate],
    spec: PipelineSpec,
    today: date,
    bundle: str | None = None,
) -> Resolved:
    """Check every reference and date of a request and source every line; all problems at once."""
    problems: list[Problem] = []
    people: dict[str, Person] = {}
    for name, email in (("requester", requester), ("on_behalf_of", on_behalf_of or requester)):
        if name == "on_behalf_of" and on_behalf_of is None and "requester" not in people:
            continue  # for the requester themselves: their problem is named once, as requester
        found = lookup.person(email)
        if found is None:
            problems.append(Problem(f"unknown person {email}", field=name))
        elif not found.active:
            problems.append(Problem(f"{email} is no longer active", field=name))
        else:
            people[name] = found
    centre = lookup.centre(cost_centre)
    if centre is None:
        problems.append(Problem(f"unknown cost centre {cost_centre}", field="cost_centre"))
    if needed_by < today:
        problems.append(
            Problem(f"{needed_by} is in the past (today is {today})", field="needed_by")
        )
    elif needed_by > today + timedelta(days=MAX_HORIZON_DAYS):
        problems.append(
            Problem(f"{needed_by} is more than five years ahead: check the year", field="needed_by")
        )
    request_currency = currency or spec.currency
    kit: list[tuple[str, LineCreate]] = []
    if bundle is not None:
        contents = lookup.bundle(bundle)
        if contents is None:
            problems.append(Problem(f"unknown bundle {bundle}", field="bundle"))
        else:
            kit = [("bundle", LineCreate(sku=sku, quantity=qty)) for sku, qty in contents]
    entries = kit + [(f"lines[{index}]", line) for index, line in enumerate(lines)]
    resolved_lines = []
    for where, line in entries:
        try:
            resolved_lines.append(_source_line(lookup, line, where, request_currency, today))
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    assert centre is not None
    return Resolved(
        kind=kind,
        requester=people["requester"],
        on_behalf_of=people["on_behalf_of"],
        centre=centre,
        needed_by=needed_by,
        justification=justification,
        currency=request_currency,
        lines=resolved_lines,
    )


def _source_from_offer(
    lookup: Lookup, line: LineCreate, item: Item, where: str, framework_available: bool
) -> ResolvedLine:
    """A leased or DaaS line: the cheapest offer of that kind (over the line's term, if given)."""
    kind = "lease" if line.ownership == "leased" else "daas"
    if line.sourcing is not None or line.agreement is not None:
        raise InputError(
            Problem(
                f"a {label(line.ownership)} line comes from its {label(kind)} offer: leave sourcing and agreement out",
                field=f"{where}.sourcing" if line.sourcing is not None else f"{where}.agreement",
            )
        )
    if line.unit_price is not None:
        raise InputError(
            Problem(
                f"the {label(kind)} offer sets the price: leave unit_price out",
                field=f"{where}.unit_price",
            )
        )
    offers = [
        o
        for o in lookup.session.exec(
            select(Offer)
            .where(Offer.item_id == item.id, Offer.kind == kind)
            .order_by(col(Offer.id))
        ).all()
        if line.term_months is None or o.term_months == line.term_months
    ]
    if not offers:
        over = f" over {line.term_months} months" if line.term_months else ""
        raise InputError(
            Problem(f"no {label(kind)} offer for {line.sku}{over}", field=f"{where}.ownership")
        )
    offer = min(offers, key=lambda o: (o.monthly_rate * o.term_months, o.id or 0))
    provider = by_id(lookup.session, Supplier, offer.supplier_id)
    note = f"{provider.name if provider else 'provider'}: {offer.monthly_rate} a month for {offer.term_months} months"
    return ResolvedLine(
        line,
        item,
        money(offer.monthly_rate * offer.term_months),
        "offer",
        None,
        framework_available,
        note,
        offer,
    )


def _source_line(
    lookup: Lookup, line: LineCreate, where: str, currency: str, today: date
) -> ResolvedLine:
    """Price one line: the cheapest agreement that covers it (or the one named), else individually
    (at its own price or the list price), which needs a justification where an agreement exists."""
    item = lookup.item(line.sku)
    if item is None:
        raise InputError(Problem(f"unknown SKU {line.sku}", field=f"{where}.sku"))
    if not item.active:
        raise InputError(Problem(f"{line.sku} is no longer in the catalog", field=f"{where}.sku"))
    if item.currency != currency:
        raise InputError(
            Problem(
                f"{line.sku} is priced in {item.currency}, the request is in {currency}",
                field=f"{where}.sku",
            )
        )
    assert item.id is not None
    options = agreement_options(
        lookup.session, item_id=item.id, quantity=line.quantity, day=today, currency=currency
    )
    if line.ownership != "bought":
        return _source_from_offer(lookup, line, item, where, bool(options))
    chosen = None
    if line.agreement is not None:
        chosen = next((o for o in options if o.agreement.code == line.agreement), None)
        if chosen is None:
            raise InputError(
                Problem(
                    f"{line.agreement} cannot supply {line.quantity} x {line.sku} today: unknown, not "
                    "valid on this date, no price for this quantity, or not enough volume left",
                    field=f"{where}.agreement",
                )
            )
    elif line.sourcing == "framework":
        if not options:
            raise InputError(
                Problem(
                    f"no active framework agreement covers {line.quantity} x {line.sku}",
                    field=f"{where}.sourcing",
                )
            )
        chosen = options[0]
    elif line.sourcing is None and options:
        chosen = options[0]
    if chosen is not None:
        if line.unit_price is not None and line.unit_price != chosen.unit_price:
            raise InputError(
                Problem(
                    f"{chosen.agreement.code} sets {chosen.unit_price} for this quantity: leave unit_price out",
                    field=f"{where}.unit_price",
                )
            )
        return ResolvedLine(line, item, chosen.unit_price, "framework", chosen.agreement, True, "")
    unit = line.unit_price if line.unit_price is not None else item.list_price
    if options and not line.sourcing_justification:
        best = options[0]
        extra = money((unit - best.unit_price) * line.quantity)
        raise InputError(
            Problem(
                f"{best.agreement.code} supplies this at {money_text(best.unit_price, currency)} a unit (ordered individually: {difference_text(extra, currency)} in total): "
                "say why you order it individually",
                field=f"{where}.sourcing_justification",
            )
        )
    return ResolvedLine(
        line, item, unit, "individual", None, bool(options), line.sourcing_justification
    )


def condition_context(
    session: Session, request: Request, lines: list[RequestLine]
) -> dict[str, Any]:
    """The names a pipeline condition can use, for this request."""
    items = {i.id: i for i in items_by_id(session, [ln.item_id for ln in lines])}
    centre = by_id(session, CostCentre, request.cost_centre_id, read_only=True)
    beneficiary = by_id(session, Person, request.on_behalf_of_id, read_only=True)
    return {
        "total": request.total,
        "currency": request.currency,
        "quantity": sum(ln.quantity for ln in lines),
        "line_count": len(lines),
        "max_unit_price": max((ln.unit_price for ln in lines), default=Decimal("0.00")),
        "kind": request.kind,
        "categories": sorted({items[ln.item_id].category for ln in lines}),
        "skus": sorted({ln.sku for ln in lines}),
        "cost_centre": centre.code if centre else "",
        "department": beneficiary.department if beneficiary else "",
    }


def inputs_hash(stage: StageSpec, request: Request, lines: list[RequestLine]) -> str:
    """A hash of what the stage decides on: unchanged inputs keep its approvals on resubmission."""
    values: dict[str, Any] = {
        "kind": request.kind,
        "lines": [
            [ln.sku, ln.quantity, str(ln.unit_price), ln.ownership, ln.term_months] for ln in lines
        ],
        "total": str(request.total),
        "cost_centre": request.cost_centre_id,
        "needed_by": request.needed_by.isoformat(),
        "justification": request.justification,
        "on_behalf_of": request.on_behalf_of_id,
    }
    chosen = {name: values[name] for name in sorted(stage.inputs)}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()


def _write_lines(session: Session, request: Request, resolved: Resolved) -> list[RequestLine]:
    rows = []
    for number, rl in enumerate(resolved.lines, start=1):
        assert rl.item.id is not None and request.id is not None
        row = RequestLine(
            request_id=request.id,
            line_no=number,
            item_id=rl.item.id,
            sku=rl.item.sku,
            quantity=rl.line.quantity,
            unit_price=rl.unit_price,
            total=rl.total,
            ownership=rl.line.ownership,
            term_months=rl.offer.term_months if rl.offer else rl.line.term_months,
            offer_id=rl.offer.id if rl.offer else None,
            list_price=rl.item.list_price,
            sourcing=rl.sourcing,
            agreement_id=rl.agreement.id if rl.agreement else None,
            framework_available=rl.framework_available,
            sourcing_note=rl.note,
        )
        rows.append(row)
    insert_all(session, rows, key=["line_no"])
    return rows


def _plan(
    session: Session,
    request: Request,
    lines: list[RequestLine],
    spec: PipelineSpec,
    keep: dict[str, Any],
) -> None:
    """Set the order-by date and start the terms checklist with what the agreements settle
    (confirmations by purchasing in `keep` stay)."""
    request.order_by = order_by_date(
        request.needed_by, lead_time(session, lines), spec.economics.preparation_days
    )
    agreements = {
        a.id: a
        for a in session.exec(
            select(FrameworkAgreement).where(
                col(FrameworkAgreement.id).in_([ln.agreement_id for ln in lines if ln.agreement_id])
            )
        ).all()
        if a.id is not None
    }
    offers = {
        o.id: o
        for o in session.exec(
            select(Offer).where(col(Offer.id).in_([ln.offer_id for ln in lines if ln.offer_id]))
        ).all()
        if o.id is not None
    }
    settled = terms_from_agreements(lines, agreements, offers)
    request.terms = {**settled, **{k: v for k, v in keep.items() if v.get("by") != "agreement"}}
    session.add(request)


# ------------------------------------------------------------------ submission


@dataclass(frozen=True)
class Submitted:
    """The outcome of submitting one request."""

    ref: str
    created: bool
    status: str
    idempotency_key: str


def submit(
    session: Session, *, drafts: list[Draft], now: datetime | None = None
) -> list[Submitted]:
    """Submit requests from a file: all of them or none; the same key again returns the existing one."""
    now = now or utcnow()
    row, spec = pipeline.active(session)
    lookup = Lookup(session)
    today = spec.calendar.today(now)
    results: list[Submitted] = []
    problems: list[Problem] = []
    keys: dict[str, int] = {}
    for index, draft in enumerate(drafts):
        key = draft.idempotency_key
        if key in keys:
            problems.extend(
                remap(
                    [Problem(f"{key!r} is used twice in this file", field="idempotency_key")],
                    draft.doc,
                    draft.base,
                )
            )
            continue
        keys[key] = index
        try:
            results.append(_submit_one(session, draft, row, spec, lookup, today, now))
        except InputError as exc:
            problems.extend(remap(exc.problems, draft.doc, draft.base))
    if problems:
        raise InputError(problems)
    return results


def check_drafts(
    session: Session, *, drafts: list[Draft], now: datetime | None = None
) -> list[Problem]:
    """Every problem with the references and dates of a file's requests, found without writing
    anything: a bulk intake that then submits in batches fails before its first batch, not in
    the middle (and a file whose fields fail has its valid requests checked: FieldErrors)."""
    now = now or utcnow()
    _, spec = pipeline.active(session)
    lookup = Lookup(session)
    today = spec.calendar.today(now)
    problems: list[Problem] = []
    for draft in drafts:
        c = draft.create
        try:
            resolve(
                lookup,
                kind=c.kind.value,
                requester=c.requester,
                on_behalf_of=c.on_behalf_of,
                cost_centre=c.cost_centre,
                needed_by=c.needed_by,
                justification=c.justification,
                currency=c.currency,
                lines=c.lines,
                spec=spec,
                today=today,
                bundle=c.bundle,
            )
        except InputError as exc:
            problems.extend(remap(exc.problems, draft.doc, draft.base))
    return in_file_order(problems)


def _submit_one(
    session: Session,
    draft: Draft,
    pipeline_row: pipeline.PipelineVersion,
    spec: PipelineSpec,
    lookup: Lookup,
    today: date,
    now: datetime,
) -> Submitted:
    created = _create(
        session, draft.create, draft.idempotency_key, pipeline_row, spec, lookup, today, now
    )
    if isinstance(created, Submitted):
        return created
    request, lines = created
    requester = requester_of(session, request)
    _submit_created(session, request, lines, spec, today, now, requester.email)
    return Submitted(request.ref, True, request.status, draft.idempotency_key)


def _create(
    session: Session,
    c: RequestCreate,
    key: str,
    pipeline_row: pipeline.PipelineVersion,
    spec: PipelineSpec,
    lookup: Lookup,
    today: date,
    now: datetime,
) -> tuple[Request, list[RequestLine]] | Submitted:
    """Write a request and its lines as a draft; a key seen before answers with its request."""
    content = c.content_hash()
    existing = session.exec(_BY_KEY, params={"key": key}).first()
    if existing is not None:
        return _seen_before(existing, key, content)
    resolved = resolve(
        lookup,
        kind=c.kind.value,
        requester=c.requester,
        on_behalf_of=c.on_behalf_of,
        cost_centre=c.cost_centre,
        needed_by=c.needed_by,
        justification=c.justification,
        currency=c.currency,
        lines=c.lines,
        spec=spec,
        today=today,
        bundle=c.bundle,
    )
    assert resolved.centre.id is not None and resolved.requester.id is not None
    assert resolved.on_behalf_of.id is not None
    request = Request(
        kind=resolved.kind,
        requester_id=resolved.requester.id,
        on_behalf_of_id=resolved.on_behalf_of.id,
        cost_centre_id=resolved.centre.id,
        needed_by=resolved.needed_by,
        justification=resolved.justification,
        currency=resolved.currency,
        total=resolved.total,
        idempotency_key=key,
        content_hash=content,
        pipeline_id=pipeline_row.id,
        created_at=now,
    )
    if not add_unless_taken(session, request, ["idempotency_key"]):
        # The same key committed by a concurrent submission a moment ago: answer with that one.
        return _seen_before(session.exec(_BY_KEY, params={"key": key}).one(), key, content)
    lines = _write_lines(session, request, resolved)
    _plan(session, request, lines, spec, keep={})
    return request, lines


def _seen_before(existing: Request, key: str, content: str) -> Submitted:
    """A submission whose idempotency key names a request already: the same content answers
    with that request, different content is refused."""
    if existing.content_hash != content:
        raise InputError(
            Problem(
                f"{key!r} was already used for {existing.ref} with different content",
                field="idempotency_key",
            )
        )
    return Submitted(existing.ref, False, existing.status, key)


def _submit_created(
    session: Session,
    request: Request,
    lines: list[RequestLine],
    spec: PipelineSpec,
    today: date,
    now: datetime,
    actor: str,
) -> None:
    """Submit a request in draft: flag a missed order-by date, plan its stages, start the review."""
    ref = request.ref
    assert request.order_by is not None
    late = request.order_by < today
    requester = requester_of(session, request)
    notices = [Notice("request_submitted", person(requester.email), ref)]
    if late:
        # Already past its order-by date: purchasing hears it now, not when the devices are late.
        notices.append(
            Notice(
                "order_by_missed",
                team(Role.PURCHASING),
                ref,
                {"order_by": request.order_by, "needed_by": request.needed_by},
            )
        )
    fire(
        session,
        request,
        RequestEvent.SUBMIT,
        actor=actor,
        at=now,
        changes={"submitted_at": now},
        details={
            "total": request.total,
            "currency": request.currency,
            "lines": len(lines),
            "pipeline": f"{spec.name}@{spec.version}",
            "idempotency_key": request.idempotency_key,
            "order_by": request.order_by,
            "late": late,
        },
        notices=notices,
    )
    stages = _plan_stages(session, request, lines, spec, now)
    # A request just planned: its stages are these and nobody has decided yet.
    _start_review(session, request, spec, now, actor=SYSTEM, known=(stages, [], lines))


def draft_request(
    session: Session,
    *,
    create: RequestCreate,
    key: str,
    actor: str,
    now: datetime | None = None,
    context: Mapping[str, Any] | None = None,
) -> Submitted:
    """Prepare a request for its requester to check and send (refreshes the lifecycle watch finds);
    `context` adds to what the draft_ready notice tells them (the devices a refresh replaces)."""
    now = now or utcnow()
    row, spec = pipeline.active(session)
    created = _create(
        session, create, key, row, spec, Lookup(session), spec.calendar.today(now), now
    )
    if isinstance(created, Submitted):
        return created
    request, _ = created
    audit.append(
        session,
        actor=actor,
        entity="request",
        entity_id=request.ref,
        request_id=request.id,
        action="draft",
        details={
            "kind": request.kind,
            "total": request.total,
            "needed_by": request.needed_by,
            "key": key,
        },
        at=now,
    )
    outbox.queue(
        session,
        Notice(
            "draft_ready",
            person(create.requester),
            request.ref,
            {"kind": request.kind, "needed_by": request.needed_by, **(context or {})},
        ),
        request_id=request.id,
        at=now,
    )
    return Submitted(request.ref, True, request.status, key)


def send_draft(
    session: Session, *, ref: str | int, actor_email: str, now: datetime | None = None
) -> Request:
    """The requester sends a prepared draft into the pipeline."""
    now = now or utcnow()
    request = lock_request(session, ref)
    actor = find_actor(session, actor_email)
    if actor.id != request.requester_id:
        raise RuleViolation(f"only the requester of {request.ref} can send it")
    if request.status != RequestStatus.DRAFT:
        raise TransitionNotAllowed(
            f"{request.ref} is {request.status}, not a draft: it was sent already"
            if request.status != RequestStatus.CANCELLED
            else f"{request.ref} is cancelled: submit a new request instead"
        )
    REQUEST.target(request.status, RequestEvent.SUBMIT, what=f"request {request.ref}")
    spec = spec_for(session, request)
    today = spec.calendar.today(now)
    if request.needed_by < today:
        raise InputError(
            Problem(
                f"{request.ref} was needed by {request.needed_by}, which has passed: cancel it and submit anew",
                field="needed_by",
            )
        )
    lines = lines_of(session, request)
    _plan(session, request, lines, spec, keep=request.terms)
    _submit_created(session, request, lines, spec, today, now, actor.email)
    return request


def _plan_stages(
    session: Session, request: Request, lines: list[RequestLine], spec: PipelineSpec, now: datetime
) -> list[Stage]:
    """Write the request's stages, in the pipeline's order, and skip those whose conditions do
    not hold; returns them."""
    assert request.id is not None
    context = condition_context(session, request, lines)
    created = []
    for position, stage_spec in enumerate(spec.stages):
        stage = Stage(
            request_id=request.id,
            key=stage_spec.id,
            name=stage_spec.name,
            position=position,
            roles=list(stage_spec.roles),
            mode=stage_spec.mode,
            after=list(spec.dependencies(stage_spec)),
            sla_hours=stage_spec.sla_hours,
            escalate_to=stage_spec.escalate_to,
            inputs_hash=inputs_hash(stage_spec, request, lines),
        )
        created.append((stage, stage_spec))
    insert_all(session, [stage for stage, _ in created], key=["key"])
    for stage, stage_spec in created:
        if not _applies(stage_spec, context):
            _skip(session, stage, stage_spec, now)
    return [stage for stage, _ in created]


def _applies(stage_spec: StageSpec, context: dict[str, Any]) -> bool:
    try:
        return stage_spec.applies(context)
    except ValueError as exc:
        raise RuleViolation(f"pipeline stage {stage_spec.id}: condition {exc}") from None


def _skip(session: Session, stage: Stage, stage_spec: StageSpec, now: datetime) -> None:
    """Skip a stage whose condition does not hold, saying which."""
    fire(
        session,
        stage,
        StageEvent.SKIP,
        actor=SYSTEM,
        at=now,
        details={"condition": _condition_text(stage_spec)},
    )


def _condition_text(stage_spec: StageSpec) -> str:
    parts = []
    if stage_spec.when:
        parts.append(f"when {stage_spec.when}")
    if stage_spec.unless:
        parts.append(f"unless {stage_spec.unless}")
    return " and ".join(parts) + " does not hold"


def _start_review(
    session: Session,
    request: Request,
    spec: PipelineSpec,
    now: datetime,
    actor: str,
    known: tuple[list[Stage], list[Decision], list[RequestLine]] | None = None,
) -> None:
    """Open the first stages (or approve a request none of whose stages applies). `known`: the
    request's stages, decisions and lines when the caller has them all (read otherwise)."""
    stages, decisions, lines = known or (stages_of(session, request), None, None)
    if all(s.status in DONE for s in stages):
        _approve_request(session, request, now)
        return
    fire(session, request, RequestEvent.START_REVIEW, actor=actor, at=now)
    if decisions is None:
        decisions = decisions_of(session, request)
    _advance(session, request, spec, stages, decisions, now, lines=lines)


def _advance(
    session: Session,
    request: Request,
    spec: PipelineSpec,
    stages: list[Stage],
    decisions: list[Decision],
    now: datetime,
    lines: list[RequestLine] | None = None,
) -> None:
    """Open every stage whose predecessors are done; approve the request when all are done.
    `lines`: the request's lines, if the caller has them (read when a stage informs a team)."""
    by_key = {s.key: s for s in stages}
    stage_of = {s.id: s for s in stages if s.id is not None}
    specs = {s.id: s for s in spec.stages}
    directory = Directory(session, request, spec.calendar.today(now))
    for stage in stages:
        # Every stage before it (transitively) must be done: after a resubmission a reset
        # early stage holds back the later ones, even those whose own approvals were kept.
        if stage.status != StageStatus.WAITING or not all(
            by_key[k].status in DONE for k in _predecessors(stage.key, by_key)
        ):
            continue
        due = spec.calendar.add_business_hours(now, stage.sla_hours) if stage.sla_hours else None
        notices, approvers, escalations = approval_notices(
            directory, request, stage, decisions, stage_of, due
        )
        stage_spec = specs.get(stage.key)
        if stage_spec is not None and stage_spec.inform:
            if lines is None:
                lines = lines_of(session, request)
            context = condition_context(session, request, lines)
            for inform in stage_spec.inform:
                if inform.when is None or pipeline.evaluate(inform.when, context):
                    notices.append(
                        Notice(
                            "informed",
                            team(inform.role),
                            f"{request.ref}/{stage.key}/r{stage.round}",
                            {"stage": stage.key},
                            stage_id=stage.id,
                        )
                    )
        fire(
            session,
            stage,
            StageEvent.OPEN,
            actor=SYSTEM,
            at=now,
            changes={"opened_at": now, "due_at": due, "closed_at": None},
            details={"due_at": due, "approvers": approvers},
            notices=notices,
        )
        _record_escalations(session, request, stage, escalations, due_at=due, at=now)
    if all(s.status in DONE for s in stages):
        _approve_request(session, request, now)
    else:
        _tell_terms_open(session, request, directory, stages, decisions, now)


def _tell_terms_open(
    session: Session,
    request: Request,
    directory: Directory,
    stages: list[Stage],
    decisions: list[Decision],
    now: datetime,
) -> None:
    """Once the contract terms still open hold up the request's final approval (no stage waits
    for another any more: the last ones are open; or purchasing's part of the review is
    decided without them), tell whoever may confirm them (rules.terms_deciders, and their
    delegates): terms_open, once a round for the same open terms."""
    missing = terms_view(request.terms)["missing"]
    if not missing or request.status != RequestStatus.IN_REVIEW:
        return
    terms_stage, slot = terms_slot(stages)
    part_decided = terms_stage is not None and (
        terms_stage.status in DONE
        or any(
            d.stage_id == terms_stage.id and d.round == terms_stage.round and d.slot == slot
            for d in decisions
        )
    )
    if not part_decided and any(s.status == StageStatus.WAITING for s in stages):
        return
    people, escalation = terms_deciders(directory, request, stages, decisions)
    context: dict[str, Any] = {
        "terms": missing,
        "round": request.round,
        "role": escalation.to if escalation else Role.PURCHASING.value,
        "escalation": escalation.context if escalation else None,
        "on_behalf_of": None,
    }
    key = f"{request.ref}/r{request.round}/{'+'.join(missing)}"
    notices: list[Notice] = []
    # Their delegates whom the rules do not exclude from purchasing's part (rules.exclusion).
    delegates = terms_delegates(directory, request, stages, decisions, people)
    for p in people:
        notices.append(Notice("terms_open", person(p.email), key, context))
        notices.extend(
            Notice("terms_open", person(d.email), key, {**context, "on_behalf_of": p.email})
            for d in delegates.get(p.id or 0, [])
        )
    outbox.defer(session, notices, request_id=request.id, at=now)


def _predecessors(key: str, by_key: dict[str, Stage]) -> set[str]:
    """Every stage that must be done before this one: its `after` stages and theirs."""
    seen: set[str] = set()
    todo = list(by_key[key].after)
    while todo:
        current_key = todo.pop()
        if current_key not in seen:
            seen.add(current_key)
            todo.extend(by_key[current_key].after)
    return seen


TEAMS = frozenset(r.value for r in Role)  # the roles that are also teams (not budget_owner)


def approval_notices(
    directory: Directory,
    request: Request,
    stage: Stage,
    decisions: list[Decision],
    stage_of: dict[Any, Stage],
    due: datetime | None,
    event: str = "approval_needed",
    key_suffix: str = "",
    slots: set[str] | None = None,
) -> tuple[list[Notice], list[str], list[tuple[Escalation, list[str]]]]:
    """Who must decide an open stage, as notices of `event` (approval needed, a reminder, ...);
    the approvers; and the slots nobody may decide, escalated, with who is asked in their place.
    `slots`: only these of its open slots (all by default).

    A slot whose role nobody may decide (the only holder asked for the devices, or decided
    another stage, or nobody holds the role) goes to the stage's escalation role at once: its
    team is told (no_approver) and its members are asked like approvers, with their links. If
    nobody of the escalation role may decide it either, the stage's teams and the escalation
    role's are told (no_approver) that nobody may decide it, why, and what to do."""
    key = f"{request.ref}/{stage.key}/r{stage.round}{key_suffix}"
    context = {"stage": stage.key, "stage_name": stage.name, "due_at": due}
    notices: list[Notice] = []
    approvers: list[str] = []
    escalations: list[tuple[Escalation, list[str]]] = []
    for slot, roles in open_slots(stage, decisions):
        if slots is not None and slot not in slots:
            continue
        people, escalation = deciders(directory, request, stage, slot, roles, decisions, stage_of)
        asked: dict[str, Any] = {**context, "roles": list(roles)}
        if escalation is not None:
            emails = [p.email for p in people]
            escalations.append((escalation, emails))
            asked["escalation"] = escalation.context
            notices.extend(
                Notice(
                    "no_approver",
                    audience,
                    no_approver_key(key, escalation),
                    {**asked, "approvers": emails},
                    stage_id=stage.id,
                )
                for audience in told_of(escalation)
            )
        delegates = slot_delegates(directory, request, stage, slot, people, decisions, stage_of)
        for p in people:
            approvers.append(p.email)
            notices.append(Notice(event, person(p.email), key, asked, stage_id=stage.id))
            for d in delegates.get(p.id or 0, []):
                notices.append(
                    Notice(
                        event,
                        person(d.email),
                        key,
                        {**asked, "on_behalf_of": p.email},
                        stage_id=stage.id,
                    )
                )
        if event == "approval_needed":
            for role in roles:
                if role in TEAMS:
                    notices.append(
                        Notice("review_needed", team(role), key, context, stage_id=stage.id)
                    )
    return notices, sorted(set(approvers)), escalations


def told_of(escalation: Escalation) -> list[str]:
    """Who hears that a slot was escalated: the escalation role's team; if nobody of it may
    decide the slot either, the teams of the slot's roles too (someone there can fix the roles)."""
    if not escalation.nobody:
        return [team(escalation.to)]
    return [team(r) for r in dict.fromkeys((escalation.to, *escalation.roles)) if r in TEAMS]


def no_approver_key(key: str, escalation: Escalation) -> str:
    """The key of a slot's no_approver notices: one for the escalation, another once nobody
    may decide it (told again, to more teams, when its escalation role can no longer decide)."""
    return f"{key}/{'+'.join(escalation.roles)}{'/nobody' if escalation.nobody else ''}"


def _record_escalations(
    session: Session,
    request: Request,
    stage: Stage,
    escalations: list[tuple[Escalation, list[str]]],
    *,
    due_at: datetime | None,
    at: datetime,
) -> None:
    """The audit rows of a stage's slots that nobody may decide, each with who is asked."""
    for escalation, asked in escalations:
        record_escalation(
            session,
            request,
            stage,
            to=escalation.to,
            approvers=asked,
            due_at=due_at,
            reason=escalation.text,
            at=at,
            escalation=escalation,
        )


def record_escalation(
    session: Session,
    request: Request,
    stage: Stage,
    *,
    to: str,
    approvers: list[str],
    due_at: datetime | None,
    reason: str,
    at: datetime,
    escalation: Escalation | None = None,
) -> None:
    """The audit row of a stage escalated to its escalation role (its deadline passed, or
    nobody else may decide a slot of it: `escalation`), with whom it went to and why. A slot's
    row is what lets the escalation role decide it for the rest of the round (rules.Directory)."""
    details: dict[str, Any] = {
        "due_at": due_at,
        "approvers": approvers,
        "escalated_to": to,
        "reason": reason,
    }
    if escalation is not None:
        details.update(slot=escalation.slot, round=stage.round, why=escalation.reason)
    audit.append(
        session,
        actor=SYSTEM,
        entity="stage",
        entity_id=f"{request.ref}/{stage.key}",
        request_id=request.id,
        action="escalated",
        details=details,
        at=at,
    )


# The notices that ask someone to decide a stage (or review it, or, to an escalation role, the
# part nobody else may decide): once the stage is decided, or the decisions they asked for are
# in, sending them would ask for what is done.
ASKING = frozenset({"approval_needed", "reminder", "overdue", "review_needed", "no_approver"})


# The notices a later change makes stale: a newer notice of one of these events, to the same
# audience about the same request and device, supersedes a notice not yet sent (the delivery
# date moved again; more units of a request without a delivery date arrived, or a date was
# agreed for the rest; a device asked back, then kept, or the other way round).
SUPERSEDED_BY: Mapping[str, frozenset[str]] = {
    "delivery_scheduled": frozenset({"delivery_scheduled"}),
    "delivered": frozenset({"delivered", "delivery_scheduled"}),
    "return_requested": frozenset({"return_requested", "return_cancelled"}),
    "return_cancelled": frozenset({"return_requested", "return_cancelled"}),
}
# A notice that takes back an earlier one (to the same audience, about the same device): not
# sent when the last of the thread that reached them is not what it takes back (the request
# never went, or they were told it was taken back already).
TAKES_BACK: Mapping[str, str] = {"return_cancelled": "return_requested"}


def stale_notices(session: Session, notifications: Sequence[outbox.Notification]) -> dict[int, str]:
    """The notices (by id) that no longer apply, with why: one asking for a stage's decision
    when the stage is no longer open, or every decision it asked for (its roles) has been made
    since; one asking to confirm contract terms confirmed since (terms_open); one superseded by a newer notice (SUPERSEDED_BY); one taking back a notice that was
    never sent (TAKES_BACK). Each stage and its request's decisions are read once, however many
    notices ask, and the other notices of the rows' threads in one query."""
    why = _superseded(session, notifications)
    why.update(_terms_settled(session, notifications))
    stages: dict[int, tuple[Stage | None, list[Decision]]] = {}
    for n in notifications:
        if n.event not in ASKING or n.stage_id is None or n.id is None:
            continue
        if n.stage_id not in stages:
            stage = by_id(session, Stage, n.stage_id)
            decisions = (
                list(session.exec(_DECISIONS, params={"id": stage.request_id}).all())
                if stage is not None and stage.status == StageStatus.OPEN
                else []
            )
            stages[n.stage_id] = (stage, decisions)
        stage, decisions = stages[n.stage_id]
        if stage is None:
            why[n.id] = "its stage is gone"
            continue
        if stage.status != StageStatus.OPEN:
            why[n.id] = f"stage {stage.key} is {stage.status} already"
            continue
        asked = set(n.context.get("roles") or [])
        kind, _, role = n.audience.partition(":")
        if not asked and kind == "team":
            asked = {role}
        still_open = {r for _, roles in open_slots(stage, decisions) for r in roles}
        if asked and not asked & still_open:
            why[n.id] = f"stage {stage.key} has its {' and '.join(sorted(asked))} decision already"
    return why


def _terms_settled(
    session: Session, notifications: Sequence[outbox.Notification]
) -> dict[int, str]:
    """stale_notices' terms_open notices that no longer apply: the terms they name were
    confirmed since, or the request is no longer in review in the round they were sent for."""
    why: dict[int, str] = {}
    requests: dict[int, Request | None] = {}
    for n in notifications:
        if n.event != "terms_open" or n.id is None or n.request_id is None:
            continue
        if n.request_id not in requests:
            requests[n.request_id] = by_id(session, Request, n.request_id)
        request = requests[n.request_id]
        if request is None:
            why[n.id] = "its request is gone"
        elif request.status != RequestStatus.IN_REVIEW:
            why[n.id] = f"{request.ref} is {request.status}"
        elif request.round != n.context.get("round", request.round):
            why[n.id] = f"{request.ref} is in review round {request.round} now"
        elif not set(n.context.get("terms") or []) & set(terms_view(request.terms)["missing"]):
            why[n.id] = f"the contract terms of {request.ref} were confirmed since"
    return why


def _superseded(session: Session, notifications: Sequence[outbox.Notification]) -> dict[int, str]:
    """stale_notices' superseded notices, and those taking back what the reader was not told."""
    rows = [n for n in notifications if n.event in SUPERSEDED_BY]
    events = set().union(*(SUPERSEDED_BY[n.event] for n in rows))
    threads = outbox.siblings(session, rows, events)
    why: dict[int, str] = {}
    for n in rows:
        assert n.id is not None
        others = threads.get(n.id, [])
        newer = [s for s in others if s.id > n.id and s.event in SUPERSEDED_BY[n.event]]
        if newer:
            latest = newer[-1]
            why[n.id] = f"superseded by notification {latest.id} ({latest.event})"
            continue
        taken_back = TAKES_BACK.get(n.event)
        earlier = [s for s in others if s.id < n.id]
        if not any(s.event == taken_back for s in earlier):
            continue  # nothing to take back was ever queued for them: it is news
        told = [s for s in earlier if s.delivered]
        if not told:
            why[n.id] = f"the {taken_back} it takes back never reached them"
        elif told[-1].event != taken_back:
            last = told[-1]
            why[n.id] = f"the last they were told is notification {last.id} ({last.event})"
    return why


def _approve_request(session: Session, request: Request, now: datetime) -> None:
    requester = requester_of(session, request)
    # Approved again after a re-sourcing sent it back to review (reopen): a new round, told anew.
    key = f"{request.ref}/r{request.round}"
    notices = [
        Notice("approved", person(requester.email), key),
        Notice("approved", team(Role.PURCHASING), key),
    ]
    if request.kind == RequestKind.ONBOARDING:
        notices.append(Notice("approved", team(Role.HR), key))
    fire(
        session,
        request,
        RequestEvent.APPROVE,
        actor=SYSTEM,
        at=now,
        changes={"decided_at": now},
        notices=notices,
    )


# ------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class DecisionResult:
    """What a decision did."""

    ref: str
    stage: str
    outcome: str
    role: str
    actor: str
    on_behalf_of: str | None
    noop: bool
    request_status: str
    stage_status: str
    message: str = ""


def decide(
    session: Session,
    *,
    ref: str | int,
    actor_email: str,
    outcome: Outcome | str,
    comment: str = "",
    stage_key: str | None = None,
    now: datetime | None = None,
    confirm_terms: bool = False,
    actor_field: str = "as",
) -> DecisionResult:
    """Record one approver's decision and move the request on; the same decision again is a no-op.

    With confirm_terms, a purchasing approver also confirms the contract terms still open on
    the joint-review checklist. The final approval needs that checklist complete, and the
    budget's remainder (stop policy) or a warning to finance (warn policy). `actor_field`: what
    an unknown actor's email is called in the error (--as on the command line, `approver` in
    the Prefect form).
    """
    now = now or utcnow()
    try:
        outcome = Outcome(outcome)
    except ValueError:
        raise InputError(
            Problem(f"unknown decision {outcome!r} (approve, reject or send_back)")
        ) from None
    try:
        comment = multi_line(comment or "")
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="comment")) from None
    if len(comment) > 4000:
        raise InputError(Problem("is longer than 4000 characters", field="comment"))
    needed = COMMENT_NEEDED.get(outcome.value)
    if needed and not comment.strip():
        raise InputError(Problem(needed, field="comment"))
    request = lock_request(session, ref)
    actor = find_actor(session, actor_email, what=actor_field)
    stages = stages_of(session, request)
    if stage_key is not None and stage_key not in {s.key for s in stages}:
        raise NotFound(
            Problem(
                f"{request.ref} has no stage {stage_key!r} (stages: {', '.join(s.key for s in stages)})"
            )
        )
    decisions = decisions_of(session, request)
    stage_of = {s.id: s for s in stages}

    mine = [
        d
        for d in decisions
        if d.actor_id == actor.id
        and d.round == stage_of[d.stage_id].round
        and (stage_key is None or stage_of[d.stage_id].key == stage_key)
    ]
    if mine:
        previous = mine[-1]
        stage = stage_of[previous.stage_id]
        if previous.outcome == outcome:
            principal = (
                by_id(session, Person, previous.on_behalf_of_id)
                if previous.on_behalf_of_id
                else None
            )
            return DecisionResult(
                request.ref,
                stage.key,
                outcome.value,
                previous.role,
                actor.email,
                principal.email if principal else None,
                True,
                request.status,
                stage.status,
                "already recorded: nothing changed",
            )
        raise AlreadyDecided(
            f"{request.ref} {stage.key}: you already decided {label(previous.outcome)} "
            f"on {local_time(session, request, previous.decided_at)}; "
            "a decision cannot be changed"
        )
    if not actor.active:
        raise RuleViolation(f"{actor.email} is not active and cannot decide")
    if request.status != RequestStatus.IN_REVIEW:
        if request.status in (RequestStatus.DRAFT, RequestStatus.SUBMITTED):
            raise RuleViolation(f"{request.ref} is {request.status}: its review has not started")
        raise AlreadyDecided(
            f"{request.ref} is already {request.status}: there is nothing left to decide"
        )

    spec = spec_for(session, request)
    directory = Directory(session, request, spec.calendar.today(now))
    found, reasons = seats(directory, actor, request, stages, decisions, stage_key)
    if not found:
        raise _why_not(request, stages, decisions, actor, directory, stage_key, reasons)
    seat = found[0]
    stage = seat.stage
    assert stage.id is not None and request.id is not None
    assert actor.id is not None and seat.principal.id is not None
    decision = _seat_decision(request, seat, outcome, comment, now)
    if confirm_terms:
        # Judged as if this decision were made: the terms are part of purchasing's decision, so
        # whoever decides another part or stage now leaves them to someone else.
        _confirm_terms(
            session, request, actor, None, comment, now, directory, stages, [*decisions, decision]
        )
    budget_warning = None
    completes = outcome == Outcome.APPROVE and not [
        slot for slot, _ in open_slots(stage, decisions) if slot != seat.slot
    ]
    if completes and all(s.status in DONE for s in stages if s.id != stage.id):
        budget_warning = _check_final_approval(
            session, request, spec, now, directory, stages, decisions
        )
    if not add_unless_taken(session, decision, SEAT):
        raise AlreadyDecided(f"{request.ref} {stage.key}: already decided by someone else")
    decisions.append(decision)
    on_behalf = seat.principal.email if seat.delegated else None
    requester = requester_of(session, request)
    audit.append(
        session,
        actor=actor.email,
        on_behalf_of=on_behalf,
        entity="stage",
        entity_id=f"{request.ref}/{stage.key}",
        request_id=request.id,
        action=f"decision.{outcome.value}",
        details={
            "role": seat.role,
            "slot": seat.slot,
            "round": stage.round,
            "comment": comment,
            # Decided by the stage's escalation role: say why nobody else could.
            **({"escalated": seat.escalation.text} if seat.escalation else {}),
        },
        at=now,
    )
    if budget_warning is not None:
        audit.append(
            session,
            actor=SYSTEM,
            entity="request",
            entity_id=request.ref,
            request_id=request.id,
            action="budget_exceeded",
            details=budget_warning,
            at=now,
        )
        outbox.defer(
            session,
            [Notice("budget_exceeded", team(Role.FINANCE), request.ref, budget_warning)],
            request_id=request.id,
            at=now,
        )
    decision_context = {
        "stage": stage.key,
        "outcome": outcome.value,
        "by": actor.email,
        "on_behalf_of": on_behalf,
        "role": seat.role,
        "comment": comment,
    }
    if outcome == Outcome.APPROVE:
        # A rejection or a send-back tells the requester in its own message (rejected,
        # changes_requested), with the comment: one email for one decision.
        outbox.defer(
            session,
            [
                Notice(
                    "decision_made",
                    person(requester.email),
                    f"{request.ref}/{stage.key}/r{stage.round}/{seat.slot}",
                    decision_context,
                    stage_id=stage.id,
                )
            ],
            request_id=request.id,
            at=now,
        )
        if not open_slots(stage, decisions):
            fire(
                session,
                stage,
                StageEvent.APPROVE,
                changes={"closed_at": now},
                actor=actor.email,
                on_behalf_of=on_behalf,
                at=now,
            )
            _advance(session, request, spec, stages, decisions, now)
        else:
            was = _open_escalations(directory, request, [stage], decisions[:-1], stage_of)
            _escalate_left(session, request, directory, [stage], decisions, stage_of, was, now)
            _tell_terms_open(session, request, directory, stages, decisions, now)
    elif outcome == Outcome.REJECT:
        fire(
            session,
            stage,
            StageEvent.REJECT,
            changes={"closed_at": now},
            details={"comment": comment},
            actor=actor.email,
            on_behalf_of=on_behalf,
            at=now,
        )
        for other in stages:
            if other.status in (StageStatus.WAITING, StageStatus.OPEN):
                fire(
                    session,
                    other,
                    StageEvent.CANCEL,
                    actor=SYSTEM,
                    at=now,
                    changes={"closed_at": now},
                )
        fire(
            session,
            request,
            RequestEvent.REJECT,
            changes={"decided_at": now},
            details={"stage": stage.key, "comment": comment},
            notices=[Notice("rejected", person(requester.email), request.ref, decision_context)],
            actor=actor.email,
            on_behalf_of=on_behalf,
            at=now,
        )
    else:
        fire(
            session,
            stage,
            StageEvent.SEND_BACK,
            changes={"closed_at": now},
            details={"comment": comment},
            actor=actor.email,
            on_behalf_of=on_behalf,
            at=now,
        )
        for other in stages:
            if other.status == StageStatus.OPEN:
                fire(session, other, StageEvent.SUSPEND, actor=SYSTEM, at=now)
        fire(
            session,
            request,
            RequestEvent.SEND_BACK,
            details={"stage": stage.key, "comment": comment},
            notices=[
                Notice(
                    "changes_requested",
                    person(requester.email),
                    f"{request.ref}/r{request.round}",
                    decision_context,
                )
            ],
            actor=actor.email,
            on_behalf_of=on_behalf,
            at=now,
        )
    return DecisionResult(
        request.ref,
        stage.key,
        outcome.value,
        seat.role,
        actor.email,
        on_behalf,
        False,
        request.status,
        stage.status,
        f"escalated to {seat.role}: {seat.escalation.text}" if seat.escalation else "",
    )


def _seat_decision(
    request: Request, seat: Seat, outcome: Outcome, comment: str, now: datetime
) -> Decision:
    """The decision the actor makes in this seat (not stored yet)."""
    assert request.id is not None and seat.stage.id is not None
    assert seat.actor.id is not None and seat.principal.id is not None
    return Decision(
        request_id=request.id,
        stage_id=seat.stage.id,
        round=seat.stage.round,
        slot=seat.slot,
        role=seat.role,
        outcome=outcome.value,
        comment=comment,
        actor_id=seat.actor.id,
        on_behalf_of_id=seat.principal.id if seat.delegated else None,
        decided_at=now,
    )


def may_confirm_terms(
    session: Session,
    request: Request,
    person: Person,
    *,
    stage_key: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Whether the person may confirm the request's contract terms now, or (stage_key) together
    with their approval of that stage, as `decide --confirm-terms` would judge it."""
    now = now or utcnow()
    directory = Directory(session, request, spec_for(session, request).calendar.today(now))
    stages = stages_of(session, request)
    decisions = decisions_of(session, request)
    if stage_key is not None:
        found, _ = seats(directory, person, request, stages, decisions, stage_key)
        if not found:
            return False
        decisions.append(_seat_decision(request, found[0], Outcome.APPROVE, "", now))
    try:
        _terms_seat(request, person, directory, stages, decisions)
    except RuleViolation:
        return False
    return True


def terms_refusal(
    session: Session, request: Request, person: Person, *, now: datetime | None = None
) -> str | None:
    """Why confirm_terms would refuse the person confirming the request's contract terms now
    (the request decided, a rule), or None if they may."""
    now = now or utcnow()
    try:
        _while_open(request, "its terms are no longer open")
        directory = Directory(session, request, spec_for(session, request).calendar.today(now))
        stages, decisions = stages_of(session, request), decisions_of(session, request)
        _terms_seat(request, person, directory, stages, decisions)
    except RuleViolation as exc:
        return str(exc)
    return None


def _open_escalations(
    directory: Directory,
    request: Request,
    stages: Iterable[Stage],
    decisions: list[Decision],
    stage_of: dict[Any, Stage],
) -> dict[tuple[Any, str], Escalation | None]:
    """The open slots of these stages (open ones only), each with its escalation if nobody
    holding its roles may decide it now."""
    return {
        (stage.id, slot): deciders(directory, request, stage, slot, roles, decisions, stage_of)[1]
        for stage in stages
        if stage.status == StageStatus.OPEN
        for slot, roles in open_slots(stage, decisions)
    }


def _escalate_left(
    session: Session,
    request: Request,
    directory: Directory,
    stages: Iterable[Stage],
    decisions: list[Decision],
    stage_of: dict[Any, Stage],
    was: dict[tuple[Any, str], Escalation | None],
    now: datetime,
) -> None:
    """After an approval that leaves its stage open, or contract terms confirmed: a slot that
    the act has made nobody's (its actor was its only eligible holder, and one person fills one
    part of a request) goes to the stage's escalation role now, as it would have when the stage
    opened; one escalated already that nobody of the escalation role may decide now (its actor
    was its only one) is told of. `was`: _open_escalations before the act."""
    new: dict[Any, set[str]] = defaultdict(set)
    for (stage_id, slot), escalation in _open_escalations(
        directory, request, stages, decisions, stage_of
    ).items():
        before = was.get((stage_id, slot))
        if escalation is not None and (before is None or (escalation.nobody and not before.nobody)):
            new[stage_id].add(slot)
    for stage_id, slots in new.items():
        stage = stage_of[stage_id]
        notices, _, escalations = approval_notices(
            directory, request, stage, decisions, stage_of, stage.due_at, slots=slots
        )
        outbox.defer(session, notices, request_id=request.id, at=now)
        _record_escalations(session, request, stage, escalations, due_at=stage.due_at, at=now)


def reassess(session: Session, *, now: datetime) -> list[str]:
    """After a change to people, roles or cost centres (an organisation file loaded, the HR sync
    deactivating a leaver), in its transaction: escalate the open slots it left to nobody (their
    only eligible holder lost the role or left), as they would have been when their stage
    opened, and tell the teams of a slot that nobody of its escalation role may decide now
    either; and ask whoever may now decide a slot that had been left to nobody (given the role
    since). Each slot is escalated (and recorded) once a round: a slot escalated before is
    asked again under the same keys, and the outbox keeps the first. The requests escalated."""
    rows = session.exec(
        select(Request, Stage)
        .join(Stage, Stage.request_id == Request.id)  # type: ignore[arg-type]
        .where(Request.status == RequestStatus.IN_REVIEW)
        .order_by(col(Request.id), col(Stage.position))
    ).all()
    if not rows:
        return []
    requests: dict[int, tuple[Request, list[Stage]]] = {}
    for request, stage in rows:
        assert request.id is not None
        requests.setdefault(request.id, (request, []))[1].append(stage)
    decisions: dict[int, list[Decision]] = defaultdict(list)
    ids = list(requests)
    for start in range(0, len(ids), 500):
        for decision in session.exec(
            select(Decision)
            .where(col(Decision.request_id).in_(ids[start : start + 500]))
            .order_by(col(Decision.id))
        ).all():
            decisions[decision.request_id].append(decision)
    stuck = {key for key, row in recorded_escalations(session, ids).items() if row.stuck}
    escalated: list[str] = []
    holders: dict[str, list[Person]] = {}  # read once for all: this transaction changed them
    for request_id, (request, stages) in requests.items():
        spec = spec_for(session, request)
        directory = Directory(session, request, spec.calendar.today(now), holders)
        stage_of = {s.id: s for s in stages if s.id is not None}
        made = decisions[request_id]
        for stage in stages:
            if stage.status != StageStatus.OPEN:
                continue
            notices, _, escalations = approval_notices(
                directory,
                request,
                stage,
                made,
                stage_of,
                stage.due_at,
                slots={
                    slot
                    for slot, roles in open_slots(stage, made)
                    if _asked_again(directory, request, stage, slot, roles, made, stage_of, stuck)
                },
            )
            queued = outbox.queue_many(session, notices, request_id=request_id, at=now)
            new = {n.key for n, row in zip(notices, queued, strict=True) if row is not None}
            key = f"{request.ref}/{stage.key}/r{stage.round}"
            fresh = [(e, asked) for e, asked in escalations if no_approver_key(key, e) in new]
            _record_escalations(session, request, stage, fresh, due_at=stage.due_at, at=now)
            if fresh:
                escalated.append(request.ref)
    return sorted(set(escalated))


def _asked_again(
    directory: Directory,
    request: Request,
    stage: Stage,
    slot: str,
    roles: tuple[str, ...],
    made: list[Decision],
    stage_of: dict[Any, Stage],
    stuck: set[tuple[str, int, str]],
) -> bool:
    """Whether a change to people or roles calls for asking an open slot's deciders: it left the
    slot to nobody (escalated now), or the slot had been left to nobody (`stuck`: not even its
    escalation role could decide it) and someone may decide it now, given the role since: they
    are asked as at the stage's opening (the outbox keeps anyone asked before from being asked
    twice)."""
    people, escalation = deciders(directory, request, stage, slot, roles, made, stage_of)
    if escalation is not None:
        return True
    return bool(people) and slot_key(request, stage, slot) in stuck


def _check_final_approval(
    session: Session,
    request: Request,
    spec: PipelineSpec,
    now: datetime,
    directory: Directory,
    stages: list[Stage],
    decisions: list[Decision],
) -> dict[str, Any] | None:
    """Refuse the final approval until the contract terms are confirmed (naming who may), or
    while it would exceed the budget under a stop policy; under a warn policy, return the
    warning to record."""
    missing = terms_view(request.terms)["missing"]
    if missing:
        confirmers = _terms_confirmers(directory, request, stages, decisions)
        # Said to the final approver, who cannot confirm them: whom to ask, and how they do it.
        people = terms_deciders(directory, request, stages, decisions)[0]
        who = f" ({', '.join(p.name for p in people)})" if people else ""
        raise RuleViolation(
            f"{request.ref}: before the final approval {confirmers}{who} must confirm the contract "
            f"terms still open: {', '.join(missing)}; they confirm them from their inbox or "
            f"with procure terms {request.ref} --all --as THEIR-EMAIL"
        )
    budget = budget_status(
        session, request=request, economics=spec.economics, today=spec.calendar.today(now)
    )
    if not budget.exceeds:
        return None
    assert budget.remaining is not None  # it exceeds a budget that is set
    # As of the approval (the budget_exceeded notice says these, not the budget as it stands
    # when the notice is sent, when this request counts as committed already).
    figures = {
        "cost_centre": budget.cost_centre,
        "fiscal_year": budget.fiscal_year,
        "budget": budget.amount,
        "remaining": budget.remaining,  # before this request
        "request_total": budget.request_total,
        "remaining_after": money(budget.remaining - budget.request_total),
    }
    if budget.policy == "stop":
        raise RuleViolation(
            f"{request.ref}: {money_text(request.total, request.currency)} exceeds what is left of "
            f"{budget.cost_centre}'s {budget.fiscal_year} budget ({money_text(budget.remaining, request.currency)}); "
            "the pipeline stops such approvals"
        )
    return figures


def _confirm_terms(
    session: Session,
    request: Request,
    actor: Person,
    names: list[str] | None,
    note: str,
    now: datetime,
    directory: Directory,
    stages: list[Stage],
    decisions: list[Decision],
) -> list[str]:
    """Whoever may decide purchasing's part of the review confirms contract terms on the
    checklist (rules.terms_seats); returns the names newly confirmed."""
    seat = _terms_seat(request, actor, directory, stages, decisions)
    wanted = terms_view(request.terms)["missing"] if names is None else names
    fresh = [n for n in wanted if n not in request.terms]
    if not fresh:
        return []
    on_behalf = seat.principal.email if seat.delegated else None
    by = {"by": actor.email, **({"on_behalf_of": on_behalf} if on_behalf else {})}
    request.terms = {
        **request.terms,
        **{n: {**by, "at": now.isoformat(), "note": note[:500]} for n in fresh},
    }
    session.add(request)
    audit.append(
        session,
        actor=actor.email,
        on_behalf_of=on_behalf,
        entity="request",
        entity_id=request.ref,
        request_id=request.id,
        action="terms_confirmed",
        details={
            "terms": fresh,
            "note": note,
            "role": seat.role,
            # Confirmed by the escalation role: say why nobody in purchasing could.
            **({"escalated": seat.escalation.text} if seat.escalation else {}),
        },
        at=now,
    )
    return fresh


def _terms_seat(
    request: Request,
    actor: Person,
    directory: Directory,
    stages: list[Stage],
    decisions: list[Decision],
) -> Seat:
    """The seat the actor confirms contract terms in, or the clearest reason they may not."""
    if not actor.active:
        raise RuleViolation(f"{actor.email} is not active and cannot confirm contract terms")
    found, reasons = terms_seats(directory, actor, request, stages, decisions)
    if found:
        return found[0]
    if actor.id == request.requester_id:
        raise RuleViolation(
            f"{request.ref}: nobody confirms the contract terms of their own request "
            f"({actor.email} asked for it)"
        )
    if actor.id == request.on_behalf_of_id:
        raise RuleViolation(
            f"{request.ref}: nobody confirms the contract terms of devices for themselves "
            f"({actor.email} is to receive them)"
        )
    if reasons:
        raise RuleViolation(
            f"{request.ref}: you may not confirm the contract terms: "
            + "; ".join(dict.fromkeys(reasons))
        )
    raise RuleViolation(
        f"{request.ref}: {actor.email} cannot confirm contract terms: needs the role "
        + _terms_confirmers(directory, request, stages, decisions)
    )


def _terms_confirmers(
    directory: Directory, request: Request, stages: list[Stage], decisions: list[Decision]
) -> str:
    """Who confirms the contract terms, for a message: purchasing, or the role its part of the
    review is escalated to, and why."""
    _, escalation = terms_deciders(directory, request, stages, decisions)
    if escalation is None:
        return Role.PURCHASING.value
    return f"{escalation.to} (in place of purchasing, as {escalation.text})"


def _filled_part(
    directory: Directory,
    actor: Person,
    stages: list[Stage],
    decisions: list[Decision],
    stage_key: str | None,
) -> tuple[Stage, Decision] | None:
    """A part of a stage the actor (in person or for someone) could have decided that someone
    else decided first in its current round: the stage and that decision."""
    principals = [actor, *directory.delegators_of(actor)]
    decided = (StageStatus.OPEN, StageStatus.APPROVED, StageStatus.REJECTED, StageStatus.SENT_BACK)
    for stage in stages:
        if stage.status not in decided or (stage_key and stage.key != stage_key):
            continue
        filled = {d.slot: d for d in current(stage, decisions)}
        for slot, roles in slots_of(stage):
            if slot in filled and any(directory.holds(p, r) for p in principals for r in roles):
                return stage, filled[slot]
    return None


def local_time(session: Session, request: Request, at: datetime) -> str:
    """A moment as messages show it: in the organisation's time zone (the calendar of the
    request's pipeline), '25 Nov 2026 at 10:00 CET'."""
    return moment_text(at, spec_for(session, request).calendar.timezone)


def part_of(slot: str) -> str:
    """A stage's part in words: 'it' (an any-of stage's one decision), else 'the IT part'."""
    return "it" if slot == ANY_SLOT else f"the {label(slot)} part"


def decided_by(session: Session, request: Request, decision: Decision) -> str:
    """Who made a decision, what and when, for a message: 'Ida Infrastructure (approve on
    25 Nov 2026 at 10:00 CET)', with 'for NAME' when they decided in someone's place."""
    by = by_id(session, Person, decision.actor_id)
    principal = (
        by_id(session, Person, decision.on_behalf_of_id) if decision.on_behalf_of_id else None
    )
    who = (by.name if by else "someone") + (f" for {principal.name}" if principal else "")
    when = local_time(session, request, decision.decided_at)
    return f"{who} ({label(decision.outcome)} on {when})"


def standing(
    session: Session, request: Request, stage: Stage, person: Person, *, now: datetime
) -> Decision | RuleViolation | AlreadyDecided | None:
    """Whether the person may decide an open stage in its current round now, as `decide`
    judges it: None if they may; the decision that leaves them nothing to decide (their own,
    or someone else's of the part they could decide); else why they may not (not active, their
    own request, a delegation not in force, one person per stage ...)."""
    decisions = decisions_of(session, request)
    mine = [d for d in current(stage, decisions) if d.actor_id == person.id]
    if mine:
        return mine[-1]
    if not person.active:
        return RuleViolation(f"{person.email} is not active and cannot decide")
    directory = Directory(session, request, spec_for(session, request).calendar.today(now))
    stages = stages_of(session, request)
    found, reasons = seats(directory, person, request, stages, decisions, stage.key)
    if found:
        return None
    taken = _filled_part(directory, person, stages, decisions, stage.key)
    if taken is not None:
        return taken[1]
    why = _why_not(request, stages, decisions, person, directory, stage.key, reasons)
    return why if isinstance(why, RuleViolation | AlreadyDecided) else RuleViolation(str(why))


def _why_not(
    request: Request,
    stages: list[Stage],
    decisions: list[Decision],
    actor: Person,
    directory: Directory,
    stage_key: str | None,
    reasons: list[str],
) -> Exception:
    """The clearest reason the actor has nothing to decide here."""
    if actor.id == request.requester_id:
        return RuleViolation(
            f"{request.ref}: nobody approves their own request ({actor.email} asked for it)"
        )
    if actor.id == request.on_behalf_of_id:
        return RuleViolation(
            f"{request.ref}: nobody approves devices for themselves ({actor.email} is to receive them)"
        )
    if stage_key is not None:
        stage = next(s for s in stages if s.key == stage_key)
        if stage.status in (StageStatus.APPROVED, StageStatus.REJECTED, StageStatus.SENT_BACK):
            return AlreadyDecided(f"{request.ref} {stage.key} is already {stage.status}")
        if stage.status != StageStatus.OPEN:
            return RuleViolation(
                f"{request.ref} {stage.key} is {stage.status}, not open for decisions"
            )
    if reasons:
        return RuleViolation(
            f"{request.ref}: you may not decide: " + "; ".join(dict.fromkeys(reasons))
        )
    # Could the actor have filled a slot that someone else filled first (in this round)?
    taken = _filled_part(directory, actor, stages, decisions, stage_key)
    if taken is not None:
        stage, filled = taken
        return AlreadyDecided(
            f"{request.ref} {stage.key}: {part_of(filled.slot)} was already decided by "
            f"{decided_by(directory.session, request, filled)}"
        )
    lapsed = [d for d in directory.delegations_of(actor) if not d.covers(directory.today)]
    stage_of = {s.id: s for s in stages if s.id is not None}
    roles_needed: set[str] = set()
    escalated: list[str] = []
    for s in stages:
        if s.status != StageStatus.OPEN:
            continue
        for slot, roles in open_slots(s, decisions):
            _, escalation = deciders(directory, request, s, slot, roles, decisions, stage_of)
            if escalation is None:
                roles_needed.update(roles)
            else:
                escalated.append(
                    f"{escalation.to} in place of {'/'.join(roles)}, as {escalation.text}"
                )
    needs = sorted(roles_needed) + escalated
    message = f"{request.ref}: {actor.email} is not an approver of any open stage"
    if needs:
        message += f" (open stages need: {', '.join(needs)})"
    if lapsed:
        spans = ", ".join(f"{d.starts_on}..{d.ends_on}" for d in lapsed)
        message += f"; your delegation is not in force today ({directory.today}; it runs {spans})"
    return RuleViolation(message)


# ------------------------------------------------------------------ resubmission and cancellation


def resubmit(
    session: Session,
    *,
    ref: str | int,
    actor_email: str,
    update: RequestUpdate | None = None,
    comment: str = "",
    now: datetime | None = None,
) -> Request:
    """The requester answers a send-back: apply the changes, submit again; unchanged stages keep approvals."""
    now = now or utcnow()
    request = lock_request(session, ref)
    actor = find_actor(session, actor_email)
    if actor.id != request.requester_id:
        raise RuleViolation(f"only the requester of {request.ref} can resubmit it")
    if request.status != RequestStatus.CHANGES_REQUESTED:
        raise TransitionNotAllowed(
            f"request {request.ref} is {request.status}: cannot resubmit (only after changes are requested)"
        )
    try:
        comment = multi_line(comment or "")
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="comment")) from None
    spec = spec_for(session, request)
    update = update or RequestUpdate()
    old_lines = lines_of(session, request)
    lookup = Lookup(session)
    requester = by_id(session, Person, request.requester_id)
    beneficiary = by_id(session, Person, request.on_behalf_of_id)
    centre = by_id(session, CostCentre, request.cost_centre_id)
    assert requester is not None and beneficiary is not None and centre is not None
    # Lines left out of the update stay as they are, sourcing and prices included.
    resolved = resolve(
        lookup,
        kind=(update.kind or RequestKind(request.kind)).value,
        requester=requester.email,
        on_behalf_of=update.on_behalf_of or beneficiary.email,
        cost_centre=update.cost_centre or centre.code,
        needed_by=update.needed_by or request.needed_by,
        justification=update.justification
        if update.justification is not None
        else request.justification,
        currency=request.currency,
        lines=update.lines or [],
        spec=spec,
        today=spec.calendar.today(now),
    )
    before = _snapshot(request, old_lines)
    assert resolved.on_behalf_of.id is not None and resolved.centre.id is not None
    request.kind = resolved.kind
    request.on_behalf_of_id = resolved.on_behalf_of.id
    request.cost_centre_id = resolved.centre.id
    request.needed_by = resolved.needed_by
    request.justification = resolved.justification
    session.add(request)
    if update.lines is not None:
        request.total = resolved.total
        session.execute(delete(RequestLine).where(col(RequestLine.request_id) == request.id))
        session.flush()
        lines = _write_lines(session, request, resolved)
    else:
        lines = old_lines
    _plan(session, request, lines, spec, keep=request.terms)
    after = _snapshot(request, lines)
    changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    fire(
        session,
        request,
        RequestEvent.RESUBMIT,
        actor=actor.email,
        at=now,
        changes={"round": request.round + 1, "submitted_at": now},
        details={"changed": changed, "comment": comment},
        notices=[
            Notice("request_submitted", person(actor.email), f"{request.ref}/r{request.round + 1}")
        ],
    )
    _replan(session, request, lines, spec, now)
    _start_review(session, request, spec, now, actor=SYSTEM)
    return request


def _snapshot(request: Request, lines: list[RequestLine]) -> dict[str, Any]:
    return {
        "kind": request.kind,
        "on_behalf_of": request.on_behalf_of_id,
        "cost_centre": request.cost_centre_id,
        "needed_by": request.needed_by.isoformat(),
        "justification": request.justification,
        "total": str(request.total),
        "lines": [f"{ln.quantity} x {ln.sku} @ {ln.unit_price}" for ln in lines],
    }


def _replan(
    session: Session, request: Request, lines: list[RequestLine], spec: PipelineSpec, now: datetime
) -> None:
    context = condition_context(session, request, lines)
    specs = {s.id: s for s in spec.stages}
    for stage in stages_of(session, request):
        stage_spec = specs[stage.key]
        fresh = inputs_hash(stage_spec, request, lines)
        if not _applies(stage_spec, context):
            if stage.status != StageStatus.SKIPPED:
                if stage.status == StageStatus.SENT_BACK:
                    fire(
                        session,
                        stage,
                        StageEvent.RESET,
                        actor=SYSTEM,
                        at=now,
                        changes={"round": stage.round + 1},
                    )
                _skip(session, stage, stage_spec, now)
            continue
        keep = stage.inputs_hash == fresh and stage.status in (
            StageStatus.APPROVED,
            StageStatus.WAITING,
        )
        if keep:
            continue
        _reset(
            session,
            stage,
            fresh,
            {
                "reason": "sent back"
                if stage.status == StageStatus.SENT_BACK
                else "inputs changed"
                if stage.inputs_hash != fresh
                else "applies again"
            },
            now,
        )


def _reset(
    session: Session, stage: Stage, fresh: str, details: dict[str, Any], now: datetime
) -> None:
    """A stage decides again, in a new round on its new inputs (`fresh`: their hash), from the
    start: not yet opened, no deadline."""
    fire(
        session,
        stage,
        StageEvent.RESET,
        actor=SYSTEM,
        at=now,
        changes={
            "round": stage.round + 1,
            "inputs_hash": fresh,
            "opened_at": None,
            "due_at": None,
            "closed_at": None,
        },
        details=details,
    )


def cancel(
    session: Session,
    *,
    ref: str | int,
    actor_email: str,
    reason: str = "",
    now: datetime | None = None,
) -> Request:
    """Withdraw a request before it is ordered (the requester, or purchasing / management)."""
    now = now or utcnow()
    try:
        reason = multi_line(reason or "")
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="reason")) from None
    request = lock_request(session, ref)
    actor = find_actor(session, actor_email)
    if actor.id != request.requester_id:
        assert actor.id is not None
        if not roles_of(session, actor.id) & {Role.PURCHASING.value, Role.MANAGEMENT.value}:
            raise RuleViolation(
                f"only the requester, purchasing or management can cancel {request.ref}"
            )
    REQUEST.target(request.status, RequestEvent.CANCEL, what=f"request {request.ref}")
    for stage in stages_of(session, request):
        if stage.status in (StageStatus.WAITING, StageStatus.OPEN):
            fire(
                session, stage, StageEvent.CANCEL, actor=SYSTEM, at=now, changes={"closed_at": now}
            )
    requester = requester_of(session, request)
    fire(
        session,
        request,
        RequestEvent.CANCEL,
        actor=actor.email,
        at=now,
        changes={"closed_at": now},
        details={"reason": reason},
        notices=[
            Notice(
                "cancelled",
                person(requester.email),
                request.ref,
                {"by": actor.email, "reason": reason},
            )
        ],
    )
    return request


# ------------------------------------------------------------------ purchasing in the joint review


def confirm_terms(
    session: Session,
    *,
    ref: str | int,
    actor_email: str,
    names: list[str] | None = None,
    note: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Whoever may decide purchasing's part of the review (or, escalated, its escalation role)
    confirms contract terms (warranty, sla, returns, erasure; all still open by default)."""
    now = now or utcnow()
    if names is not None:
        unknown = [n for n in names if n not in TERMS]
        if unknown or not names:
            raise InputError(
                Problem(
                    f"unknown term(s) {', '.join(unknown) or '(none)'}: use {', '.join(TERMS)}",
                    field="--confirm",
                )
            )
    try:
        note = single_line(note or "")
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="note")) from None
    request = lock_request(session, ref)
    _while_open(request, "its terms are no longer open")
    actor = find_actor(session, actor_email)
    directory = Directory(session, request, spec_for(session, request).calendar.today(now))
    stages = stages_of(session, request)
    decisions = decisions_of(session, request)
    stage_of = {s.id: s for s in stages}
    # Confirming them takes purchasing's part of the review: a part of an open stage that only
    # the actor could decide is left to nobody, and is escalated now.
    was = _open_escalations(directory, request, stages, decisions, stage_of)
    fresh = _confirm_terms(session, request, actor, names, note, now, directory, stages, decisions)
    if fresh:
        _escalate_left(session, request, directory, stages, decisions, stage_of, was, now)
    checklist = terms_view(request.terms)
    return {
        "id": request.ref,
        "confirmed": fresh,  # confirmed just now
        "missing": checklist["missing"],
        "checklist": checklist["confirmed"],  # every confirmed term, by whom
    }


def record_quote(
    session: Session,
    *,
    ref: str | int,
    line_no: int,
    supplier: str,
    unit_price: Decimal,
    actor_email: str,
    valid_until: date | None = None,
    note: str = "",
    now: datetime | None = None,
) -> Quote:
    """Purchasing records a supplier's quote for a line, to compare side by side."""
    now = now or utcnow()
    problems = []
    values = {}
    for name, value in (("supplier", supplier), ("note", note)):
        try:
            values[name] = single_line(value or "")
        except ValueError as exc:
            problems.append(Problem(str(exc), field=name))
    if not values.get("supplier") and not any(p.field == "supplier" for p in problems):
        problems.append(Problem("is required", field="supplier"))
    try:
        price = amount(unit_price)
        if not price:
            raise ValueError("must be more than 0.00: a quote is a price")
    except ValueError as exc:
        problems.append(Problem(str(exc), field="price"))
    if problems:
        raise InputError(problems)
    request = lock_request(session, ref)
    _until_ordered(request, QUOTING_STATES, "quotes are recorded")
    actor = find_actor(session, actor_email)
    _need_purchasing(session, actor, "record quotes")
    if line_no not in {ln.line_no for ln in lines_of(session, request)}:
        raise NotFound(Problem(f"{request.ref} has no line {line_no}", field="--line"))
    spec = spec_for(session, request)
    if valid_until is not None and valid_until < spec.calendar.today(now):
        raise InputError(Problem(f"{valid_until} is in the past", field="--valid-until"))
    assert request.id is not None
    quote = Quote(
        request_id=request.id,
        line_no=line_no,
        supplier=values["supplier"],
        unit_price=price,
        valid_until=valid_until,
        note=values["note"],
        recorded_by=actor.email,
        recorded_at=now,
    )
    session.add(quote)
    session.flush()
    audit.append(
        session,
        actor=actor.email,
        entity="request",
        entity_id=request.ref,
        request_id=request.id,
        action="quote",
        details={
            "quote": quote.id,
            "line": line_no,
            "supplier": quote.supplier,
            "unit_price": price,
        },
        at=now,
    )
    return quote


def set_sourcing(
    session: Session,
    *,
    ref: str | int,
    line_no: int,
    actor_email: str,
    agreement: str | None = None,
    individual: bool = False,
    quote_id: int | None = None,
    offer: str | None = None,
    justification: str = "",
    now: datetime | None = None,
) -> RequestLine:
    """Purchasing chooses how a line is sourced during the review: bought under an agreement or
    individually (at a recorded quote's price, or the list price, with the reason), or leased /
    as a service from the cheapest offer of that kind."""
    now = now or utcnow()
    choices = (agreement is not None, individual, quote_id is not None, offer is not None)
    if sum(1 for flag in choices if flag) != 1:
        raise InputError(
            Problem(
                "give exactly one of --agreement CODE, --individual, --quote ID, --offer lease|daas"
            )
        )
    if offer is not None and offer not in ("lease", "daas"):
        raise InputError(Problem(f"unknown offer kind {offer!r} (lease or daas)", field="--offer"))
    try:
        justification = multi_line(justification or "")
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="--justification")) from None
    request = lock_request(session, ref)
    _until_ordered(request, SOURCING_STATES, "sourcing is chosen")
    actor = find_actor(session, actor_email)
    _need_purchasing(session, actor, "choose sourcing")
    lines = lines_of(session, request)
    line = next((ln for ln in lines if ln.line_no == line_no), None)
    if line is None:
        raise NotFound(Problem(f"{request.ref} has no line {line_no}", field="--line"))
    spec = spec_for(session, request)
    lookup = Lookup(session)
    quote_note = ""
    bought = {"sku": line.sku, "quantity": line.quantity, "ownership": "bought"}
    if quote_id is not None:
        quote = by_id(session, Quote, quote_id)
        if quote is None or quote.request_id != request.id or quote.line_no != line_no:
            raise NotFound(
                Problem(f"no quote {quote_id} for {request.ref} line {line_no}", field="--quote")
            )
        quote_note = f"quote {quote.id} from {quote.supplier}"
        wanted = LineCreate.model_validate(
            {
                **bought,
                "unit_price": quote.unit_price,
                "sourcing": "individual",
                "sourcing_justification": justification,
            }
        )
    elif individual:
        wanted = LineCreate.model_validate(
            {
                **bought,
                # The list price it was requested at (none: a catalog item priced at 0.00).
                "unit_price": line.list_price or None,
                "sourcing": "individual",
                "sourcing_justification": justification,
            }
        )
    elif offer is not None:
        wanted = LineCreate.model_validate(
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "ownership": "leased" if offer == "lease" else "daas",
            }
        )
    else:
        wanted = LineCreate.model_validate({**bought, "agreement": agreement})
    try:
        sourced = _source_line(lookup, wanted, "line", request.currency, spec.calendar.today(now))
    except InputError as exc:  # named as the command's options, for line `line_no`
        raise InputError(
            [replace(p, field=_SOURCING_OPTIONS.get(p.field or "", p.field)) for p in exc.problems]
        ) from None
    before = {
        "sourcing": line.sourcing,
        "agreement": line.agreement_id,
        "unit_price": str(line.unit_price),
    }
    was_total, was_agreement = request.total, line.agreement_id
    was_supplier = supplier_of(session, line)
    suppliers = {supplier_of(session, ln).code for ln in lines}
    count = session.exec(_SOURCING_CHANGES, params={"id": request.id}).one()
    line.sourcing = sourced.sourcing
    line.agreement_id = sourced.agreement.id if sourced.agreement else None
    line.offer_id = sourced.offer.id if sourced.offer else None
    line.quote_id = quote_id
    line.ownership = sourced.line.ownership
    line.term_months = sourced.offer.term_months if sourced.offer else None
    line.unit_price = sourced.unit_price
    line.total = sourced.total
    line.framework_available = line.framework_available or sourced.framework_available
    line.sourcing_note = "; ".join(p for p in (quote_note, sourced.note) if p)
    session.add(line)
    request.total = money(sum((ln.total for ln in lines), Decimal(0)))
    # Contract terms purchasing confirmed were confirmed for the suppliers the request was
    # bought from: a supplier new to the request brings its own contract, to be confirmed again
    # (what an agreement or offer settles is worked out afresh either way).
    supplier = supplier_of(session, line)
    confirmed = [k for k, v in request.terms.items() if v.get("by") != "agreement"]
    reopened = confirmed if supplier.code not in suppliers else []
    _plan(session, request, lines, spec, keep={} if reopened else request.terms)
    audit.append(
        session,
        actor=actor.email,
        entity="request",
        entity_id=request.ref,
        request_id=request.id,
        action="sourcing",
        details={
            "line": line_no,
            "from": {**before, "supplier": was_supplier.code},
            "to": {
                "sourcing": line.sourcing,
                "agreement": sourced.agreement.code if sourced.agreement else None,
                "offer": sourced.offer.id if sourced.offer else None,
                "unit_price": str(line.unit_price),
                "supplier": supplier.code,
            },
            "justification": line.sourcing_note,
            "total": request.total,
            **({"terms_reopened": reopened} if reopened else {}),
        },
        at=now,
    )
    if request.status == RequestStatus.IN_REVIEW:
        _review_again(session, request, lines, spec, now)
    elif request.status == RequestStatus.APPROVED:
        change = {
            "by": actor.email,
            "line": line_no,
            "sku": line.sku,
            "from": {**before, "agreement": _agreement_code(session, was_agreement)},
            "to": {
                "sourcing": line.sourcing,
                "agreement": sourced.agreement.code if sourced.agreement else None,
                "ownership": line.ownership,
                "unit_price": str(line.unit_price),
            },
            "justification": line.sourcing_note,
            "total_before": str(was_total),
            "total": str(request.total),
        }
        _after_approval(session, request, lines, spec, actor, change, f"{count + 1}", now)
    return line


def _review_again(
    session: Session, request: Request, lines: list[RequestLine], spec: PipelineSpec, now: datetime
) -> None:
    """After a change to what the stages decide on during the review (purchasing re-sourcing a
    line changes its price and the total): the approvals by amount follow the new figures.

    - A stage whose condition now holds joins (finance once the total reaches its threshold);
      a waiting one whose condition no longer holds is skipped.
    - An approved stage whose inputs changed decides again, as after a resubmission.
    - An open stage keeps the decisions of its round when purchasing is one of its roles (the
      sourcing is settled there, in the same review); any other open stage with an approval
      given on the old figures starts a new round.
    - An open stage whose earlier stages are no longer all done waits for them again.
    Stages that can open then open, and their approvers are told."""
    context = condition_context(session, request, lines)
    specs = {s.id: s for s in spec.stages}
    stages = stages_of(session, request)
    decisions = decisions_of(session, request)
    for stage in stages:
        stage_spec = specs[stage.key]
        fresh = inputs_hash(stage_spec, request, lines)
        changed = stage.inputs_hash != fresh
        round_changes = {"round": stage.round + 1, "inputs_hash": fresh, "due_at": None}
        if not _applies(stage_spec, context):
            if stage.status == StageStatus.WAITING:
                _skip(session, stage, stage_spec, now)
            continue
        if stage.status == StageStatus.SKIPPED or (
            stage.status == StageStatus.APPROVED and changed
        ):
            why = "applies now" if stage.status == StageStatus.SKIPPED else "inputs changed"
            _reset(
                session, stage, fresh, {"reason": f"{why}: sourcing", "total": request.total}, now
            )
        elif (
            stage.status == StageStatus.OPEN
            and changed
            and Role.PURCHASING.value not in stage.roles
            and any(d.outcome == Outcome.APPROVE for d in current(stage, decisions))
        ):
            fire(
                session,
                stage,
                StageEvent.SUSPEND,
                actor=SYSTEM,
                at=now,
                changes=round_changes,
                details={"reason": "inputs changed: sourcing", "total": request.total},
            )
        elif changed:
            stage.inputs_hash = fresh  # what the stage decides on from now
    by_key = {s.key: s for s in stages}
    for stage in stages:
        if stage.status == StageStatus.OPEN and not all(
            by_key[k].status in DONE for k in _predecessors(stage.key, by_key)
        ):
            fire(
                session,
                stage,
                StageEvent.SUSPEND,
                actor=SYSTEM,
                at=now,
                changes={"round": stage.round + 1, "due_at": None},
                details={"reason": "an earlier stage decides again"},
            )
    _advance(session, request, spec, stages, decisions, now, lines=lines)


_SOURCING_CHANGES = (
    select(func.count())
    .select_from(AuditEvent)
    .where(AuditEvent.request_id == bindparam("id"), AuditEvent.action == "sourcing")
)


def _after_approval(
    session: Session,
    request: Request,
    lines: list[RequestLine],
    spec: PipelineSpec,
    actor: Person,
    change: dict[str, Any],
    number: str,
    now: datetime,
) -> None:
    """After purchasing re-sourced a line of an approved request (not ordered yet). The approvals
    were given for an amount, on complete contract terms; they still cover the request unless

    - the total rose: every stage whose inputs changed decides again (as after a resubmission);
    - a stage whose condition did not hold now holds: it joins;
    - the contract terms are no longer all settled (off the agreement that settled them): the
      stage where purchasing confirms them (rules.terms_slot; the last stage in a pipeline
      without one) decides again, and the final approval waits for them as the first one did.

    None of these: it stays approved and can be ordered. Otherwise it goes back to review
    (reopen), those stages start a new round (a stage that no longer applies is skipped) and
    open as their turn comes, their approvers asked; the final approval checks the budget and
    the terms again. Either way the requester and everyone who approved are told (re_sourced)."""
    context = condition_context(session, request, lines)
    specs = {s.id: s for s in spec.stages}
    stages = stages_of(session, request)
    decisions = decisions_of(session, request)
    rose = request.total > Decimal(change["total_before"])
    missing = terms_view(request.terms)["missing"]
    applying = [s for s in stages if _applies(specs[s.key], context)]
    terms_stage, _ = terms_slot(applying)
    if terms_stage is None and applying:
        terms_stage = max(applying, key=lambda s: s.position)
    again: dict[str, str] = {}
    fresh: dict[str, str] = {}
    for stage in applying:
        fresh[stage.key] = inputs_hash(specs[stage.key], request, lines)
        if stage.status == StageStatus.SKIPPED:
            again[stage.key] = "applies now"
        elif rose and stage.inputs_hash != fresh[stage.key]:
            again[stage.key] = "inputs changed"
        elif missing and stage is terms_stage:
            again[stage.key] = "contract terms open"
    # Told: the requester, and whoever gave the approvals (a delegate and the one they stood
    # in for); not the purchaser who made the change.
    given = [d for s in stages for d in current(s, decisions) if d.outcome == Outcome.APPROVE]
    ids = dict.fromkeys(i for d in given for i in (d.actor_id, d.on_behalf_of_id) if i)
    approvers = [p.email for p in (by_id(session, Person, i) for i in ids) if p is not None]
    told = dict.fromkeys([requester_of(session, request).email, *approvers])
    status = RequestStatus.IN_REVIEW if again else RequestStatus.APPROVED
    notice = {**change, "status": status.value, "again": list(again), "terms_open": missing}
    notices = [
        Notice("re_sourced", person(email), f"{request.ref}/sourcing/{number}", notice)
        for email in told
        if email != actor.email
    ]
    if not again:
        outbox.defer(session, notices, request_id=request.id, at=now)
        return
    fire(
        session,
        request,
        RequestEvent.REOPEN,
        actor=actor.email,
        at=now,
        changes={"round": request.round + 1, "decided_at": None},
        details={
            "reason": "sourcing",
            "line": change["line"],
            "total": [change["total_before"], change["total"]],
            "decide_again": again,
            **({"terms_open": missing} if missing else {}),
        },
        notices=notices,
    )
    for stage in stages:
        if stage not in applying:
            if stage.status != StageStatus.SKIPPED:
                _skip(session, stage, specs[stage.key], now)
        elif stage.key in again:
            details = {"reason": f"{again[stage.key]}: sourcing", "total": request.total}
            _reset(session, stage, fresh[stage.key], details, now)
    _advance(session, request, spec, stages, decisions, now, lines=lines)


# What _source_line() names a line's fields, as set_sourcing()'s options.
_SOURCING_OPTIONS = {
    "line.sku": "--line",
    "line.sourcing_justification": "--justification",
    "line.agreement": "--agreement",
    "line.sourcing": "--agreement",
    "line.ownership": "--offer",
    "line.unit_price": "--quote",
}


def _while_open(request: Request, why: str) -> None:
    """Refuse purchasing's review work once the request is decided."""
    if request.status not in OPEN_REQUEST_STATES:
        raise TransitionNotAllowed(f"request {request.ref} is {request.status}: {why}")


# Where purchasing may still choose how lines are sourced (and collect quotes for them): during
# the review, and once approved until the request is ordered (set_sourcing: _after_approval).
SOURCING_STATES = frozenset(
    {RequestStatus.SUBMITTED, RequestStatus.IN_REVIEW, RequestStatus.APPROVED}
)
QUOTING_STATES = frozenset({*OPEN_REQUEST_STATES, RequestStatus.APPROVED})


def _until_ordered(request: Request, allowed: frozenset[RequestStatus], what: str) -> None:
    """Refuse purchasing's sourcing work outside `allowed`, saying when it is done."""
    if request.status in allowed:
        return
    if request.status in SPENT_STATES:
        raise TransitionNotAllowed(
            f"request {request.ref} is {request.status}: its purchase orders are placed, "
            "so its sourcing no longer changes"
        )
    raise TransitionNotAllowed(
        f"request {request.ref} is {request.status}: {what} during the review, "
        "or after the approval until the request is ordered"
    )


def _agreement_code(session: Session, agreement_id: int | None) -> str | None:
    agreement = by_id(session, FrameworkAgreement, agreement_id) if agreement_id else None
    return agreement.code if agreement else None


def _need_purchasing(session: Session, actor: Person, what: str) -> None:
    assert actor.id is not None
    if Role.PURCHASING.value not in roles_of(session, actor.id):
        raise RuleViolation(f"{actor.email} cannot {what}: needs the role purchasing")


# ------------------------------------------------------------------ order, delivery, rollout


def _check_actor_role(session: Session, actor_email: str | None, roles: set[str], what: str) -> str:
    """The actor's email if they hold one of the roles; operators without --as act as 'system'."""
    if actor_email is None:
        return SYSTEM
    actor = find_actor(session, actor_email)
    assert actor.id is not None
    if not roles_of(session, actor.id) & roles:
        raise RuleViolation(
            f"{actor.email} cannot {what}: needs the role {' or '.join(sorted(roles))}"
        )
    return actor.email


def place_order(
    session: Session, *, ref: str | int, actor_email: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Order an approved request: purchase orders per supplier (call-offs under agreements draw
    down their volume), one asset per unit, and the late-involvement ledger frozen as it stands."""
    now = now or utcnow()
    actor = _check_actor_role(session, actor_email, {Role.PURCHASING.value}, "place orders")
    request = lock_request(session, ref)
    REQUEST.target(request.status, RequestEvent.ORDER, what=f"request {request.ref}")
    spec = spec_for(session, request)
    today = spec.calendar.today(now)
    lines = lines_of(session, request)
    agreements = _lock_agreements(session, [ln.agreement_id for ln in lines if ln.agreement_id])
    _check_call_offs(session, request, lines, agreements, today)
    orders: dict[str, dict[str, Any]] = {}
    call_offs: list[CallOff] = []
    assets: list[Asset] = []
    assert request.id is not None
    for line in lines:
        assert line.id is not None
        source = supplier_of(session, line)
        agreement = agreements.get(line.agreement_id) if line.agreement_id else None
        order = orders.setdefault(
            source.code,
            {
                "supplier": source.code,
                "name": source.name,
                "currency": request.currency,
                "lines": [],
                "total": Decimal("0.00"),
            },
        )
        order["lines"].append(
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "total": line.total,
                "agreement": agreement.code if agreement else None,
            }
        )
        order["total"] = money(order["total"] + line.total)
        if agreement is not None:
            assert agreement.id is not None
            call_offs.append(
                CallOff(
                    agreement_id=agreement.id,
                    request_id=request.id,
                    line_id=line.id,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    at=now,
                )
            )
        assets += (
            Asset(
                request_id=request.id,
                line_id=line.id,
                item_id=line.item_id,
                sku=line.sku,
                ownership=line.ownership,
                ordered_at=now,
            )
            for _ in range(line.quantity)
        )
    # Read again by the steps that come next (delivery), not by this one.
    insert_all(session, call_offs, key=None)
    insert_all(session, assets, key=None)
    requester = requester_of(session, request)
    purchase_orders = [
        {**o, "number": f"PO-{request.ref[3:]}-{n}"} for n, o in enumerate(orders.values(), start=1)
    ]
    entries = freeze_ledger(session, request, lines, economics=spec.economics, today=today, at=now)
    fire(
        session,
        request,
        RequestEvent.ORDER,
        actor=actor,
        at=now,
        changes={"ordered_at": now},
        details={
            "purchase_orders": purchase_orders,
            "assets": sum(ln.quantity for ln in lines),
            "late_involvement": {e.kind: e.incurred for e in entries},
        },
        notices=[
            Notice("ordered", person(requester.email), request.ref),
            Notice("ordered", team(Role.IT), request.ref),
        ],
    )
    return {"ref": request.ref, "status": request.status, "purchase_orders": purchase_orders}


def _lock_agreements(session: Session, ids: list[int]) -> dict[int, FrameworkAgreement]:
    """The agreements a request orders under, locked (PostgreSQL) so call-offs on one serialise."""
    if not ids:
        return {}
    rows = session.exec(
        select(FrameworkAgreement)
        .where(col(FrameworkAgreement.id).in_(ids))
        .order_by(col(FrameworkAgreement.id))
        .with_for_update()
    ).all()
    return {a.id: a for a in rows if a.id is not None}


def _check_call_offs(
    session: Session,
    request: Request,
    lines: list[RequestLine],
    agreements: dict[int, FrameworkAgreement],
    today: date,
) -> None:
    """Every framework line's agreement must still be valid and have the volume left."""
    used = called_off(session, list(agreements))
    wanted: dict[int, int] = defaultdict(int)
    for line in lines:
        if line.agreement_id:
            wanted[line.agreement_id] += line.quantity
    problems: dict[int, str] = {}
    for agreement_id, quantity in wanted.items():
        agreement = agreements[agreement_id]
        if not agreement.active_on(today):
            problems[agreement_id] = (
                f"{agreement.code} is valid {agreement.valid_from} to {agreement.valid_to}, not on {today}"
            )
        elif agreement.committed_volume is not None:
            left = agreement.committed_volume - used.get(agreement_id, 0)
            if quantity > left:
                problems[agreement_id] = (
                    f"{agreement.code} has {left} units left, the order calls off {quantity}"
                )
    if problems:
        numbers = [str(ln.line_no) for ln in lines if ln.agreement_id in problems]
        which = f"line {numbers[0]}" if len(numbers) == 1 else f"lines {', '.join(numbers)}"
        raise RuleViolation(
            f"{request.ref} cannot be ordered as sourced: "
            + "; ".join(problems.values())
            + f". Purchasing can re-source {which}, then order it: procure sourcing "
            f"{request.ref} --line {numbers[0]} --as PURCHASER with --agreement CODE (another "
            "agreement), --individual (list price; --justification TEXT where an agreement "
            "covers it), --quote ID (procure quote add first) or --offer lease|daas. It stays "
            "approved if its total does not rise and its contract terms stay settled; else it "
            "goes back to review for the stages concerned"
        )


def schedule_delivery(
    session: Session,
    *,
    ref: str | int,
    on: date,
    actor_email: str | None = None,
    now: datetime | None = None,
) -> Request:
    """Record the delivery date agreed with the supplier (again to reschedule), also for the
    rest of a request part of which arrived before."""
    now = now or utcnow()
    actor = _check_actor_role(
        session, actor_email, {Role.PURCHASING.value, Role.IT.value}, "schedule deliveries"
    )
    request = lock_request(session, ref)
    spec = spec_for(session, request)
    today = spec.calendar.today(now)
    if on < today:
        raise InputError(Problem(f"{on} is in the past (today is {today})", field="date"))
    if on > today + timedelta(days=MAX_HORIZON_DAYS):
        raise InputError(Problem(f"{on} is more than five years ahead", field="date"))
    if request.status == RequestStatus.DELIVERY_SCHEDULED and request.delivery_on == on:
        return request  # scheduled for that day already: nothing changes, nobody is told again
    requester = requester_of(session, request)
    # Each change is told once, also a move back to a date told before (the key holds the
    # request's version); the calendar entry it carries replaces the one sent before (its
    # SEQUENCE: the version). Notices of an earlier date still waiting are not sent
    # (stale_notices: a newer one supersedes them).
    key, context = (
        f"{request.ref}/{on}/v{request.version}",
        {"date": on, "sequence": request.version},
    )
    audiences = [person(requester.email), team(Role.IT)]
    if request.kind == RequestKind.ONBOARDING:
        audiences.append(team(Role.HR))
    notices = [Notice("delivery_scheduled", audience, key, context) for audience in audiences]
    fire(
        session,
        request,
        RequestEvent.SCHEDULE_DELIVERY,
        actor=actor,
        at=now,
        changes={"delivery_on": on},
        details={
            "date": on,
            "previous": request.delivery_on,
            "late": on > request.needed_by,
        },
        notices=notices,
    )
    return request


@dataclass
class Progress:
    """How far a bulk action got."""

    ref: str
    done: int
    remaining: int
    status: str
    serials: list[str] = field(default_factory=list)


def check_shipments(session: Session, shipments: dict[str, list[SerialIn]], source: str) -> None:
    """A shipping notice as a whole, before anything is recorded: every request it names
    exists and may take deliveries, no serial is in it twice, and each serial not recorded for
    its request yet is one `deliver` records (_delivery_plan: not recorded for another device,
    of an SKU the request awaits). Every problem at once, by file and line (a request's own at
    its first serial's)."""
    problems = []
    first: dict[str, int | None] = {}
    repeated: set[int] = set()
    for unit in sorted(
        (u for units in shipments.values() for u in units), key=lambda u: u.line or 0
    ):
        if unit.serial in first:
            repeated.add(id(unit))
            problems.append(
                Problem(
                    f"serial {unit.serial} appears twice (first on line {first[unit.serial]})",
                    source,
                    unit.line,
                    "serial",
                )
            )
        else:
            first[unit.serial] = unit.line
    for ref, units in shipments.items():
        line = min((u.line for u in units if u.line is not None), default=None)
        try:
            request = get_request(session, ref)
        except InputError as exc:
            problems += [Problem(p.message, source, line, "request") for p in exc.problems]
            continue
        fresh = [u for u in undelivered(session, request, units) if id(u) not in repeated]
        if fresh:
            problems += _delivery_problems(session, request, fresh, source)
    if problems:
        raise InputError(sorted(problems, key=lambda p: p.line or 0))


def undelivered(session: Session, request: Request, units: list[SerialIn]) -> list[SerialIn]:
    """The units of a shipping notice not recorded for their request yet: a notice sent again
    (or a batch retried) records nothing twice."""
    known = {a.serial for a in assets_of(session, request) if a.serial}
    return [u for u in units if u.serial not in known]


def _delivery_problems(
    session: Session, request: Request, units: list[SerialIn], source: str
) -> list[Problem]:
    """What `deliver` would refuse of these units of one request, without recording anything:
    a request that takes no deliveries (at its first unit's line), else each unit's problem."""
    if request.status != RequestStatus.ORDERED:  # deliver schedules an ordered request first
        try:
            REQUEST.target(request.status, RequestEvent.DELIVER, what=request.ref)
        except TransitionNotAllowed as exc:
            count = f" ({plural(len(units), 'serial')} for it)" if len(units) > 1 else ""
            return [Problem(f"{exc}{count}", source, units[0].line, "request")]
    return _delivery_plan(session, request, units, source)[2]


# The devices an erasure file may name: asked back (the provider collected it: it is received
# first) or back in IT's hands; an erased one again under the same certificate is done already.
ERASABLE = (AssetStatus.RETURN_REQUESTED, AssetStatus.RETURNED)


def check_certificates(session: Session, certificates: list[dict[str, str]], source: str) -> None:
    """An erasure file as a whole, before any device is received or erased; every problem at
    once, by file and line: an unknown device, one named twice, a certificate used twice (in
    the file or for another device already), a device nobody asked back (still deployed, or
    not yet delivered), and one erased before under another certificate. A device erased under
    the same certificate is done and skipped (the file can be sent again)."""
    serials = [c["serial"] for c in certificates]
    assets = (
        {a.serial: a for a in session.exec(select(Asset).where(col(Asset.serial).in_(serials)))}
        if serials
        else {}
    )
    found = session.exec(
        select(ErasureRecord).where(
            col(ErasureRecord.certificate_id).in_([c["certificate"] for c in certificates])
            | col(ErasureRecord.asset_id).in_([a.id for a in assets.values()])
        )
    ).all()
    by_asset = {r.asset_id: r for r in found}
    by_certificate = {(r.certificate_id, r.provider): r.asset_id for r in found}
    problems = []
    first_serial: dict[str, str] = {}
    first_certificate: dict[tuple[str, str], str] = {}
    for c in certificates:
        line = int(c["line"]) if c.get("line") else None
        serial, key = c["serial"], (c["certificate"], c["provider"])
        name = f"certificate {key[0]} of {key[1]}"
        message, field = None, "certificate"
        asset = assets.get(serial)
        own = by_asset.get(asset.id) if asset is not None and asset.id is not None else None
        if serial in first_serial:
            message, field = (
                f"{serial} is named twice (first on line {first_serial[serial]})",
                "serial",
            )
        elif key in first_certificate:
            message = f"{name} is given twice (first on line {first_certificate[key]})"
        elif asset is None:
            message, field = f"no asset with serial {serial}", "serial"
        elif by_certificate.get(key, asset.id) != asset.id:
            message = f"{name} is already recorded for another device"
        elif own is not None and (own.certificate_id, own.provider) != key:
            message = (
                f"{serial} was erased already, under certificate {own.certificate_id} "
                f"of {own.provider}"
            )
        elif own is None and asset.status not in ERASABLE:
            hint = (
                " (procure asset request-return first)"
                if asset.status == AssetStatus.DEPLOYED
                else ""
            )
            message, field = (
                f"{serial} is {asset.status}: only a device asked back or returned can be "
                f"erased{hint}",
                "serial",
            )
        first_serial.setdefault(serial, c.get("line", "?"))
        first_certificate.setdefault(key, c.get("line", "?"))
        if message is not None:
            problems.append(Problem(message, source, line, field))
    if problems:
        raise InputError(problems)


def _delivery_plan(
    session: Session, request: Request, units: list[SerialIn], source: str | None
) -> tuple[list[tuple[Asset, SerialIn]], dict[str, list[Asset]], list[Problem]]:
    """Which ordered device each delivered unit is (by its SKU, or the one SKU still awaited),
    the devices still awaited after them by SKU, and every problem with the units, by line: a
    serial twice, one recorded already, an SKU not ordered or with every unit delivered."""
    every = assets_of(session, request)
    by_sku: dict[str, list[Asset]] = defaultdict(list)
    for a in every:
        if a.status == AssetStatus.ORDERED:
            by_sku[a.sku].append(a)
    ordered = Counter(a.sku for a in every)
    problems: list[Problem] = []
    seen: dict[str, int | None] = {}
    wanted = [u.serial for u in units]
    taken: dict[str | None, int] = (
        dict(
            session.exec(
                select(Asset.serial, Asset.request_id).where(col(Asset.serial).in_(wanted))
            ).all()
        )
        if wanted
        else {}
    )
    plan: list[tuple[Asset, SerialIn]] = []
    for unit in units:
        if unit.serial in seen:
            problems.append(
                Problem(
                    f"serial {unit.serial} appears twice",
                    field="serial",
                    source=source,
                    line=unit.line,
                )
            )
            continue
        seen[unit.serial] = unit.line
        if unit.serial in taken:
            problems.append(
                Problem(
                    f"serial {unit.serial} is already delivered for {request.ref}"
                    if taken[unit.serial] == request.id
                    else f"serial {unit.serial} is already recorded for another device",
                    field="serial",
                    source=source,
                    line=unit.line,
                )
            )
            continue
        sku = unit.sku
        if sku is None:
            awaited = sorted(s for s, group in by_sku.items() if group)
            if len(awaited) > 1:
                problems.append(
                    Problem(
                        f"give the SKU: {request.ref} awaits several items ({', '.join(awaited)})",
                        field="sku",
                        source=source,
                        line=unit.line,
                    )
                )
                continue
            if not awaited:  # one serial too many: every unit is delivered or listed above
                what = (
                    f"{next(iter(ordered))} units"
                    if len(ordered) == 1
                    else f"units ({', '.join(sorted(ordered))})"
                )
                why = (
                    f"all {sum(ordered.values())} ordered {what} are already delivered "
                    "or listed above"
                )
                problems.append(Problem(why, field="sku", source=source, line=unit.line))
                continue
            sku = awaited[0]
        if not by_sku.get(sku):
            why = (
                f"{request.ref} did not order {sku}"
                if not ordered[sku]
                else f"all {ordered[sku]} ordered {sku} units are already delivered or listed above"
            )
            problems.append(Problem(why, field="sku", source=source, line=unit.line))
            continue
        plan.append((by_sku[sku].pop(0), unit))
    return plan, by_sku, problems


def deliver(
    session: Session,
    *,
    ref: str | int,
    units: list[SerialIn],
    actor_email: str | None = None,
    now: datetime | None = None,
    source: str | None = None,
) -> Progress:
    """Record delivered units by serial (all at once or in parts); the request is delivered with the last."""
    now = now or utcnow()
    actor = _check_actor_role(
        session, actor_email, {Role.IT.value, Role.PURCHASING.value}, "record deliveries"
    )
    request = lock_request(session, ref)
    # Ordered and scheduled alike: units that arrive before a delivery date is agreed are
    # recorded as they are, and no date is made up for them nor for the units still to come.
    REQUEST.target(request.status, RequestEvent.DELIVER, what=f"request {request.ref}")
    if not units:
        raise InputError(Problem("no serials given", source=source))
    plan, by_sku, problems = _delivery_plan(session, request, units, source)
    if problems:
        raise InputError(problems)
    lines = {ln.id: ln for ln in lines_of(session, request)}
    items = {
        i.id: i
        for i in session.exec(
            select(Item).where(col(Item.id).in_({a.item_id for a, _ in plan}))
        ).all()
    }
    today = spec_for(session, request).calendar.today(now)
    moves = []
    for asset, unit in plan:
        line = lines[asset.line_id]
        item = items[asset.item_id]
        contract_end = (
            add_months(today, line.term_months)
            if line.term_months and line.ownership != "bought"
            else None
        )
        changes = {
            "serial": unit.serial,
            "delivered_at": now,
            "warranty_end": add_months(today, item.warranty_months),
            "contract_end": contract_end,
        }
        moves.append(Move(asset, changes, {"sku": asset.sku}))
    fire_many(session, moves, AssetEvent.DELIVER, actor=actor, at=now)
    remaining = sum(len(g) for g in by_sku.values())
    unplanned = request.status == RequestStatus.ORDERED  # no delivery date was agreed
    if remaining == 0:
        requester = requester_of(session, request)
        fire(
            session,
            request,
            RequestEvent.DELIVER,
            actor=actor,
            at=now,
            details={"units": len(plan), "unplanned": unplanned},
            notices=[
                Notice("delivered", person(requester.email), request.ref),
                Notice("delivered", team(Role.IT), request.ref),
            ],
        )
    elif unplanned:
        # Part of it came before any date was agreed: what arrived and what is still to come,
        # to those who wait for it and to purchasing, who agrees the date for the rest.
        requester = requester_of(session, request)
        units_ordered = sum(ln.quantity for ln in lines.values())  # a device record per unit
        arrived = units_ordered - remaining
        context = {"arrived": arrived, "units": units_ordered, "remaining": remaining, "on": today}
        outbox.defer(
            session,
            [
                Notice(
                    "delivered", audience, f"{request.ref}/{arrived}-of-{units_ordered}", context
                )
                for audience in (
                    person(requester.email),
                    team(Role.IT),
                    team(Role.PURCHASING),
                )
            ],
            request_id=request.id,
            at=now,
        )
    return Progress(request.ref, len(plan), remaining, request.status, [u.serial for _, u in plan])


def roll_out(
    session: Session,
    *,
    ref: str | int,
    assignments: list[Assignment] | None = None,
    actor_email: str | None = None,
    now: datetime | None = None,
    source: str | None = None,
) -> Progress:
    """Hand delivered devices to people (default: all to the person they were requested for)."""
    now = now or utcnow()
    actor = _check_actor_role(session, actor_email, {Role.IT.value}, "roll out devices")
    request = lock_request(session, ref)
    REQUEST.target(request.status, RequestEvent.ROLL_OUT, what=f"request {request.ref}")
    assets = assets_of(session, request)
    delivered = {a.serial: a for a in assets if a.status == AssetStatus.DELIVERED and a.serial}
    if assignments is None:
        beneficiary = by_id(session, Person, request.on_behalf_of_id, read_only=True)
        assert beneficiary is not None
        assignments = [Assignment(serial, beneficiary.email) for serial in delivered]
    if not assignments:
        raise InputError(Problem("no assignments given", source=source))
    problems: list[Problem] = []
    lookup = Lookup(session)
    plan: list[tuple[Asset, Person]] = []
    seen: set[str] = set()
    for a in assignments:
        if a.serial in seen:
            problems.append(
                Problem(
                    f"serial {a.serial} is assigned twice",
                    field="serial",
                    source=source,
                    line=a.line,
                )
            )
            continue
        seen.add(a.serial)
        asset = delivered.get(a.serial)
        if asset is None:
            known = next((x for x in assets if x.serial == a.serial), None)
            why = (
                f"{a.serial} is {known.status}, not delivered"
                if known
                else f"{a.serial} is not a device of {request.ref}"
            )
            problems.append(Problem(why, field="serial", source=source, line=a.line))
            continue
        holder = lookup.person(a.email.strip().lower())
        if holder is None or not holder.active:
            problems.append(
                Problem(
                    f"unknown or inactive person {a.email}",
                    field="email",
                    source=source,
                    line=a.line,
                )
            )
            continue
        plan.append((asset, holder))
    if problems:
        raise InputError(problems)
    moves = [
        Move(
            asset,
            {"assigned_to_id": holder.id, "deployed_at": now, "acknowledged_at": None},
            {"assigned_to": holder.email},
        )
        for asset, holder in plan
    ]
    fire_many(session, moves, AssetEvent.DEPLOY, actor=actor, at=now)
    outbox.defer(session, _assigned_notices(session, request, plan), request_id=request.id, at=now)
    remaining = sum(1 for a in assets if a.status in (AssetStatus.ORDERED, AssetStatus.DELIVERED))
    if remaining == 0:
        requester = requester_of(session, request)
        notices = [Notice("rolled_out", person(requester.email), request.ref)]
        if request.kind == RequestKind.ONBOARDING:
            notices.append(Notice("rolled_out", team(Role.HR), request.ref))
        fire(session, request, RequestEvent.ROLL_OUT, actor=actor, at=now, notices=notices)
    return Progress(
        request.ref, len(plan), remaining, request.status, [a.serial or "" for a, _ in plan]
    )


def _assigned_notices(
    session: Session, request: Request, plan: list[tuple[Asset, Person]]
) -> list[Notice]:
    """One device_assigned per person handed devices, listing theirs (serial, SKU and item
    name, in the rollout's order): a hundred laptops and docks for one person are one message,
    not two hundred. Its key names the request and the devices, so a retried rollout queues it
    once; the device is the row's own only when there is one."""
    names = dict(
        session.exec(
            select(Item.id, Item.name).where(col(Item.id).in_({a.item_id for a, _ in plan}))
        ).all()
    )
    by_holder: dict[str, list[Asset]] = {}
    for asset, holder in plan:
        by_holder.setdefault(holder.email, []).append(asset)
    notices = []
    for email, assets in by_holder.items():
        serials = sorted(a.serial or "" for a in assets)
        digest = hashlib.sha256("\n".join(serials).encode()).hexdigest()[:16]
        devices = [{"serial": a.serial, "sku": a.sku, "name": names.get(a.item_id)} for a in assets]
        notices.append(
            Notice(
                "device_assigned",
                person(email),
                f"{request.ref}/{digest}",
                {"count": len(devices), "devices": devices},
                asset_id=assets[0].id if len(assets) == 1 else None,
            )
        )
    return notices


# ------------------------------------------------------------------ asset end of life


def acknowledge(
    session: Session, *, serial: str, actor_email: str, now: datetime | None = None
) -> Asset:
    """The person a device was handed to confirms they have it."""
    now = now or utcnow()
    asset = find_asset(session, serial)
    actor = find_actor(session, actor_email)
    if asset.status != AssetStatus.DEPLOYED or asset.assigned_to_id != actor.id:
        raise RuleViolation(f"{asset.serial} is not a device handed to {actor.email}")
    if asset.acknowledged_at is not None:
        return asset
    asset.acknowledged_at = now
    session.add(asset)
    audit.append(
        session,
        actor=actor.email,
        entity="asset",
        entity_id=asset.serial or "",
        request_id=asset.request_id,
        action="acknowledge",
        at=now,
    )
    return asset


# What a device handed to a person is to them (their receipt link's page shows it): waiting for
# their confirmation, confirmed, asked back before they confirmed it (a return IT asked for:
# acknowledge() no longer takes it), or no longer with them (returned, or handed to someone else).
WAITING, CONFIRMED, ASKED_BACK, GONE = "waiting", "confirmed", "asked_back", "gone"


def handed_to(session: Session, request: Request, holder: Person) -> list[Asset]:
    """The devices of a request handed to a person: those they hold, and those the audit trail
    shows were rolled out to them and have gone back since (in the request's order)."""
    rolled_out = {
        serial
        for serial, details in session.exec(
            select(AuditEvent.entity_id, AuditEvent.details).where(
                AuditEvent.request_id == request.id,
                AuditEvent.entity == "asset",
                AuditEvent.action == AssetEvent.DEPLOY.value,
            )
        ).all()
        if (details or {}).get("assigned_to") == holder.email
    }
    return [
        a
        for a in assets_of(session, request)
        if a.assigned_to_id == holder.id or (a.serial is not None and a.serial in rolled_out)
    ]


def receipt_state(asset: Asset, holder: Person) -> str:
    """WAITING, CONFIRMED, ASKED_BACK or GONE: what a device handed to `holder` is to them now."""
    if asset.assigned_to_id != holder.id or asset.status not in (
        AssetStatus.DEPLOYED,
        AssetStatus.RETURN_REQUESTED,
    ):
        return GONE
    if asset.acknowledged_at is not None:
        return CONFIRMED
    return ASKED_BACK if asset.status == AssetStatus.RETURN_REQUESTED else WAITING


def why_not_held(asset: Asset, holder: Person) -> str:
    """Why a device handed to `holder` is no longer theirs to confirm (GONE or ASKED_BACK)."""
    if asset.assigned_to_id == holder.id and asset.status == AssetStatus.RETURN_REQUESTED:
        return "IT asked for it back"
    if asset.assigned_to_id is not None and asset.assigned_to_id != holder.id:
        return "it was handed to someone else"
    return "it was returned"


@dataclass
class Receipt:
    """What a person confirmed: the devices confirmed now, and those they ticked that were
    confirmed before (each with its acknowledged_at)."""

    confirmed: list[Asset]
    already: list[Asset]


def confirm_receipt(
    session: Session,
    *,
    ref: str | int,
    actor_email: str,
    serials: Sequence[str],
    now: datetime | None = None,
) -> Receipt:
    """A person confirms they have the devices of a request handed to them that they ticked
    (their receipt link's form), each through acknowledge(), audited in their name. All or
    nothing: a serial that is not one of theirs, or a device no longer with them, refuses the
    lot. Ticked devices confirmed before are left as they are (and listed as such)."""
    now = now or utcnow()
    request = get_request(session, ref)
    actor = find_actor(session, actor_email)
    if not actor.active:
        raise RuleViolation(f"{actor.email} is not active and cannot confirm receiving devices")
    wanted = list(dict.fromkeys(serials))
    if not wanted:
        raise InputError(Problem("tick the devices you received", field="device"))
    theirs = {a.serial for a in handed_to(session, request, actor)}
    strangers = [s for s in wanted if s not in theirs]
    if strangers:
        raise InputError(
            Problem(
                f"{', '.join(strangers)}: not a device of {request.ref} handed to {actor.email}",
                field="device",
            )
        )
    assets = [find_asset(session, serial) for serial in wanted]  # locked, as they are now
    moved = [a for a in assets if receipt_state(a, actor) in (GONE, ASKED_BACK)]
    if moved:
        raise RuleViolation(
            "; ".join(f"{a.serial} cannot be confirmed: {why_not_held(a, actor)}" for a in moved)
        )
    already = [a for a in assets if a.acknowledged_at is not None]
    confirmed = [
        acknowledge(session, serial=a.serial or "", actor_email=actor.email, now=now)
        for a in assets
        if a.acknowledged_at is None
    ]
    return Receipt(confirmed, already)


def request_return(
    session: Session,
    *,
    serial: str,
    actor_email: str | None = None,
    reason: str = "",
    now: datetime | None = None,
    tell_it: bool = True,
) -> Asset:
    """Ask for a device back (a leaver, a refresh, the end of a lease): its holder is told, and
    IT unless `tell_it` is False (the lifecycle watch, whose alert to IT lists a group's
    devices being asked back: one message, not one per device)."""
    return _return_move(
        session, serial, actor_email, reason, now, AssetEvent.REQUEST_RETURN, tell_it=tell_it
    )


def cancel_return(
    session: Session,
    *,
    serial: str,
    actor_email: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> Asset:
    """Take a return request back: the holder keeps the device (a leave HR withdrew, a refresh
    called off); they and IT are told."""
    return _return_move(session, serial, actor_email, reason, now, AssetEvent.CANCEL_RETURN)


# What IT or HR does to a return: what the refusal says, the event its holder (and IT) hears.
_RETURN_MOVES = {
    AssetEvent.REQUEST_RETURN: ("request returns", "return_requested"),
    AssetEvent.CANCEL_RETURN: ("take return requests back", "return_cancelled"),
}


def _return_move(
    session: Session,
    serial: str,
    actor_email: str | None,
    reason: str,
    now: datetime | None,
    event: AssetEvent,
    *,
    tell_it: bool = True,
) -> Asset:
    """Ask a device back, or take that back: the move, audited with its reason, and the notices
    to its holder and (tell_it) to IT."""
    what, notice = _RETURN_MOVES[event]
    now = now or utcnow()
    try:
        reason = single_line(reason or "")
    except ValueError as exc:
        raise InputError(Problem(str(exc), field="reason")) from None
    actor = _check_actor_role(session, actor_email, {Role.IT.value, Role.HR.value}, what)
    asset = find_asset(session, serial)
    holder = by_id(session, Person, asset.assigned_to_id) if asset.assigned_to_id else None
    audiences = ([team(Role.IT)] if tell_it else []) + ([person(holder.email)] if holder else [])
    context = {"serial": asset.serial, "reason": reason, "by": actor}
    # Asked back again after a return was taken back: told again (the key holds the device's
    # version). A request or cancellation still waiting when the other follows is not sent
    # (stale_notices).
    key = f"{asset.serial or ''}/v{asset.version}"
    notices = [Notice(notice, audience, key, context, asset_id=asset.id) for audience in audiences]
    fire(session, asset, event, actor=actor, at=now, details={"reason": reason}, notices=notices)
    return asset


def receive_return(
    session: Session, *, serial: str, actor_email: str | None = None, now: datetime | None = None
) -> Asset:
    """IT has the device back in hand."""
    now = now or utcnow()
    actor = _check_actor_role(session, actor_email, {Role.IT.value}, "receive returns")
    asset = find_asset(session, serial)
    holder = by_id(session, Person, asset.assigned_to_id) if asset.assigned_to_id else None
    fire(
        session,
        asset,
        AssetEvent.RECEIVE_RETURN,
        actor=actor,
        at=now,
        changes={"returned_at": now, "assigned_to_id": None},
        details={"from": holder.email if holder else None},
    )
    _close_if_done(session, asset.request_id, actor, now)  # its last device held no data
    return asset


def _holds_data(session: Session, asset: Asset) -> bool:
    item = by_id(session, Item, asset.item_id, read_only=True)
    return item is None or item.holds_data


def erase(
    session: Session,
    *,
    serial: str,
    certificate: str,
    method: str,
    provider: str,
    actor_email: str | None = None,
    now: datetime | None = None,
) -> Asset:
    """Record the certified erasure of a returned device; the request closes with its last device."""
    now = now or utcnow()
    problems = []
    values = {}
    for name, value in (("certificate", certificate), ("method", method), ("provider", provider)):
        try:
            values[name] = single_line(value or "")
        except ValueError as exc:
            problems.append(Problem(str(exc), field=name))
            continue
        if not values[name]:
            problems.append(Problem("is required", field=name))
        elif len(values[name]) > 200:
            problems.append(Problem("is longer than 200 characters", field=name))
    if problems:
        raise InputError(problems)
    actor = _check_actor_role(session, actor_email, {Role.IT.value}, "record erasures")
    asset = find_asset(session, serial)
    duplicate = session.exec(
        select(ErasureRecord).where(
            ErasureRecord.certificate_id == values["certificate"],
            ErasureRecord.provider == values["provider"],
        )
    ).first()
    if duplicate is not None and duplicate.asset_id == asset.id:
        return asset  # recorded already: the same command again changes nothing
    if duplicate is not None:
        raise InputError(
            Problem(
                f"certificate {values['certificate']} of {values['provider']} is already recorded for another device",
                field="certificate",
            )
        )
    ASSET.target(asset.status, AssetEvent.ERASE, what=f"asset {asset.serial}")
    assert asset.id is not None
    session.add(
        ErasureRecord(
            asset_id=asset.id,
            method=values["method"],
            certificate_id=values["certificate"],
            provider=values["provider"],
            erased_at=now,
            recorded_by=actor,
        )
    )
    fire(
        session,
        asset,
        AssetEvent.ERASE,
        actor=actor,
        at=now,
        details=values,
        notices=[
            Notice(
                "erasure_certified",
                team(Role.IT),
                asset.serial or "",
                {"serial": asset.serial, **values},
                asset_id=asset.id,
            ),
            Notice(
                "erasure_certified",
                team(Role.PURCHASING),
                asset.serial or "",
                {"serial": asset.serial, **values},
                asset_id=asset.id,
            ),
        ],
    )
    _close_if_done(session, asset.request_id, actor, now)
    return asset


def dispose(
    session: Session,
    *,
    serial: str,
    to: str,
    actor_email: str | None = None,
    now: datetime | None = None,
) -> Asset:
    """After erasure (or once returned, if it holds no data): recycle the device, or send it
    back to the lessor / DaaS provider."""
    now = now or utcnow()
    events = {"recycler": AssetEvent.DISPOSE, "provider": AssetEvent.RETURN_TO_PROVIDER}
    if to not in events:
        raise InputError(Problem(f"unknown destination {to!r} (recycler or provider)", field="to"))
    actor = _check_actor_role(
        session, actor_email, {Role.IT.value, Role.PURCHASING.value}, "dispose of devices"
    )
    asset = find_asset(session, serial)
    bought = asset.ownership == Ownership.BOUGHT
    if bought != (to == "recycler"):
        raise RuleViolation(
            f"{asset.serial} was bought: it goes to a recycler (--to recycler), not to a provider"
            if bought
            else f"{asset.serial} is {asset.ownership}: it goes back to its provider "
            "(--to provider), not to a recycler"
        )
    if asset.status == AssetStatus.RETURNED and _holds_data(session, asset):
        raise RuleViolation(
            f"{asset.serial} ({asset.sku}) holds data: record its certified erasure first "
            f"(procure asset erase {asset.serial} --certificate ID --method M --provider P)"
        )
    fire(session, asset, events[to], actor=actor, at=now)
    return asset


def _close_if_done(session: Session, request_id: int, actor: str, now: datetime) -> None:
    request = lock_request(session, request_id)
    if request.status != RequestStatus.ROLLED_OUT:
        return
    if all(asset_done(a.status, _holds_data(session, a)) for a in assets_of(session, request)):
        requester = requester_of(session, request)
        fire(
            session,
            request,
            RequestEvent.CLOSE,
            actor=actor,
            at=now,
            changes={"closed_at": now},
            details={"reason": "every device is returned, and erased if it holds data"},
            notices=[Notice("closed", person(requester.email), request.ref)],
        )
