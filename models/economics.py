"""The money at every decision: sourcing, buy/lease/DaaS TCO, the delivery plan, the
late-involvement ledger, the budget and demand bundling.

The pure functions take plain values and are tested against hand computations; the
loaders around them read the database. `request_economics` is the one function every
surface (CLI, notifications, the approval page) shows the figures from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import UniqueConstraint, bindparam, func, insert
from sqlmodel import Field, Session, SQLModel, col, select

from models.catalog import AgreementPrice, CallOff, FrameworkAgreement, Item, Offer, Supplier
from models.db import by_id
from models.lifecycle import OPEN_REQUEST_STATES, RequestStatus
from models.org import Budget, CostCentre
from models.pipeline import DeviceCosts, Economics, LateCosts
from models.reference import shared
from models.requests import Quote, Request, RequestLine, format_ref
from models.types import Money, UTCDateTime, money, utcnow

ZERO = Decimal("0.00")
KINDS = ("unclear_terms", "individual_order", "missed_delivery_planning")
LABELS = {
    "unclear_terms": "Unclear contract terms",
    "individual_order": "Individual order instead of a framework agreement",
    "missed_delivery_planning": "Delay from missing delivery planning",
}
# Requests whose demand is still open (not ordered, not ended): candidates for bundling.
DEMAND_STATES = frozenset({*OPEN_REQUEST_STATES, RequestStatus.APPROVED})
# Requests whose money is spent (ordered and after).
SPENT_STATES = frozenset(
    {
        RequestStatus.ORDERED,
        RequestStatus.DELIVERY_SCHEDULED,
        RequestStatus.DELIVERED,
        RequestStatus.ROLLED_OUT,
        RequestStatus.CLOSED,
    }
)


# The late-involvement ledger of an ordered request, as it stood when it was ordered.
class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entry"
    __table_args__ = (UniqueConstraint("request_id", "kind"),)
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    kind: str = Field(max_length=32, index=True)
    devices_incurred: int = 0
    devices_avoided: int = 0
    per_device: Decimal = Field(sa_type=Money)
    incurred: Decimal = Field(sa_type=Money)
    avoided: Decimal = Field(sa_type=Money)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def items_by_id(session: Session, ids: Sequence[int]) -> Sequence[Item]:
    """The catalog items with these ids (one SELECT built once): shared, read-only rows."""
    return shared(session, _ITEMS, {"ids": list(ids)})


# The statements a step runs, built once (building and keying a statement costs more than
# running it on SQLite) and run with new parameters.
_ITEMS = select(Item).where(col(Item.id).in_(bindparam("ids", expanding=True)))
_AGREEMENTS = select(FrameworkAgreement).where(
    col(FrameworkAgreement.id).in_(bindparam("ids", expanding=True))
)
_OFFERS_OF_ITEMS = (
    select(Offer)
    .where(col(Offer.item_id).in_(bindparam("items", expanding=True)))
    .order_by(col(Offer.id))
)
_QUOTES = select(Quote).where(Quote.request_id == bindparam("id")).order_by(col(Quote.id))
_SUPPLIER_NAMES = select(Supplier.id, Supplier.name)
_CALLED_OFF = (
    select(CallOff.agreement_id, func.sum(CallOff.quantity))
    .where(col(CallOff.agreement_id).in_(bindparam("ids", expanding=True)))
    .group_by(col(CallOff.agreement_id))
)
_AGREEMENT_PRICES = (
    select(FrameworkAgreement, AgreementPrice)
    .join(AgreementPrice, AgreementPrice.agreement_id == FrameworkAgreement.id)  # type: ignore[arg-type]
    .where(
        AgreementPrice.item_id == bindparam("item_id"),
        FrameworkAgreement.valid_from <= bindparam("day"),
        FrameworkAgreement.valid_to >= bindparam("day"),
        FrameworkAgreement.currency == bindparam("currency"),
    )
)
_BUDGET = select(Budget).where(
    Budget.cost_centre_id == bindparam("centre"), Budget.fiscal_year == bindparam("year")
)
_SPENDING = (
    select(Request.status, func.sum(Request.total))
    .where(
        Request.cost_centre_id == bindparam("centre"),
        col(Request.decided_at) >= bindparam("start"),
        col(Request.decided_at) < bindparam("end"),
        col(Request.status).in_([RequestStatus.APPROVED, *SPENT_STATES]),
    )
    .group_by(col(Request.status))
)
_OPEN_DEMAND = (
    select(RequestLine.item_id, Request.id, func.sum(RequestLine.quantity))
    .join(Request, Request.id == RequestLine.request_id)  # type: ignore[arg-type]
    .where(
        col(RequestLine.item_id).in_(bindparam("items", expanding=True)),
        # Bought together: a leased or DaaS line is a service contract, not units to order.
        RequestLine.ownership == "bought",
        col(Request.status).in_(list(DEMAND_STATES)),
        Request.needed_by >= bindparam("start"),
        Request.needed_by <= bindparam("end"),
        Request.id != bindparam("exclude"),
    )
    .group_by(col(RequestLine.item_id), col(Request.id))
    .order_by(col(Request.id))
)


# ------------------------------------------------------------------ sourcing


@dataclass(frozen=True)
class Tier:
    """A volume tier: from min_quantity to max_quantity units (None: and above)."""

    min_quantity: int
    max_quantity: int | None
    unit_price: Decimal

    def covers(self, quantity: int) -> bool:
        return self.min_quantity <= quantity and (
            self.max_quantity is None or quantity <= self.max_quantity
        )


def tier_for(tiers: Iterable[Tier], quantity: int) -> Tier | None:
    """The tier a quantity falls in, or None if the table does not reach it."""
    return next((t for t in tiers if t.covers(quantity)), None)


@dataclass(frozen=True)
class AgreementOption:
    """One agreement that can supply a line: its tier for the quantity and what is left of it."""

    agreement: FrameworkAgreement
    tier: Tier
    remaining: int | None  # units left under the committed volume; None: no cap

    @property
    def unit_price(self) -> Decimal:
        return self.tier.unit_price


def called_off(session: Session, agreement_ids: Sequence[int]) -> dict[int, int]:
    """Units already ordered under each agreement."""
    if not agreement_ids:
        return {}
    rows = session.execute(_CALLED_OFF, {"ids": list(agreement_ids)}).all()
    return {agreement_id: int(total or 0) for agreement_id, total in rows}


def agreement_options(
    session: Session, *, item_id: int, quantity: int, day: date, currency: str
) -> list[AgreementOption]:
    """Active agreements that can supply `quantity` of the item on `day`, cheapest first."""
    rows = shared(
        session, _AGREEMENT_PRICES, {"item_id": item_id, "day": day, "currency": currency}
    )
    tiers: dict[int, tuple[FrameworkAgreement, list[Tier]]] = {}
    for agreement, price in rows:
        assert agreement.id is not None
        tiers.setdefault(agreement.id, (agreement, []))[1].append(
            Tier(price.min_quantity, price.max_quantity, price.unit_price)
        )
    used = called_off(session, list(tiers))
    options = []
    for agreement_id, (agreement, table) in tiers.items():
        tier = tier_for(sorted(table, key=lambda t: t.min_quantity), quantity)
        if tier is None:
            continue
        remaining = (
            None
            if agreement.committed_volume is None
            else agreement.committed_volume - used.get(agreement_id, 0)
        )
        if remaining is not None and remaining < quantity:
            continue
        options.append(AgreementOption(agreement, tier, remaining))
    return sorted(options, key=lambda o: (o.unit_price, o.agreement.code))


def agreement_tiers(session: Session, agreement_id: int, item_id: int) -> list[Tier]:
    rows = session.exec(
        select(AgreementPrice)
        .where(AgreementPrice.agreement_id == agreement_id, AgreementPrice.item_id == item_id)
        .order_by(col(AgreementPrice.min_quantity))
    ).all()
    return [Tier(r.min_quantity, r.max_quantity, r.unit_price) for r in rows]


# ------------------------------------------------------------------ delivery plan


@dataclass(frozen=True)
class DeliveryPlan:
    """When the order must go out for the devices to arrive, prepared, by the needed-by date."""

    needed_by: date
    lead_time_days: int
    preparation_days: int
    order_by: date
    days_left: int  # until the order-by date; negative: it is past
    ordered_on: date | None

    @property
    def missed(self) -> bool:
        """Ordered after the order-by date, or not yet ordered and the date has passed."""
        if self.ordered_on is not None:
            return self.ordered_on > self.order_by
        return self.days_left < 0


def order_by_date(needed_by: date, lead_time_days: int, preparation_days: int) -> date:
    """order-by = needed-by - supplier lead time - preparation days."""
    return needed_by - timedelta(days=lead_time_days + preparation_days)


def delivery_plan(
    needed_by: date,
    lead_time_days: int,
    preparation_days: int,
    today: date,
    ordered_on: date | None,
) -> DeliveryPlan:
    order_by = order_by_date(needed_by, lead_time_days, preparation_days)
    return DeliveryPlan(
        needed_by, lead_time_days, preparation_days, order_by, (order_by - today).days, ordered_on
    )


# ------------------------------------------------------------------ total cost of ownership


@dataclass(frozen=True)
class TcoOption:
    """One way to get a line's devices over a term: buy, lease or Device-as-a-Service."""

    option: str  # buy | lease | daas
    provider: str
    term_months: int
    capex: Decimal
    opex: Decimal
    residual: Decimal
    total: Decimal
    monthly: Decimal
    includes: tuple[str, ...]
    cheapest: bool = False


