"""The catalog: suppliers and the items a request can order, with their list prices."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator
from pydantic import Field as PField
from sqlalchemy import JSON
from sqlmodel import Field, Session, SQLModel, select

from models.errors import InputError
from models.fields import Amount, Code, Currency, Email, Name, single_line
from models.records import tally, upsert
from models.sources import Document, load_document, validate
from models.types import Money


# A supplier and how long it takes to deliver.
class Supplier(SQLModel, table=True):
    __tablename__ = "supplier"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    lead_time_days: int = Field(default=10, ge=0)
    email: str = Field(default="", max_length=254)


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


# A supplier as written in a catalog file.
class SupplierCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    name: Name = PField(min_length=1, max_length=200)
    lead_time_days: int = PField(default=10, ge=0, le=365)
    email: Email | None = None


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
    list_price: Amount
    currency: Currency = "EUR"
    supplier: Code
    specs: dict[Name, SpecValue] = PField(default_factory=dict)
    warranty_months: int = PField(default=36, ge=0, le=120)
    active: bool = True
    lead_time_days: int | None = PField(default=None, ge=0, le=365)  # CSV: creates the supplier

    @field_validator("category")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


# A whole catalog file.
class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suppliers: list[SupplierCreate] = PField(default_factory=list)
    items: list[ItemCreate] = PField(default_factory=list)


ITEM_COLUMNS = {
    "sku",
    "name",
    "category",
    "list_price",
    "currency",
    "supplier",
    "warranty_months",
    "active",
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
    return validate(CatalogFile, doc.data, doc), doc


def load_catalog(
    session: Session, *, catalog: CatalogFile, doc: Document, actor: str, at: datetime | None = None
) -> dict[str, dict[str, int]]:
    """Create or update suppliers and items; all or nothing."""
    problems = []
    seen_suppliers: dict[str, int] = {}
    for i, s in enumerate(catalog.suppliers):
        if s.code in seen_suppliers:
            problems.append(
                doc.problem(("suppliers", i, "code"), f"supplier {s.code} is listed twice")
            )
        seen_suppliers[s.code] = i
    known = set(seen_suppliers) | set(session.exec(select(Supplier.code)).all())
    seen_items: dict[str, int] = {}
    implicit: dict[str, ItemCreate] = {}
    for i, item in enumerate(catalog.items):
        if item.sku in seen_items:
            problems.append(
                doc.problem(
                    ("items", i, "sku"),
                    f"{item.sku} is listed twice (also items[{seen_items[item.sku]}])",
                )
            )
        seen_items[item.sku] = i
        if item.supplier not in known and item.supplier not in implicit:
            if item.lead_time_days is None:
                problems.append(
                    doc.problem(
                        ("items", i, "supplier"),
                        f"unknown supplier {item.supplier} (list it under suppliers, or give lead_time_days)",
                    )
                )
            else:
                implicit[item.supplier] = item
    if problems:
        raise InputError(problems)

    results: dict[str, list[str]] = {"supplier": [], "item": []}
    suppliers = [
        *catalog.suppliers,
        *(
            SupplierCreate(code=code, name=code, lead_time_days=item.lead_time_days or 0)
            for code, item in implicit.items()
        ),
    ]
    supplier_ids: dict[str, int] = {}
    for s in suppliers:
        row, what = upsert(
            session,
            Supplier,
            match={"code": s.code},
            values={"name": s.name, "lead_time_days": s.lead_time_days, "email": s.email or ""},
            entity="supplier",
            entity_id=s.code,
            actor=actor,
            at=at,
        )
        assert row.id is not None
        supplier_ids[s.code] = row.id
        results["supplier"].append(what)
    for item in catalog.items:
        supplier_id = supplier_ids.get(item.supplier)
        if supplier_id is None:
            supplier_id = session.exec(
                select(Supplier.id).where(Supplier.code == item.supplier)
            ).one()
        _, what = upsert(
            session,
            Item,
            match={"sku": item.sku},
            values={
                "name": item.name,
                "category": item.category,
                "list_price": item.list_price,
                "currency": item.currency,
                "supplier_id": supplier_id,
                "specs": item.specs,
                "warranty_months": item.warranty_months,
                "active": item.active,
            },
            entity="item",
            entity_id=item.sku,
            actor=actor,
            at=at,
        )
        results["item"].append(what)
    session.flush()
    return {kind: tally(outcomes) for kind, outcomes in results.items()}
