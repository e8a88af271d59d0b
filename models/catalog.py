"""The catalog: suppliers with their terms, items with list prices, framework agreements with
volume tiers, lease and Device-as-a-Service offers, and the standard kit per role."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator
from pydantic import Field as PField
from sqlalchemy import JSON, UniqueConstraint, delete, true
from sqlmodel import Field, Session, SQLModel, col, select

from models import audit
from models.errors import FieldErrors, InputError, Problem, in_file_order
from models.fields import (
    Amount,
    Code,
    Currency,
    DefaultNo,
    DefaultYes,
    Email,
    Name,
    Price,
    Quantity,
    single_line,
)
from models.records import tally, upsert
from models.sources import Document, Path_, load_document, valid, validate
from models.types import Money, UTCDateTime, utcnow


# A supplier and how long it takes to deliver.
class Supplier(SQLModel, table=True):
    __tablename__ = "supplier"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    lead_time_days: int = Field(default=10, ge=0)
    email: str = Field(default="", max_length=254)
    sla_terms: str = Field(default="", max_length=500)
    warranty_terms: str = Field(default="", max_length=500)
    return_terms: str = Field(default="", max_length=500)
    certified_erasure: bool = False


# An orderable item with its list price.
class Item(SQLModel, table=True):
    __tablename__ = "item"
    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    category: str = Field(max_length=64, index=True)
    specs: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    list_price: Decimal = Field(sa_type=Money)
    currency: str = Field(default="EUR", max_length=3)
    supplier_id: int = Field(foreign_key="supplier.id")
    warranty_months: int = Field(default=36, ge=0)
    active: bool = True
    # Whether a unit can hold data: only one that can needs a certified erasure when returned.
    holds_data: bool = Field(default=True, sa_column_kwargs={"server_default": true()})


# A framework agreement with a supplier: prices by volume tier, validity, volume, contract terms.
class FrameworkAgreement(SQLModel, table=True):
    __tablename__ = "framework_agreement"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    supplier_id: int = Field(foreign_key="supplier.id", index=True)
    valid_from: date
    valid_to: date
    committed_volume: int | None = None  # units agreed over the term; None: no cap
    currency: str = Field(default="EUR", max_length=3)
    sla_terms: str = Field(default="", max_length=500)
    warranty_months: int | None = None
    return_terms: str = Field(default="", max_length=500)
    erasure_clause: str = Field(default="", max_length=500)

    def missing_terms(self) -> list[str]:
        """The contract terms this agreement leaves open (warranty, sla, returns, erasure)."""
        present = {
            "warranty": self.warranty_months is not None,
            "sla": bool(self.sla_terms),
            "returns": bool(self.return_terms),
            "erasure": bool(self.erasure_clause),
        }
        return [name for name, ok in present.items() if not ok]

    def active_on(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_to


# One volume tier of an agreement's price for one item: min_quantity to max_quantity units.
class AgreementPrice(SQLModel, table=True):
    __tablename__ = "agreement_price"
    __table_args__ = (UniqueConstraint("agreement_id", "item_id", "min_quantity"),)
    id: int | None = Field(default=None, primary_key=True)
    agreement_id: int = Field(foreign_key="framework_agreement.id", index=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    min_quantity: int
    max_quantity: int | None = None  # None: and above
    unit_price: Decimal = Field(sa_type=Money)


# A call-off: units ordered under an agreement, drawing down its remaining volume.
class CallOff(SQLModel, table=True):
    __tablename__ = "call_off"
    id: int | None = Field(default=None, primary_key=True)
    agreement_id: int = Field(foreign_key="framework_agreement.id", index=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    line_id: int = Field(foreign_key="request_line.id", unique=True)
    quantity: int
    unit_price: Decimal = Field(sa_type=Money)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# A lease or Device-as-a-Service offer for an item: monthly rate, term, what it includes.
class Offer(SQLModel, table=True):
    __tablename__ = "offer"
    __table_args__ = (UniqueConstraint("item_id", "kind", "supplier_id", "term_months"),)
    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    kind: str = Field(max_length=8)  # lease | daas
    supplier_id: int = Field(foreign_key="supplier.id")
    monthly_rate: Decimal = Field(sa_type=Money)
    term_months: int
    includes_rollout: bool = False
    includes_support: bool = False
    includes_return: bool = False
    includes_erasure: bool = False
    # What a bought device is still worth after the same term (lowers the buy option's TCO).
    buy_residual_value: Decimal = Field(default=Decimal("0.00"), sa_type=Money)

    def includes(self) -> list[str]:
        names = ("rollout", "support", "return", "erasure")
        return [n for n in names if getattr(self, f"includes_{n}")]

    def missing_terms(self) -> list[str]:
        """The contract terms this offer leaves open: support covers warranty and SLA."""
        present = {
            "warranty": self.includes_support,
            "sla": self.includes_support,
            "returns": self.includes_return,
            "erasure": self.includes_erasure,
        }
        return [name for name, ok in present.items() if not ok]

    @property
    def label(self) -> str:
        return f"{self.kind} offer {self.id}"


# The standard kit of a role (for onboarding requests): a named list of items.
class Bundle(SQLModel, table=True):
    __tablename__ = "bundle"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)


# One item of a bundle and how many of it.
class BundleItem(SQLModel, table=True):
    __tablename__ = "bundle_item"
    bundle_id: int = Field(foreign_key="bundle.id", primary_key=True)
    item_id: int = Field(foreign_key="item.id", primary_key=True)
    quantity: int


# A supplier as written in a catalog file.
class SupplierCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    name: Name = PField(min_length=1, max_length=200)
    lead_time_days: int = PField(default=10, ge=0, le=365)
    email: Email | None = None
    sla_terms: Name = PField(default="", max_length=500)
    warranty_terms: Name = PField(default="", max_length=500)
    return_terms: Name = PField(default="", max_length=500)
    certified_erasure: DefaultNo = False


def _spec_value(value: Any) -> str | int | bool:
    """A spec is text, a whole number or yes/no (decimals are kept as their text)."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, str):
        return single_line(value)
    raise ValueError("must be text, a number or true/false")


