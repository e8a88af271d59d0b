"""Reports over many requests: spend, savings, late-involvement cost, cycle times.

Each report aggregates in SQL (a hundred thousand requests answer in about a second on
SQLite) and returns plain data: a title, the table's columns and rows, and totals. The CLI
prints it, writes it as JSON or CSV, or draws it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, and_, case, extract, func, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from models.catalog import FrameworkAgreement, Item, Offer, Supplier
from models.economics import KINDS, LABELS, LedgerEntry
from models.lifecycle import StageStatus
from models.org import CostCentre
from models.requests import Quote, Request, RequestLine, Stage
from models.types import money

ZERO = Decimal("0.00")
# The stage states a decision leaves (cycle_times): approved, rejected, sent back.
DECIDED = (StageStatus.APPROVED.value, StageStatus.REJECTED.value, StageStatus.SENT_BACK.value)
NAMES = ("costs", "savings", "risk", "cycle-times")


@dataclass
class Report:
    """A report's data: one or more tables of rows, and totals."""

    name: str
    title: str
    period: dict[str, str | None]
    tables: dict[str, list[dict[str, Any]]]
    totals: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "report": self.name,
            "title": self.title,
            "period": self.period,
            "tables": self.tables,
            "totals": self.totals,
        }


def _bounds(
    start: date | None, end: date | None, zone: tzinfo
) -> tuple[datetime | None, datetime | None]:
    """[start, end] as instants: from the first day's midnight to the end of the last day, in
    the organisation's time zone."""
    lo = datetime.combine(start, time.min, zone) if start else None
    hi = datetime.combine(end, time.max, zone) if end else None
    return lo, hi


def _within(column: Any, start: date | None, end: date | None, zone: tzinfo) -> Any:
    lo, hi = _bounds(start, end, zone)
    clauses = [column.is_not(None)]
    if lo is not None:
        clauses.append(column >= lo)
    if hi is not None:
        clauses.append(column <= hi)
    return and_(*clauses)


def _period(start: date | None, end: date | None) -> dict[str, str | None]:
    return {"from": start.isoformat() if start else None, "to": end.isoformat() if end else None}


def _dec(value: Any) -> Decimal:
    return money(value) if value is not None else ZERO


def _peripherals(session: Session, given: Collection[str] | None) -> list[str]:
    """The catalog categories that are no devices (a dock, a headset): `given`, else the active
    pipeline's economics.peripheral_categories, as the ledger and the TCO count them."""
    if given is None:
        from models.pipeline import active

        given = active(session)[1].economics.peripheral_categories
    return [c.lower() for c in given]


def _devices(peripherals: Sequence[str]) -> Any:
    """The units of a line that are devices: its quantity, unless its item is a peripheral."""
    if not peripherals:
        return func.sum(RequestLine.quantity)
    return func.sum(
        case((func.lower(Item.category).in_(peripherals), 0), else_=col(RequestLine.quantity))
    )