def _services(costs: DeviceCosts, term_months: int, included: Iterable[str]) -> Decimal:
    """What the organisation pays per device for the services an offer does not include."""
    included = set(included)
    total = ZERO
    if "rollout" not in included:
        total += costs.rollout
    if "support" not in included:
        total += costs.support_per_month * term_months
    if "return" not in included:
        total += costs.return_handling
    if "erasure" not in included:
        total += costs.erasure
    return total


# A peripheral's (economics.peripheral_categories): nobody rolls out, supports or erases a headset.
NO_DEVICE_COSTS = DeviceCosts(
    rollout=ZERO, support_per_month=ZERO, return_handling=ZERO, erasure=ZERO
)


def tco_options(
    *,
    quantity: int,
    purchase_price: Decimal,
    purchase_provider: str,
    offers: Sequence[tuple[Offer, str]],
    costs: DeviceCosts,
    term_months: int,
) -> list[TcoOption]:
    """Buy vs lease vs DaaS for `quantity` devices over `term_months`; the cheapest is marked.

    buy:   capex = price; opex = rollout + support x term + return + erasure; minus residual value
    lease/DaaS: opex = monthly rate x term + the services the offer does not include
    """
    options: list[TcoOption] = []
    same_term = [(o, name) for o, name in offers if o.term_months == term_months]
    residual = max((o.buy_residual_value for o, _ in same_term), default=ZERO)
    capex = money(purchase_price * quantity)
    opex = money(_services(costs, term_months, ()) * quantity)
    residual_total = money(residual * quantity)
    total = money(capex + opex - residual_total)
    options.append(
        TcoOption(
            "buy",
            purchase_provider,
            term_months,
            capex,
            opex,
            residual_total,
            total,
            money(total / term_months),
            (),
        )
    )
    for kind in ("lease", "daas"):
        for offer, provider in same_term:
            if offer.kind != kind:
                continue
            per_device = offer.monthly_rate * term_months + _services(
                costs, term_months, offer.includes()
            )
            total = money(per_device * quantity)
            options.append(
                TcoOption(
                    kind,
                    provider,
                    term_months,
                    ZERO,
                    total,
                    ZERO,
                    total,
                    money(total / term_months),
                    tuple(offer.includes()),
                )
            )
    cheapest = min(options, key=lambda o: (o.total, o.option, o.provider))
    return [
        TcoOption(**{**asdict(o), "includes": o.includes, "cheapest": o is cheapest})
        for o in options
    ]