SpecValue = Annotated[str | int | bool, BeforeValidator(_spec_value)]


# An item as written in a catalog file (YAML/JSON, or a CSV row).
class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Code
    name: Name = PField(min_length=1, max_length=200)
    category: Code
    list_price: Price
    currency: Currency = "EUR"
    supplier: Code
    specs: dict[Name, SpecValue] = PField(default_factory=dict)
    warranty_months: int = PField(default=36, ge=0, le=120)
    active: DefaultYes = True
    holds_data: DefaultYes = True  # false: a dock, a headset; returned, no erasure is needed
    lead_time_days: int | None = PField(default=None, ge=0, le=365)  # CSV: creates the supplier

    @field_validator("category")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


# One volume tier as written in an agreement: from (and up to) a number of units, at a price.
class TierCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: int = PField(alias="from", ge=1, le=1_000_000)
    to: int | None = PField(default=None, ge=1, le=1_000_000)
    unit_price: Price


# An item's prices under an agreement.
class AgreementPriceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Code
    tiers: list[TierCreate] = PField(min_length=1, max_length=20)


# The contract terms an agreement settles (all four: the terms are complete).
class TermsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sla: Name = PField(default="", max_length=500)
    warranty_months: int | None = PField(default=None, ge=0, le=120)
    returns: Name = PField(default="", max_length=500)
    erasure: Name = PField(default="", max_length=500)


# A framework agreement as written in a catalog file.
class AgreementCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    name: Name = PField(min_length=1, max_length=200)
    supplier: Code
    valid_from: date
    valid_to: date
    committed_volume: int | None = PField(default=None, ge=1, le=10_000_000)
    currency: Currency = "EUR"
    terms: TermsCreate = TermsCreate()
    prices: list[AgreementPriceCreate] = PField(min_length=1, max_length=500)