def costs(
    session: Session,
    *,
    start: date | None = None,
    end: date | None = None,
    zone: tzinfo = UTC,
    peripherals: Collection[str] | None = None,
) -> Report:
    """Spend of ordered requests, by cost centre and by supplier: units ordered, and of them
    devices (a dock or a headset is no device: `peripherals`, the active pipeline's by default)."""
    ordered = _within(col(Request.ordered_at), start, end, zone)
    devices = _devices(_peripherals(session, peripherals))
    by_centre = session.execute(
        select(
            col(CostCentre.code),
            col(CostCentre.name),
            func.count(func.distinct(Request.id)),
            func.sum(RequestLine.quantity),
            devices,
            func.sum(RequestLine.total),
        )
        .join(Request, Request.id == RequestLine.request_id)  # type: ignore[arg-type]
        .join(Item, Item.id == RequestLine.item_id)  # type: ignore[arg-type]
        .join(CostCentre, CostCentre.id == Request.cost_centre_id)  # type: ignore[arg-type]
        .where(ordered)
        .group_by(col(CostCentre.code), col(CostCentre.name))
        .order_by(func.sum(RequestLine.total).desc())
    ).all()
    # A line's supplier as its purchase order had it (models.economics.supplier_of): the quote
    # it was bought at (a catalog supplier's code or another's name), else the agreement's,
    # the offer's or the item's.
    quoted = aliased(Supplier)
    catalog_id = func.coalesce(FrameworkAgreement.supplier_id, Offer.supplier_id, Item.supplier_id)
    code = case((col(Quote.id).is_not(None), col(Quote.supplier)), else_=col(Supplier.code))
    name = case(
        (col(Quote.id).is_not(None), func.coalesce(quoted.name, Quote.supplier)),
        else_=col(Supplier.name),
    )
    by_supplier = session.execute(
        select(
            code,
            name,
            func.count(func.distinct(Request.id)),
            func.sum(RequestLine.quantity),
            devices,
            func.sum(RequestLine.total),
        )
        .select_from(RequestLine)
        .join(Request, Request.id == RequestLine.request_id)  # type: ignore[arg-type]
        .join(Item, Item.id == RequestLine.item_id)  # type: ignore[arg-type]
        .outerjoin(FrameworkAgreement, FrameworkAgreement.id == RequestLine.agreement_id)  # type: ignore[arg-type]
        .outerjoin(Offer, Offer.id == RequestLine.offer_id)  # type: ignore[arg-type]
        .outerjoin(Quote, Quote.id == RequestLine.quote_id)  # type: ignore[arg-type]
        .outerjoin(quoted, col(quoted.code) == col(Quote.supplier))
        .join(Supplier, col(Supplier.id) == catalog_id)
        .where(ordered)
        .group_by(code, name)
        .order_by(func.sum(RequestLine.total).desc())
    ).all()
    centre_rows = [
        {
            "cost_centre": code,
            "name": name,
            "requests": n,
            "units": int(units or 0),
            "devices": int(counted or 0),
            "spend": str(_dec(spend)),
        }
        for code, name, n, units, counted, spend in by_centre
    ]
    supplier_rows = [
        {
            "supplier": code,
            "name": name,
            "requests": n,
            "units": int(units or 0),
            "devices": int(counted or 0),
            "spend": str(_dec(spend)),
        }
        for code, name, n, units, counted, spend in by_supplier
    ]
    total = money(sum((Decimal(r["spend"]) for r in centre_rows), ZERO))
    return Report(
        "costs",
        "Spend of ordered requests",
        _period(start, end),
        {"by_cost_centre": centre_rows, "by_supplier": supplier_rows},
        {
            "spend": str(total),
            "requests": sum(r["requests"] for r in centre_rows),
            "units": sum(r["units"] for r in centre_rows),
            "devices": sum(r["devices"] for r in centre_rows),
        },
    )