# ------------------------------------------------------------------ the late-involvement ledger


@dataclass(frozen=True)
class LineFacts:
    """What the ledger needs to know about one line."""

    quantity: int  # the units that count as devices (none for a peripheral's line)
    sourcing: str  # framework | individual
    complete_terms: bool  # ordered under an agreement whose terms are complete
    framework_available: bool  # an agreement covered the item when it was requested
    # other open demand for the item, ordered with it, would have reached a better agreement price
    bundling_possible: bool


@dataclass(frozen=True)
class LedgerLine:
    """One source of late-involvement cost: devices it hit, devices it spared, the money."""

    kind: str
    devices_incurred: int
    devices_avoided: int
    per_device: Decimal
    incurred: Decimal
    avoided: Decimal

    @property
    def label(self) -> str:
        return LABELS[self.kind]


def ledger(
    lines: Sequence[LineFacts], *, missed_planning: bool, rates: LateCosts
) -> list[LedgerLine]:
    """Per source of error, the devices it costs (incurred) and the devices early work spared (avoided).

    unclear terms:     every device not ordered under an agreement with complete terms
    individual order:  every device ordered alone where an agreement covered it, or where
                       ordering it with other open demand reached a better agreement price
                       (framework devices count as avoided; devices nothing could have priced
                       better, neither)
    delivery planning: every device of a request ordered after its order-by date
    """
    devices = sum(ln.quantity for ln in lines)
    unclear = sum(ln.quantity for ln in lines if not ln.complete_terms)
    individual = sum(
        ln.quantity
        for ln in lines
        if ln.sourcing == "individual" and (ln.framework_available or ln.bundling_possible)
    )
    # Devices under an agreement or a lease/DaaS contract were not ordered one by one.
    framework = sum(ln.quantity for ln in lines if ln.sourcing in ("framework", "offer"))
    late = devices if missed_planning else 0
    counts = {
        "unclear_terms": (unclear, devices - unclear, rates.unclear_terms),
        "individual_order": (individual, framework, rates.individual_order),
        "missed_delivery_planning": (late, devices - late, rates.missed_delivery_planning),
    }
    return [
        LedgerLine(kind, hit, spared, rate, money(rate * hit), money(rate * spared))
        for kind, (hit, spared, rate) in counts.items()
    ]