# A lease or DaaS offer as written in a catalog file.
class OfferCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Code
    kind: Literal["lease", "daas"]
    provider: Code
    monthly_rate: Price
    term_months: int = PField(ge=1, le=120)
    includes: list[Literal["rollout", "support", "return", "erasure"]] = PField(
        default_factory=list
    )
    buy_residual_value: Amount = Decimal("0.00")


# One item of a bundle as written.
class BundleItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Code
    quantity: Quantity = 1


# A role's standard kit as written in a catalog file.
class BundleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    name: Name = PField(min_length=1, max_length=200)
    items: list[BundleItemCreate] = PField(min_length=1, max_length=50)


# A whole catalog file.
class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suppliers: list[SupplierCreate] = PField(default_factory=list)
    items: list[ItemCreate] = PField(default_factory=list)
    agreements: list[AgreementCreate] = PField(default_factory=list)
    offers: list[OfferCreate] = PField(default_factory=list)
    bundles: list[BundleCreate] = PField(default_factory=list)


def tier_problems(tiers: list[TierCreate]) -> list[tuple[Path_, str]]:
    """Gaps and overlaps in a tier table: tiers must run from 1 without a hole, each after the last."""
    problems: list[tuple[Path_, str]] = []
    expected = 1
    for index, tier in enumerate(tiers):
        if tier.to is not None and tier.to < tier.from_:
            problems.append(((index, "to"), f"ends ({tier.to}) before it starts ({tier.from_})"))
            return problems
        if tier.from_ > expected and index == 0:
            problems.append(
                ((index, "from"), f"tiers must start at 1 (the first starts at {tier.from_})")
            )
        elif tier.from_ > expected:
            unpriced = (
                f"unit {expected} has"
                if tier.from_ - 1 == expected
                else f"units {expected} to {tier.from_ - 1} have"
            )
            problems.append(((index, "from"), f"leaves a gap: {unpriced} no price"))
        elif tier.from_ < expected:
            problems.append(
                ((index, "from"), f"overlaps the tier before it (which runs to {expected - 1})")
            )
        if tier.to is None:
            if index != len(tiers) - 1:
                problems.append(((index, "to"), "only the last tier may be open-ended"))
            return problems
        expected = max(expected, tier.to + 1)  # a tier nested in an earlier one moves nothing back
    return problems


ITEM_COLUMNS = {
    "sku",
    "name",
    "category",
    "list_price",
    "currency",
    "supplier",
    "warranty_months",
    "active",
    "holds_data",
    "lead_time_days",
}


def read_catalog_file(path: Path | str) -> tuple[CatalogFile, Document]:
    """Parse a catalog file (YAML, JSON, or CSV of items)."""
    doc = load_document(
        path, required={"sku", "name", "category", "list_price", "supplier"}, known=ITEM_COLUMNS
    )
    if isinstance(doc.data, list) and Path(path).suffix.lower() == ".csv":
        doc = Document(
            doc.source, {"items": doc.data}, {("items", *k): v for k, v in doc.lines.items()}
        )
    if not isinstance(doc.data, dict):
        raise InputError(doc.problem((), "expected a mapping with suppliers and items"))
    try:
        return validate(CatalogFile, doc.data, doc), doc
    except FieldErrors as exc:
        raise exc.map_partial(lambda catalog: (catalog, doc)) from None  # for check_catalog