def savings(
    session: Session,
    *,
    start: date | None = None,
    end: date | None = None,
    zone: tzinfo = UTC,
    peripherals: Collection[str] | None = None,
) -> Report:
    """What bought lines cost against their list prices, framework vs individual orders, with
    their units and devices (as costs() counts them).
    (A leased or DaaS line pays for a service over a term, not for a device: the TCO compares
    it with buying; against the list price it would show as a loss.)"""
    listed = func.sum(RequestLine.list_price * RequestLine.quantity)
    rows = session.execute(
        select(
            col(RequestLine.sourcing),
            func.sum(RequestLine.quantity),
            _devices(_peripherals(session, peripherals)),
            listed,
            func.sum(RequestLine.total),
        )
        .join(Request, Request.id == RequestLine.request_id)  # type: ignore[arg-type]
        .join(Item, Item.id == RequestLine.item_id)  # type: ignore[arg-type]
        .where(
            _within(col(Request.ordered_at), start, end, zone),
            col(RequestLine.ownership) == "bought",
        )
        .group_by(col(RequestLine.sourcing))
        .order_by(col(RequestLine.sourcing))
    ).all()
    table = []
    for sourcing, units, counted, list_cents, paid in rows:
        # list_price * quantity is summed in cents by the database (Money stores cents).
        at_list = money(Decimal(int(list_cents or 0)).scaleb(-2))
        paid_dec = _dec(paid)
        saving = money(at_list - paid_dec)
        share = (saving / at_list * 100).quantize(Decimal("0.1")) if at_list else Decimal("0.0")
        table.append(
            {
                "sourcing": sourcing,
                "units": int(units or 0),
                "devices": int(counted or 0),
                "list": str(at_list),
                "paid": str(paid_dec),
                "saving": str(saving),
                "saving_percent": str(share),
            }
        )
    total_list = money(sum((Decimal(r["list"]) for r in table), ZERO))
    total_saving = money(sum((Decimal(r["saving"]) for r in table), ZERO))
    return Report(
        "savings",
        "Savings against list prices",
        _period(start, end),
        {"by_sourcing": table},
        {
            "list": str(total_list),
            "paid": str(money(total_list - total_saving)),
            "saving": str(total_saving),
            "saving_percent": str(
                (total_saving / total_list * 100).quantize(Decimal("0.1"))
                if total_list
                else Decimal("0.0")
            ),
        },
    )


def risk(
    session: Session, *, start: date | None = None, end: date | None = None, zone: tzinfo = UTC
) -> Report:
    """Late-involvement cost of ordered requests: incurred vs avoided, by source of error."""
    rows = session.execute(
        select(
            col(LedgerEntry.kind),
            func.count(),
            func.sum(LedgerEntry.devices_incurred),
            func.sum(LedgerEntry.incurred),
            func.sum(LedgerEntry.devices_avoided),
            func.sum(LedgerEntry.avoided),
        )
        .join(Request, Request.id == LedgerEntry.request_id)  # type: ignore[arg-type]
        .where(_within(col(Request.ordered_at), start, end, zone))
        .group_by(col(LedgerEntry.kind))
    ).all()
    found = {kind: (n, di, inc, da, av) for kind, n, di, inc, da, av in rows}
    table = []
    for kind in KINDS:
        n, di, inc, da, av = found.get(kind, (0, 0, None, 0, None))
        table.append(
            {
                "kind": kind,
                "label": LABELS[kind],
                "requests": n,
                "devices_incurred": int(di or 0),
                "incurred": str(_dec(inc)),
                "devices_avoided": int(da or 0),
                "avoided": str(_dec(av)),
            }
        )
    incurred = money(sum((Decimal(r["incurred"]) for r in table), ZERO))
    avoided = money(sum((Decimal(r["avoided"]) for r in table), ZERO))
    return Report(
        "risk",
        "Late-involvement cost: incurred vs avoided",
        _period(start, end),
        {"by_kind": table},
        {
            "incurred": str(incurred),
            "avoided": str(avoided),
            "requests": max((r["requests"] for r in table), default=0),
        },
    )