# ------------------------------------------------------------------ budgets


def fiscal_year(day: date, start_month: int) -> int:
    """The fiscal year a day falls in, named by the calendar year it starts in."""
    return day.year if day.month >= start_month else day.year - 1


def fiscal_range(year: int, start_month: int) -> tuple[date, date]:
    """First day of the fiscal year and first day of the next."""
    return date(year, start_month, 1), date(year + 1, start_month, 1)


@dataclass(frozen=True)
class BudgetStatus:
    """A cost centre's budget for one fiscal year: committed on approval, spent on order."""

    cost_centre: str
    fiscal_year: int
    amount: Decimal | None  # None: no budget set
    committed: Decimal
    spent: Decimal
    request_total: Decimal  # this request, if it is not yet counted in the figures above
    policy: str
    counted: bool = False  # approved or ordered: the request is in committed or spent already

    @property
    def remaining(self) -> Decimal | None:
        return None if self.amount is None else money(self.amount - self.committed - self.spent)

    @property
    def exceeds(self) -> bool:
        """Whether the request, not yet counted, would take more than is left."""
        remaining = self.remaining
        return not self.counted and remaining is not None and self.request_total > remaining

    @property
    def overspent(self) -> bool:
        """Whether the cost centre has committed or spent more than its budget (a budget
        lowered after approvals, or approvals the warn policy let through)."""
        remaining = self.remaining
        return remaining is not None and remaining < 0


def budget_status(
    session: Session, *, request: Request, economics: Economics, today: date
) -> BudgetStatus:
    """The budget of the request's cost centre for the fiscal year of its approval (or today)."""
    decided = request.decided_at.date() if request.decided_at else today
    year = fiscal_year(decided, economics.fiscal_year_start_month)
    start, end = fiscal_range(year, economics.fiscal_year_start_month)
    centre = by_id(session, CostCentre, request.cost_centre_id, read_only=True)
    budgets = shared(session, _BUDGET, {"centre": request.cost_centre_id, "year": year})
    budget = budgets[0] if budgets else None
    start_at = datetime(start.year, start.month, start.day, tzinfo=UTC)
    end_at = datetime(end.year, end.month, end.day, tzinfo=UTC)
    sums = dict(
        session.execute(
            _SPENDING, {"centre": request.cost_centre_id, "start": start_at, "end": end_at}
        ).all()
    )
    committed = money(sums.get(RequestStatus.APPROVED, ZERO) or ZERO)
    spent = money(sum((v or ZERO for k, v in sums.items() if k in SPENT_STATES), ZERO))
    counted = request.status == RequestStatus.APPROVED or request.status in SPENT_STATES
    return BudgetStatus(
        centre.code if centre else "",
        year,
        budget.amount if budget else None,
        committed,
        spent,
        ZERO if counted else request.total,
        economics.budget_policy,
        counted,
    )