def load_catalog(
    session: Session, *, catalog: CatalogFile, doc: Document, actor: str, at: datetime | None = None
) -> dict[str, dict[str, int]]:
    """Create or update suppliers, items, agreements, offers and bundles; all or nothing."""
    problems, implicit = _check_catalog(session, catalog, doc)
    if problems:
        raise InputError(problems)
    results: dict[str, list[str]] = {
        k: [] for k in ("supplier", "item", "agreement", "offer", "bundle")
    }
    suppliers = [
        *catalog.suppliers,
        *(
            SupplierCreate(code=code, name=code, lead_time_days=item.lead_time_days or 0)
            for code, item in implicit.items()
        ),
    ]
    for supplier in suppliers:
        _, what = upsert(
            session,
            Supplier,
            match={"code": supplier.code},
            values={
                "name": supplier.name,
                "lead_time_days": supplier.lead_time_days,
                "email": supplier.email or "",
                "sla_terms": supplier.sla_terms,
                "warranty_terms": supplier.warranty_terms,
                "return_terms": supplier.return_terms,
                "certified_erasure": supplier.certified_erasure,
            },
            entity="supplier",
            entity_id=supplier.code,
            actor=actor,
            at=at,
        )
        results["supplier"].append(what)
    supplier_ids = dict(session.exec(select(Supplier.code, Supplier.id)).all())
    for item in catalog.items:
        _, what = upsert(
            session,
            Item,
            match={"sku": item.sku},
            values={
                "name": item.name,
                "category": item.category,
                "list_price": item.list_price,
                "currency": item.currency,
                "supplier_id": supplier_ids[item.supplier],
                "specs": item.specs,
                "warranty_months": item.warranty_months,
                "active": item.active,
                "holds_data": item.holds_data,
            },
            entity="item",
            entity_id=item.sku,
            actor=actor,
            at=at,
        )
        results["item"].append(what)
    item_ids = dict(session.exec(select(Item.sku, Item.id)).all())
    for agreement in catalog.agreements:
        results["agreement"].append(
            _load_agreement(session, agreement, supplier_ids, item_ids, actor, at)
        )
    for offer in catalog.offers:
        _, what = upsert(
            session,
            Offer,
            match={
                "item_id": item_ids[offer.sku],
                "kind": offer.kind,
                "supplier_id": supplier_ids[offer.provider],
                "term_months": offer.term_months,
            },
            values={
                "monthly_rate": offer.monthly_rate,
                "buy_residual_value": offer.buy_residual_value,
                **{
                    f"includes_{name}": name in offer.includes
                    for name in ("rollout", "support", "return", "erasure")
                },
            },
            entity="offer",
            entity_id=f"{offer.sku}/{offer.kind}/{offer.provider}/{offer.term_months}m",
            actor=actor,
            at=at,
        )
        results["offer"].append(what)
    for bundle in catalog.bundles:
        results["bundle"].append(_load_bundle(session, bundle, item_ids, actor, at))
    session.flush()
    return {kind: tally(outcomes) for kind, outcomes in results.items()}


def check_catalog(session: Session, catalog: CatalogFile, doc: Document) -> list[Problem]:
    """Everything wrong with a catalog file beyond its fields (see _check_catalog)."""
    return _check_catalog(session, catalog, doc)[0]