def _hours(session: Session, later: Any, earlier: Any) -> Any:
    """Hours between two timestamp columns, in the database's own arithmetic."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 24.0
    return extract("epoch", later - earlier) / 3600.0


def cycle_times(
    session: Session,
    *,
    start: date | None = None,
    end: date | None = None,
    now: datetime,
    zone: tzinfo = UTC,
) -> Report:
    """How long each stage took (opened to decided), and how often its SLA was breached."""
    breached = or_(
        and_(
            col(Stage.closed_at).is_not(None),
            col(Stage.due_at).is_not(None),
            col(Stage.closed_at) > col(Stage.due_at),
        ),
        and_(col(Stage.status) == "open", col(Stage.due_at).is_not(None), col(Stage.due_at) < now),
    )
    # One scan, aggregated in the database: per stage and tenth of an hour of duration, how many
    # stages, their exact hours, how many are still open and how many breached their SLA. The
    # mean is exact; the median and 90th percentile are read off this histogram to 0.1 h.
    # Only a decision ends a stage's cycle: one cancelled with its request, or skipped, was
    # never decided, and its time would read as a slow decision.
    closed_by_decision = col(Stage.status).in_(DECIDED)
    hours = case(
        (closed_by_decision, _hours(session, Stage.closed_at, Stage.opened_at)), else_=None
    )
    # SQLite's julianday arithmetic is a hair off (2 h comes out as 1.9999999925 h): round to
    # the second before cutting into tenths of an hour, on both databases alike.
    seconds = func.round(hours * 3600)
    tenth = (
        func.cast(seconds / 360, Integer)
        if session.get_bind().dialect.name == "sqlite"
        else func.floor(seconds / 360)
    )
    rows = (
        session.connection()
        .execute(
            select(
                col(Stage.key),
                func.min(Stage.position),
                tenth,
                func.count(),
                func.sum(hours),
                func.sum(case((col(Stage.status) == "open", 1), else_=0)),
                func.sum(case((breached, 1), else_=0)),
            )
            .where(_within(col(Stage.opened_at), start, end, zone))
            .group_by(col(Stage.key), tenth)
        )
        .all()
    )
    position: dict[str, int] = {}
    histogram: dict[str, list[tuple[int, int]]] = {}
    total_hours: dict[str, float] = {}
    still_open: dict[str, int] = {}
    breaches: dict[str, int] = {}
    for key, pos, bucket, n, summed, opened_now, breached_n in rows:
        position[key] = min(pos, position.get(key, pos))
        still_open[key] = still_open.get(key, 0) + int(opened_now or 0)
        breaches[key] = breaches.get(key, 0) + int(breached_n or 0)
        histogram.setdefault(key, [])
        if bucket is not None:
            histogram[key].append((int(bucket), int(n)))
            total_hours[key] = total_hours.get(key, 0.0) + float(summed)
    table = []
    for key in sorted(position, key=lambda k: (position[k], k)):
        buckets = sorted(histogram[key])
        decided = sum(n for _, n in buckets)
        table.append(
            {
                "stage": key,
                "decided": decided,
                "open": still_open[key],
                "mean_hours": round(total_hours[key] / decided, 1) if decided else None,
                "median_hours": _median(buckets, decided),
                "p90_hours": _quantile(buckets, decided, (decided * 9) // 10),
                "sla_breaches": breaches[key],
            }
        )
    return Report(
        "cycle-times",
        "Cycle time per stage and SLA breaches",
        _period(start, end),
        {"by_stage": table},
        {
            "decided": sum(r["decided"] for r in table),
            "sla_breaches": sum(r["sla_breaches"] for r in table),
        },
    )


def _median(buckets: list[tuple[int, int]], total: int) -> float | None:
    """The median duration in hours (to 0.1): of an even count, halfway between the middle two."""
    low = _quantile(buckets, total, (total - 1) // 2)
    high = _quantile(buckets, total, total // 2)
    if low is None or high is None:
        return None
    return round((low + high) / 2, 1)


def _quantile(buckets: list[tuple[int, int]], total: int, index: int) -> float | None:
    """The value (in hours, to 0.1) of the index-th smallest duration, from (tenth, count) buckets."""
    if not total:
        return None
    seen = 0
    for tenth, n in buckets:
        seen += n
        if index < seen:
            return tenth / 10
    return buckets[-1][0] / 10


def run(
    name: str,
    session: Session,
    *,
    start: date | None,
    end: date | None,
    now: datetime,
    zone: tzinfo = UTC,
) -> Report:
    """The named report; its days run in `zone` (the organisation's time zone)."""
    if name == "costs":
        return costs(session, start=start, end=end, zone=zone)
    if name == "savings":
        return savings(session, start=start, end=end, zone=zone)
    if name == "risk":
        return risk(session, start=start, end=end, zone=zone)
    if name == "cycle-times":
        return cycle_times(session, start=start, end=end, now=now, zone=zone)
    raise ValueError(f"unknown report {name!r} ({', '.join(NAMES)})")