# ------------------------------------------------------------------ demand bundling


@dataclass(frozen=True)
class BundlingChance:
    """Open demand for the same item across requests, and the price it would reach ordered together."""

    sku: str
    requests: tuple[str, ...]
    quantity: int  # this request's units
    combined_quantity: int
    unit_price: Decimal  # this line's price today
    combined_price: Decimal | None  # the best tier the combined quantity reaches, if any
    saving: Decimal  # on this request's units

    @property
    def better_price(self) -> bool:
        """Ordered together, the units reach an agreement price below this line's: only then
        was bundling a chance missed by ordering alone (the ledger's individual order)."""
        return self.combined_price is not None and self.combined_price < self.unit_price


def open_demand(
    session: Session,
    *,
    item_ids: Sequence[int],
    around: date,
    window_days: int,
    exclude: int | None,
) -> dict[int, list[tuple[str, int]]]:
    """Per item: (request ref, units) of the bought lines of open requests needing it within the
    window (demand that could be ordered together; leased and DaaS lines are not bought)."""
    if not item_ids:
        return {}
    rows = session.execute(
        _OPEN_DEMAND,
        {
            "items": list(item_ids),
            "start": around - timedelta(days=window_days),
            "end": around + timedelta(days=window_days),
            "exclude": exclude or 0,
        },
    ).all()
    out: dict[int, list[tuple[str, int]]] = {}
    for item_id, request_id, units in rows:
        out.setdefault(item_id, []).append((format_ref(request_id or 0), int(units)))
    return out


# ------------------------------------------------------------------ the request's economics


@dataclass
class LineEconomics:
    """Everything money about one line."""

    line: RequestLine
    item: Item
    agreement: FrameworkAgreement | None
    best: AgreementOption | None  # the cheapest agreement that covers it today
    individual_price: Decimal  # what it costs ordered alone: list price or the line's own price
    bundling: BundlingChance | None
    tco: list[TcoOption]
    quotes: list[Quote] = field(default_factory=list)
    offer: Offer | None = None
    # Offers for the item over another term than the comparison's: named, not compared.
    other_terms: list[tuple[Offer, str]] = field(default_factory=list)

    @property
    def complete_terms(self) -> bool:
        contract = self.agreement or self.offer
        return contract is not None and not contract.missing_terms()


