"""Assets (one per ordered device) and the certificates of their erasure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlmodel import Field, SQLModel

from models.errors import FieldErrors, InputError, Problem
from models.fields import code, email, single_line
from models.lifecycle import AssetStatus
from models.sources import read_rows, read_text
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


@dataclass
class SerialIn:
    """One delivered unit: its serial and, where the request has several items, its SKU."""

    serial: str
    sku: str | None = None
    line: int | None = None  # where it came from, for error messages
    request: str | None = None  # in a supplier's shipping notice covering several requests


@dataclass
class Assignment:
    """One device handed to one person."""

    serial: str
    email: str
    line: int | None = None


def read_serials_file(path: Path | str) -> list[SerialIn]:
    """Delivered serials: CSV (serial[,sku]), YAML/JSON (a list of serials or {serial, sku}),
    or text with one serial per line."""
    if Path(path).suffix.lower() in (".txt", ""):
        source, text = read_text(path)
        units, problems = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            value = line.strip()
            if not value or value.startswith("#"):
                continue
            try:
                units.append(SerialIn(code(value), None, number))
            except ValueError as exc:
                problems.append(Problem(f"serial {exc}", source, number, "serial"))
        if problems:
            raise FieldErrors(problems, lambda: units)  # with the valid serials
        return units
    try:
        rows = read_rows(
            path,
            key="serials",
            fields={"serial": code, "sku": code, "request": _request_ref},
            required={"serial"},
            bare="serial",
        )
    except FieldErrors as exc:
        raise exc.map_partial(_serials) from None
    return _serials(rows)


def _serials(rows: list[tuple[dict[str, Any], int | None]]) -> list[SerialIn]:
    return [SerialIn(row["serial"], row.get("sku"), line, row.get("request")) for row, line in rows]


def _request_ref(value: object) -> str:
    from models.requests import format_ref, parse_ref

    try:
        return format_ref(parse_ref(str(value)))
    except InputError:
        raise ValueError(f"not a request id: {str(value)[:40]!r} (expected PR-0042)") from None


def by_request(
    units: list[SerialIn], request: str | None, source: str
) -> dict[str, list[SerialIn]]:
    """A shipping notice's serials per request: those of one request, or grouped by their
    `request` column when the notice covers several."""
    if request is not None:
        stray = [u for u in units if u.request is not None and u.request != request]
        if stray:
            raise InputError(
                [
                    Problem(f"belongs to {u.request}, not {request}", source, u.line, "request")
                    for u in stray
                ]
            )
        return {request: units}
    missing = [u for u in units if u.request is None]
    if missing:
        raise InputError(
            [
                Problem("is required when no request is given", source, u.line, "request")
                for u in missing[:20]
            ]
        )
    grouped: dict[str, list[SerialIn]] = {}
    for unit in units:
        assert unit.request is not None
        grouped.setdefault(unit.request, []).append(unit)
    return grouped


def read_assignments_file(path: Path | str) -> list[Assignment]:
    """Who gets which device: CSV (serial,email) or a YAML/JSON list of {serial, email}."""
    rows = read_rows(
        path,
        key="assignments",
        fields={"serial": code, "email": email},
        required={"serial", "email"},
    )
    return [Assignment(row["serial"], row["email"], line) for row, line in rows]


def read_certificates_file(path: Path | str) -> list[dict[str, str]]:
    """Erasure certificates from a provider: CSV (serial,certificate,method,provider) or a
    YAML/JSON list of those."""
    fields = {
        "serial": code,
        "certificate": single_line,
        "method": single_line,
        "provider": single_line,
    }
    try:
        rows = read_rows(path, key="certificates", fields=fields, required=set(fields))
    except FieldErrors as exc:
        raise exc.map_partial(_certificates) from None  # for check_certificates
    return _certificates(rows)


def _certificates(rows: list[tuple[dict[str, Any], int | None]]) -> list[dict[str, str]]:
    return [{**row, "line": str(line or "")} for row, line in rows]
