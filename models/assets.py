"""Assets (one per ordered device) and the certificates of their erasure."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from models.lifecycle import AssetStatus
from models.types import UTCDateTime, utcnow


class Ownership(StrEnum):
    """How the organisation holds the device."""

    BOUGHT = "bought"
    LEASED = "leased"
    DAAS = "daas"


# One device: created when its request is ordered, given a serial on delivery.
class Asset(SQLModel, table=True):
    __tablename__ = "asset"
    id: int | None = Field(default=None, primary_key=True)
    serial: str | None = Field(default=None, max_length=100, unique=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    line_id: int = Field(foreign_key="request_line.id", index=True)
    item_id: int = Field(foreign_key="item.id")
    sku: str = Field(max_length=64)
    status: str = Field(default=AssetStatus.ORDERED.value, max_length=32, index=True)
    version: int = Field(default=1)
    ownership: str = Field(default=Ownership.BOUGHT.value, max_length=16)
    assigned_to_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    warranty_end: date | None = None
    contract_end: date | None = None
    ordered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deployed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    returned_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# The certificate that a returned device's data was erased.
class ErasureRecord(SQLModel, table=True):
    __tablename__ = "erasure_record"
    id: int | None = Field(default=None, primary_key=True)
    asset_id: int = Field(foreign_key="asset.id", unique=True)
    method: str = Field(max_length=100)
    certificate_id: str = Field(max_length=200)
    provider: str = Field(max_length=200)
    erased_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    recorded_by: str = Field(max_length=254)