def _line_economics(
    session: Session, request: Request, lines: list[RequestLine], economics: Economics, today: date
) -> list[LineEconomics]:
    items = {i.id: i for i in items_by_id(session, [ln.item_id for ln in lines])}
    agreement_ids = [ln.agreement_id for ln in lines if ln.agreement_id]
    agreements = {a.id: a for a in shared(session, _AGREEMENTS, {"ids": agreement_ids})}
    suppliers: dict[int, str] = {id_: name for id_, name in shared(session, _SUPPLIER_NAMES, {})}
    item_ids = [i for i in items if i is not None]
    offers = shared(session, _OFFERS_OF_ITEMS, {"items": item_ids})
    quotes = session.scalars(_QUOTES, {"id": request.id}).all()
    demand = (
        open_demand(
            session,
            item_ids=item_ids,
            around=request.needed_by,
            window_days=economics.bundling_window_days,
            exclude=request.id,
        )
        if request.status in DEMAND_STATES
        else {}
    )
    out = []
    for ln in lines:
        item = items[ln.item_id]
        options = agreement_options(
            session, item_id=ln.item_id, quantity=ln.quantity, day=today, currency=request.currency
        )
        best = options[0] if options else None
        agreement = agreements.get(ln.agreement_id) if ln.agreement_id else None
        individual = ln.unit_price if ln.sourcing == "individual" else ln.list_price
        others = demand.get(ln.item_id, [])
        chance = None
        if others and ln.sourcing != "offer":
            combined = ln.quantity + sum(units for _, units in others)
            combined_options = agreement_options(
                session, item_id=ln.item_id, quantity=combined, day=today, currency=request.currency
            )
            combined_price = combined_options[0].unit_price if combined_options else None
            saving = (
                money(max(ZERO, ln.unit_price - combined_price) * ln.quantity)
                if combined_price is not None
                else ZERO
            )
            chance = BundlingChance(
                ln.sku,
                tuple(ref for ref, _ in others),
                ln.quantity,
                combined,
                ln.unit_price,
                combined_price,
                saving,
            )
        offer = next((o for o in offers if o.id == ln.offer_id), None) if ln.offer_id else None
        if offer is not None:
            # A leased or DaaS line: buying is the alternative, at the best price to buy at.
            purchase_price = best.unit_price if best else ln.list_price
            buy_supplier = best.agreement.supplier_id if best else item.supplier_id
            provider = suppliers.get(buy_supplier, "")
        else:
            # A bought line: whom it is bought from (its quote's, agreement's or item's).
            purchase_price = ln.unit_price
            provider = supplier_of(session, ln).name
        item_offers = [
            (o, suppliers.get(o.supplier_id, "")) for o in offers if o.item_id == ln.item_id
        ]
        term = ln.term_months or economics.term_months
        tco = tco_options(
            quantity=ln.quantity,
            purchase_price=purchase_price,
            purchase_provider=provider,
            offers=item_offers,
            costs=economics.device_costs if economics.is_device(item.category) else NO_DEVICE_COSTS,
            term_months=term,
        )
        out.append(
            LineEconomics(
                ln,
                item,
                agreement,
                best,
                individual,
                chance,
                tco,
                [q for q in quotes if q.line_no == ln.line_no],
                offer,
                [(o, name) for o, name in item_offers if o.term_months != term],
            )
        )
    return out


_SUPPLIER_BY_CODE = select(Supplier).where(Supplier.code == bindparam("code"))


@dataclass(frozen=True)
class LineSupplier:
    """Where a line is bought: the supplier its purchase order goes to (code and name) and the
    lead time its order-by date counts back."""

    code: str
    name: str
    lead_time_days: int


def supplier_of(session: Session, line: RequestLine) -> LineSupplier:
    """A line's supplier: the recorded quote's it is bought at (a quote names a catalog supplier
    by its code, or another supplier by name), else the agreement's, the lease or DaaS offer's,
    or the item's. A supplier outside the catalog has no lead time on file: its line is planned
    with the catalog supplier's. reports.costs() follows the same rule in SQL."""
    source: Any = (
        by_id(session, FrameworkAgreement, line.agreement_id, read_only=True)
        if line.agreement_id
        else by_id(session, Offer, line.offer_id, read_only=True)
        if line.offer_id
        else by_id(session, Item, line.item_id, read_only=True)
    )
    catalog = by_id(session, Supplier, source.supplier_id, read_only=True)
    assert catalog is not None  # a foreign key
    quote = by_id(session, Quote, line.quote_id) if line.quote_id else None
    if quote is None:
        return LineSupplier(catalog.code, catalog.name, catalog.lead_time_days)
    found = shared(session, _SUPPLIER_BY_CODE, {"code": quote.supplier})
    named = found[0] if found else None
    if named is None:
        return LineSupplier(quote.supplier, quote.supplier, catalog.lead_time_days)
    return LineSupplier(named.code, named.name, named.lead_time_days)


def lead_time(session: Session, lines: Sequence[RequestLine]) -> int:
    """The longest lead time of the suppliers the lines are bought from (supplier_of)."""
    return max((supplier_of(session, ln).lead_time_days for ln in lines), default=0)


def facts(lines: Sequence[LineEconomics], economics: Economics) -> list[LineFacts]:
    return [
        LineFacts(
            le.line.quantity if economics.is_device(le.item.category) else 0,
            le.line.sourcing,
            le.complete_terms,
            le.line.framework_available or le.best is not None,
            le.bundling is not None and le.bundling.better_price,
        )
        for le in lines
    ]