def _check_catalog(
    session: Session, catalog: CatalogFile, doc: Document
) -> tuple[list[Problem], dict[str, ItemCreate]]:
    """Every cross-reference and table of the file, all problems at once (in file order), and
    the suppliers a CSV of items creates implicitly. On a partial file (a read that raised
    FieldErrors), the fields that validated; a reference into a section that failed as a whole
    is not called unknown."""
    problems = []

    def section(name: str) -> list[Any]:
        return list(getattr(catalog, name)) if valid(catalog, name) else []

    suppliers_of, items_of = section("suppliers"), section("items")
    agreements_of, offers_of, bundles_of = (
        section("agreements"),
        section("offers"),
        section("bundles"),
    )

    def once(name: str, field: str | None, keys: list[str | None]) -> None:
        seen: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key is None:  # its fields failed
                continue
            if key in seen:
                where: Path_ = (name, index, field) if field else (name, index)
                problems.append(
                    doc.problem(where, f"{key} is listed twice (also {name}[{seen[key]}])")
                )
            seen.setdefault(key, index)

    once("suppliers", "code", [s.code if valid(s, "code") else None for s in suppliers_of])
    once("items", "sku", [i.sku if valid(i, "sku") else None for i in items_of])
    once("agreements", "code", [a.code if valid(a, "code") else None for a in agreements_of])
    once(
        "offers",
        None,
        [
            f"{o.sku}/{o.kind}/{o.provider}/{o.term_months}m"
            if valid(o, "sku", "kind", "provider", "term_months")
            else None
            for o in offers_of
        ],
    )
    once("bundles", "code", [b.code if valid(b, "code") else None for b in bundles_of])
    # A supplier or SKU is unknown only if its section could be read.
    judge_suppliers = valid(catalog, "suppliers", "items")
    judge_skus = valid(catalog, "items")
    suppliers = {s.code for s in suppliers_of if valid(s, "code")} | set(
        session.exec(select(Supplier.code)).all()
    )
    implicit: dict[str, ItemCreate] = {}
    for i, item in enumerate(items_of):
        if not (judge_suppliers and valid(item, "supplier", "lead_time_days")):
            if valid(item, "supplier"):  # with a valid lead_time_days it might create it
                suppliers.add(item.supplier)
            continue
        if item.supplier not in suppliers and item.supplier not in implicit:
            if item.lead_time_days is None:
                problems.append(
                    doc.problem(
                        ("items", i, "supplier"),
                        f"unknown supplier {item.supplier} (list it under suppliers, or give lead_time_days)",
                    )
                )
            else:
                implicit[item.supplier] = item
    suppliers |= set(implicit)
    currencies: dict[str, str | None] = dict(session.exec(select(Item.sku, Item.currency)).all())
    currencies.update(
        {i.sku: i.currency if valid(i, "currency") else None for i in items_of if valid(i, "sku")}
    )
    for i, agreement in enumerate(agreements_of):
        where: Path_ = ("agreements", i)
        if judge_suppliers and valid(agreement, "supplier") and agreement.supplier not in suppliers:
            problems.append(
                doc.problem((*where, "supplier"), f"unknown supplier {agreement.supplier}")
            )
        if valid(agreement, "valid_from", "valid_to") and agreement.valid_to < agreement.valid_from:
            problems.append(
                doc.problem(
                    (*where, "valid_to"),
                    f"ends ({agreement.valid_to}) before it starts ({agreement.valid_from})",
                )
            )
        skus: set[str] = set()
        for j, price in enumerate(agreement.prices if valid(agreement, "prices") else []):
            at_price: Path_ = (*where, "prices", j)
            if valid(price, "sku"):
                if price.sku in skus:
                    problems.append(
                        doc.problem((*at_price, "sku"), f"{price.sku} has two price tables")
                    )
                skus.add(price.sku)
                if price.sku not in currencies:
                    if judge_skus:
                        problems.append(doc.problem((*at_price, "sku"), f"unknown SKU {price.sku}"))
                elif (
                    valid(agreement, "currency")
                    and currencies[price.sku] is not None
                    and currencies[price.sku] != agreement.currency
                ):
                    problems.append(
                        doc.problem(
                            (*at_price, "sku"),
                            f"{price.sku} is priced in {currencies[price.sku]}, the agreement in {agreement.currency}",
                        )
                    )
            if valid(price, "tiers") and all(valid(t, "from_", "to") for t in price.tiers):
                for path, message in tier_problems(price.tiers):
                    problems.append(doc.problem((*at_price, "tiers", *path), message))
    for i, offer in enumerate(offers_of):
        if judge_skus and valid(offer, "sku") and offer.sku not in currencies:
            problems.append(doc.problem(("offers", i, "sku"), f"unknown SKU {offer.sku}"))
        if judge_suppliers and valid(offer, "provider") and offer.provider not in suppliers:
            problems.append(
                doc.problem(("offers", i, "provider"), f"unknown supplier {offer.provider}")
            )
    for i, bundle in enumerate(bundles_of):
        seen_skus: set[str] = set()
        for j, entry in enumerate(bundle.items if valid(bundle, "items") else []):
            if not valid(entry, "sku"):
                continue
            if entry.sku not in currencies:
                if judge_skus:
                    problems.append(
                        doc.problem(("bundles", i, "items", j, "sku"), f"unknown SKU {entry.sku}")
                    )
            elif entry.sku in seen_skus:
                problems.append(
                    doc.problem(
                        ("bundles", i, "items", j, "sku"),
                        f"{entry.sku} is listed twice in this bundle",
                    )
                )
            seen_skus.add(entry.sku)
    return in_file_order(problems), implicit