def _money_view(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def request_economics(
    session: Session, request: Request, *, economics: Economics, today: date
) -> dict[str, Any]:
    """Sourcing, TCO, delivery plan, ledger, budget, bundling and terms of one request, as plain data."""
    from models.actions import lines_of

    lines = lines_of(session, request)
    per_line = _line_economics(session, request, lines, economics, today)
    ordered_on = request.ordered_at.date() if request.ordered_at else None
    plan = delivery_plan(
        request.needed_by, lead_time(session, lines), economics.preparation_days, today, ordered_on
    )
    frozen = session.exec(select(LedgerEntry).where(LedgerEntry.request_id == request.id)).all()
    if frozen:
        entries = [
            LedgerLine(
                e.kind, e.devices_incurred, e.devices_avoided, e.per_device, e.incurred, e.avoided
            )
            for e in sorted(frozen, key=lambda e: KINDS.index(e.kind))
        ]
    else:
        entries = ledger(
            facts(per_line, economics),
            missed_planning=plan.missed,
            rates=economics.late_involvement,
        )
    budget = budget_status(session, request=request, economics=economics, today=today)
    return {
        "sourcing": [
            {
                "line": le.line.line_no,
                "sku": le.line.sku,
                "quantity": le.line.quantity,
                "mode": le.line.sourcing,
                "agreement": le.agreement.code if le.agreement else None,
                "offer": (
                    {
                        "kind": le.offer.kind,
                        "monthly_rate": str(le.offer.monthly_rate),
                        "term_months": le.offer.term_months,
                        "includes": le.offer.includes(),
                    }
                    if le.offer
                    else None
                ),
                "unit_price": str(le.line.unit_price),
                "list_price": str(le.line.list_price),
                "framework_price": _money_view(le.best.unit_price if le.best else None),
                "framework_agreement": le.best.agreement.code if le.best else None,
                "individual_price": str(le.individual_price),
                # what ordering this line individually costs more than under the best agreement
                "difference": _money_view(
                    money((le.individual_price - le.best.unit_price) * le.line.quantity)
                    if le.best and le.line.sourcing != "offer"
                    else None
                ),
                "justification": le.line.sourcing_note,
                "missing_terms": (le.agreement or le.offer).missing_terms()  # type: ignore[union-attr]
                if (le.agreement or le.offer)
                else ["warranty", "sla", "returns", "erasure"],
                "quotes": [
                    {
                        "id": q.id,
                        "supplier": q.supplier,
                        "unit_price": str(q.unit_price),
                        "total": str(money(q.unit_price * le.line.quantity)),
                        "valid_until": q.valid_until.isoformat() if q.valid_until else None,
                        "note": q.note,
                    }
                    for q in le.quotes
                ],
            }
            for le in per_line
        ],
        "tco": [
            {
                "line": le.line.line_no,
                "sku": le.line.sku,
                "options": [
                    {
                        "option": o.option,
                        "provider": o.provider,
                        "term_months": o.term_months,
                        "capex": str(o.capex),
                        "opex": str(o.opex),
                        "residual": str(o.residual),
                        "total": str(o.total),
                        "monthly": str(o.monthly),
                        "includes": list(o.includes),
                        "cheapest": o.cheapest,
                    }
                    for o in le.tco
                ],
                # Not compared: the comparison runs over one term (the line's or the pipeline's).
                "other_terms": [
                    {"option": o.kind, "provider": name, "term_months": o.term_months}
                    for o, name in le.other_terms
                ],
            }
            for le in per_line
        ],
        "delivery": {
            "needed_by": plan.needed_by.isoformat(),
            "lead_time_days": plan.lead_time_days,
            "preparation_days": plan.preparation_days,
            "order_by": plan.order_by.isoformat(),
            "days_left": plan.days_left,
            "ordered_on": ordered_on.isoformat() if ordered_on else None,
            "missed": plan.missed,
        },
        "ledger": {
            "frozen": bool(frozen),
            "entries": [
                {
                    "kind": e.kind,
                    "label": e.label,
                    "per_device": str(e.per_device),
                    "devices": e.devices_incurred,
                    "incurred": str(e.incurred),
                    "devices_avoided": e.devices_avoided,
                    "avoided": str(e.avoided),
                }
                for e in entries
            ],
            # Lines the ledger counts no devices for (their category is a peripheral's).
            "peripherals": [
                {
                    "line": le.line.line_no,
                    "sku": le.line.sku,
                    "category": le.item.category,
                    "quantity": le.line.quantity,
                }
                for le in per_line
                if not economics.is_device(le.item.category)
            ],
            "incurred": str(money(sum((e.incurred for e in entries), ZERO))),
            "avoided": str(money(sum((e.avoided for e in entries), ZERO))),
        },
        "budget": {
            "cost_centre": budget.cost_centre,
            "fiscal_year": budget.fiscal_year,
            "amount": _money_view(budget.amount),
            "committed": str(budget.committed),
            "spent": str(budget.spent),
            "remaining": _money_view(budget.remaining),
            # The request's own total; `counted`: already in committed or spent above.
            "this_request": str(request.total),
            "counted": budget.counted,
            "overspent": budget.overspent,
            "exceeds": budget.exceeds,
            "policy": budget.policy,
        },
        "bundling": [
            {
                "sku": le.bundling.sku,
                "with": list(le.bundling.requests),
                "quantity": le.bundling.quantity,
                "combined_quantity": le.bundling.combined_quantity,
                "unit_price": str(le.bundling.unit_price),
                "combined_price": _money_view(le.bundling.combined_price),
                "saving": str(le.bundling.saving),
            }
            for le in per_line
            if le.bundling is not None
        ],
        "terms": terms_view(request.terms),
    }


TERMS = ("warranty", "sla", "returns", "erasure")


def terms_view(terms: dict[str, Any]) -> dict[str, Any]:
    """The joint-review checklist: each contract term, confirmed by whom (or by which agreement)."""
    return {
        "confirmed": {name: terms[name] for name in TERMS if name in terms},
        "missing": [name for name in TERMS if name not in terms],
    }


def terms_from_agreements(
    lines: Sequence[RequestLine],
    agreements: dict[int, FrameworkAgreement],
    offers: dict[int, Offer] | None = None,
) -> dict[str, Any]:
    """The terms every line's contract (its agreement, or its lease/DaaS offer) settles: the
    checklist starts with them confirmed."""
    offers = offers or {}
    contracts: list[FrameworkAgreement | Offer] = []
    for ln in lines:
        if ln.agreement_id in agreements:
            contracts.append(agreements[ln.agreement_id])
        elif ln.offer_id in offers:
            contracts.append(offers[ln.offer_id])
    if not lines or len(contracts) != len(lines):
        return {}
    settled = {}
    for name in TERMS:
        if all(name not in c.missing_terms() for c in contracts):
            sources = sorted(
                {c.code if isinstance(c, FrameworkAgreement) else c.label for c in contracts}
            )
            settled[name] = {"by": "agreement", "source": ", ".join(sources)}
    return settled


_LEDGER_INSERT = insert(LedgerEntry.__table__)  # type: ignore[attr-defined]


def freeze_ledger(
    session: Session,
    request: Request,
    lines: list[RequestLine],
    *,
    economics: Economics,
    today: date,
    at: datetime,
) -> list[LedgerLine]:
    """Record the ledger as it stands at order time (reports read these rows), in one INSERT;
    returns its lines."""
    assert request.id is not None
    per_line = _line_economics(session, request, lines, economics, today)
    plan = delivery_plan(
        request.needed_by, lead_time(session, lines), economics.preparation_days, today, today
    )
    entries = ledger(
        facts(per_line, economics), missed_planning=plan.missed, rates=economics.late_involvement
    )
    if entries:
        session.connection().execute(
            _LEDGER_INSERT,
            [
                {
                    "request_id": request.id,
                    "kind": entry.kind,
                    "devices_incurred": entry.devices_incurred,
                    "devices_avoided": entry.devices_avoided,
                    "per_device": entry.per_device,
                    "incurred": entry.incurred,
                    "avoided": entry.avoided,
                    "at": at,
                }
                for entry in entries
            ],
        )
    return entries