def _load_agreement(
    session: Session,
    agreement: AgreementCreate,
    supplier_ids: dict[str, int | None],
    item_ids: dict[str, int | None],
    actor: str,
    at: datetime | None,
) -> str:
    row, what = upsert(
        session,
        FrameworkAgreement,
        match={"code": agreement.code},
        values={
            "name": agreement.name,
            "supplier_id": supplier_ids[agreement.supplier],
            "valid_from": agreement.valid_from,
            "valid_to": agreement.valid_to,
            "committed_volume": agreement.committed_volume,
            "currency": agreement.currency,
            "sla_terms": agreement.terms.sla,
            "warranty_months": agreement.terms.warranty_months,
            "return_terms": agreement.terms.returns,
            "erasure_clause": agreement.terms.erasure,
        },
        entity="agreement",
        entity_id=agreement.code,
        actor=actor,
        at=at,
    )
    wanted = sorted(
        (item_ids[p.sku], t.from_, t.to, t.unit_price) for p in agreement.prices for t in p.tiers
    )
    current = sorted(
        (p.item_id, p.min_quantity, p.max_quantity, p.unit_price)
        for p in session.exec(
            select(AgreementPrice).where(AgreementPrice.agreement_id == row.id)
        ).all()
    )
    if wanted != current:
        session.execute(delete(AgreementPrice).where(col(AgreementPrice.agreement_id) == row.id))
        for item_id, low, high, price in wanted:
            assert row.id is not None and item_id is not None
            session.add(
                AgreementPrice(
                    agreement_id=row.id,
                    item_id=item_id,
                    min_quantity=low,
                    max_quantity=high,
                    unit_price=price,
                )
            )
        audit.append(
            session,
            actor=actor,
            entity="agreement",
            entity_id=agreement.code,
            action="prices",
            details={
                "tiers": [
                    {"sku": p.sku, "from": t.from_, "to": t.to, "unit_price": t.unit_price}
                    for p in agreement.prices
                    for t in p.tiers
                ]
            },
            at=at,
        )
        what = "updated" if what == "unchanged" else what
    return what


def _load_bundle(
    session: Session,
    bundle: BundleCreate,
    item_ids: dict[str, int | None],
    actor: str,
    at: datetime | None,
) -> str:
    row, what = upsert(
        session,
        Bundle,
        match={"code": bundle.code},
        values={"name": bundle.name},
        entity="bundle",
        entity_id=bundle.code,
        actor=actor,
        at=at,
    )
    wanted = sorted((item_ids[e.sku], e.quantity) for e in bundle.items)
    current = sorted(
        (b.item_id, b.quantity)
        for b in session.exec(select(BundleItem).where(BundleItem.bundle_id == row.id)).all()
    )
    if wanted != current:
        session.execute(delete(BundleItem).where(col(BundleItem.bundle_id) == row.id))
        for item_id, quantity in wanted:
            assert row.id is not None and item_id is not None
            session.add(BundleItem(bundle_id=row.id, item_id=item_id, quantity=quantity))
        audit.append(
            session,
            actor=actor,
            entity="bundle",
            entity_id=bundle.code,
            action="items",
            details={"items": [{"sku": e.sku, "quantity": e.quantity} for e in bundle.items]},
            at=at,
        )
        what = "updated" if what == "unchanged" else what
    return what
