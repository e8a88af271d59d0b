"""Requests, their lines, the stages of their pipeline and the decisions taken on them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic import Field as PField
from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.errors import FieldErrors, InputError, Problem, in_file_order
from models.fields import Amount, Code, Currency, Email, Quantity, Slug, Text, single_line
from models.lifecycle import RequestStatus, StageStatus
from models.sources import Document, Path_, iter_items, load_document, validate
from models.types import Money, UTCDateTime, utcnow


class RequestKind(StrEnum):
    """Why the devices are needed."""

    ONBOARDING = "onboarding"
    REFRESH = "refresh"
    ROLLOUT = "rollout"
    REPLACEMENT = "replacement"


class Outcome(StrEnum):
    """What an approver decided."""

    APPROVE = "approve"
    REJECT = "reject"
    SEND_BACK = "send_back"


class StageMode(StrEnum):
    """all: one approval from each role; any: one approval from anyone holding one of the roles."""

    ALL = "all"
    ANY = "any"


def format_ref(request_id: int) -> str:
    """The reference people see: PR-0042."""
    return f"PR-{request_id:04d}"


def parse_ref(ref: str | int) -> int:
    """PR-0042, pr-42 or 42 -> 42; anything else is bad input."""
    text = str(ref).strip().upper()
    if text.startswith("PR-"):
        text = text[3:]
    # ASCII digits only: str.isdigit() also accepts '¹' or '٣', which int() refuses or reads.
    if not (text.isascii() and text.isdigit()) or len(text) > 12 or int(text) < 1:
        raise InputError(Problem(f"not a request id: {str(ref)[:40]!r} (expected PR-0042 or 42)"))
    return int(text)


def canonical_ref(ref: str | int) -> str:
    """A reference as procure writes it (PR-0001 for pr-1 or 1), for names and labels that must
    not fail: text that is not a reference comes back upper-cased, as given."""
    try:
        return format_ref(parse_ref(ref))
    except InputError:
        return str(ref).strip().upper()


# A procurement request: who wants what, for whom, on which budget, by when.
class Request(SQLModel, table=True):
    __tablename__ = "request"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32, index=True)
    status: str = Field(default=RequestStatus.DRAFT.value, max_length=32, index=True)
    version: int = Field(default=1)
    round: int = Field(default=1)
    requester_id: int = Field(foreign_key="person.id", index=True)
    on_behalf_of_id: int = Field(foreign_key="person.id", index=True)
    cost_centre_id: int = Field(foreign_key="cost_centre.id", index=True)
    needed_by: date
    order_by: date | None = None  # needed_by - supplier lead time - preparation days
    delivery_on: date | None = None
    justification: str = Field(default="", max_length=4000)
    currency: str = Field(default="EUR", max_length=3)
    total: Decimal = Field(default=Decimal("0.00"), sa_type=Money)
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True)
    content_hash: str = Field(default="", max_length=64)
    pipeline_id: int | None = Field(default=None, foreign_key="pipeline_version.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    submitted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ordered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The joint-review checklist: which contract terms are confirmed, by whom (or which agreement).
    terms: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)

    @property
    def ref(self) -> str:
        assert self.id is not None
        return format_ref(self.id)


# One line of a request: an item, how many, at what unit price.
class RequestLine(SQLModel, table=True):
    __tablename__ = "request_line"
    __table_args__ = (UniqueConstraint("request_id", "line_no"),)
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    line_no: int
    item_id: int = Field(foreign_key="item.id", index=True)
    sku: str = Field(max_length=64)
    quantity: int
    unit_price: Decimal = Field(sa_type=Money)
    total: Decimal = Field(sa_type=Money)
    ownership: str = Field(default="bought", max_length=16)
    term_months: int | None = None
    list_price: Decimal = Field(default=Decimal("0.00"), sa_type=Money)  # the catalog's, then
    sourcing: str = Field(default="individual", max_length=16)  # framework | individual | offer
    agreement_id: int | None = Field(default=None, foreign_key="framework_agreement.id")
    offer_id: int | None = Field(default=None, foreign_key="offer.id")  # leased / DaaS lines
    quote_id: int | None = Field(default=None, foreign_key="quote.id")  # bought at a quote
    framework_available: bool = False  # an agreement covered the item when it was requested
    sourcing_note: str = Field(default="", max_length=2000)  # why individual; which quote


# A supplier's quote for one line, recorded by purchasing to compare side by side.
class Quote(SQLModel, table=True):
    __tablename__ = "quote"
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    line_no: int
    supplier: str = Field(max_length=200)
    unit_price: Decimal = Field(sa_type=Money)
    valid_until: date | None = None
    note: str = Field(default="", max_length=2000)
    recorded_by: str = Field(max_length=254)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# One stage of a request's pipeline, instantiated from the pipeline file at submission.
class Stage(SQLModel, table=True):
    __tablename__ = "stage"
    __table_args__ = (UniqueConstraint("request_id", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    key: str = Field(max_length=64)
    name: str = Field(max_length=200)
    position: int
    roles: list[str] = Field(default_factory=list, sa_type=JSON)
    mode: str = Field(default=StageMode.ALL.value, max_length=8)
    after: list[str] = Field(default_factory=list, sa_type=JSON)
    status: str = Field(default=StageStatus.WAITING.value, max_length=32, index=True)
    version: int = Field(default=1)
    round: int = Field(default=1)
    inputs_hash: str = Field(default="", max_length=64)
    sla_hours: int | None = None
    escalate_to: str | None = Field(default=None, max_length=32)
    opened_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# A decision's seat: one decision per slot of a stage's round (the table's unique key).
SEAT = ("stage_id", "round", "slot")


# One person's decision on a stage. A slot is the role it fills ("any" for any-of stages);
# the unique constraint makes two racing decisions on one slot impossible at the database level.
class Decision(SQLModel, table=True):
    __tablename__ = "decision"
    __table_args__ = (UniqueConstraint(*SEAT),)
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    stage_id: int = Field(foreign_key="stage.id", index=True)
    round: int
    slot: str = Field(max_length=32)
    role: str = Field(max_length=32)
    outcome: str = Field(max_length=16)
    comment: str = Field(default="", max_length=4000)
    actor_id: int = Field(foreign_key="person.id", index=True)
    on_behalf_of_id: int | None = Field(default=None, foreign_key="person.id")
    decided_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


# A request line as written in a request file.
class LineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Code
    quantity: Quantity
    unit_price: Amount | None = None
    ownership: Literal["bought", "leased", "daas"] = "bought"
    term_months: int | None = PField(default=None, ge=1, le=120)
    # Default: under the cheapest agreement that covers it, else individually.
    sourcing: Literal["framework", "individual"] | None = None
    agreement: Code | None = None
    sourcing_justification: Text = PField(default="", max_length=2000)

    @field_validator("unit_price")
    @classmethod
    def _a_price(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not value:
            raise ValueError(
                "must be more than 0.00: a line's price is what it costs "
                "(leave unit_price out for the agreement's or the list price)"
            )
        return value

    @field_validator("agreement")
    @classmethod
    def _not_individual(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("sourcing") == "individual":
            raise ValueError("names an agreement, but sourcing says individual: choose one")
        return value


# A request as written in a request file (YAML/JSON, or rows of a CSV of lines).
class RequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: RequestKind
    requester: Email
    on_behalf_of: Email | None = None
    cost_centre: Code
    needed_by: date
    justification: Text = PField(default="", max_length=4000)
    currency: Currency | None = None
    idempotency_key: str | None = PField(default=None, min_length=1, max_length=200)
    bundle: Code | None = None  # a role's standard kit, added to the lines
    lines: list[LineCreate] = PField(default_factory=list, max_length=500, validate_default=True)

    @field_validator("lines")
    @classmethod
    def _something_to_order(cls, value: list[LineCreate], info: ValidationInfo) -> list[LineCreate]:
        if not value and info.data.get("bundle") is None:
            raise ValueError("is empty: give lines, or a bundle (a role's standard kit), or both")
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else single_line(value)

    def content_hash(self) -> str:
        """A hash of what is asked for (everything but the idempotency key)."""
        body = self.model_dump(mode="json", exclude={"idempotency_key"})
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


# What a requester may change when a request comes back to them (fields left out stay as they are).
class RequestUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: RequestKind | None = None
    on_behalf_of: Email | None = None
    cost_centre: Code | None = None
    needed_by: date | None = None
    justification: Text | None = PField(default=None, max_length=4000)
    lines: list[LineCreate] | None = PField(default=None, min_length=1, max_length=500)


# A request file's fields that a resubmission cannot change, and what it says about them.
FIXED_ON_RESUBMISSION = frozenset(RequestCreate.model_fields) - frozenset(
    RequestUpdate.model_fields
)
FIXED_MESSAGE = (
    "is fixed once the request is submitted (a resubmission changes only "
    + ", ".join(RequestUpdate.model_fields)
    + ")"
)


# The decisions that must say why, and what their comment is then told: the requester acts on
# a send-back and learns why a request was rejected from the comment alone.
COMMENT_NEEDED = {
    "send_back": "is needed to send a request back: say what the requester should change",
    "reject": "is needed to reject a request: say why",
}


# One approver's decision on a request, as a form (the Prefect UI, the HTTP API) submits it.
class DecisionCreate(BaseModel):
    # Its schema carries the rule that decide() enforces (COMMENT_NEEDED), for the Prefect server
    # and UI, which check a run's form against the schema before the run exists.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "properties": {"decision": {"enum": list(COMMENT_NEEDED)}},
                        "required": ["decision"],
                    },
                    "then": {
                        "properties": {"comment": {"pattern": r"\S"}},
                        "required": ["comment"],
                    },
                }
            ]
        },
    )
    request: str = PField(
        pattern=r"^(?i:PR-)?[0-9]{1,12}$",
        description="The request, e.g. PR-0042",
        examples=["PR-0042"],
    )
    approver: Email = PField(description="Who decides: the approver's e-mail address")
    decision: Literal["approve", "reject", "send_back"]
    comment: Text = PField(
        default="",
        max_length=4000,
        description="Why (shown to the requester; needed to reject or send back)",
    )
    stage: Slug | None = PField(
        default=None, description="Which stage, if the approver can decide several"
    )
    confirm_terms: bool = PField(
        default=False,
        description="Purchasing's part of the review (or its escalation role): also confirm the contract terms still open",
    )


LINE_COLUMNS = {
    "ref",
    "kind",
    "requester",
    "on_behalf_of",
    "cost_centre",
    "needed_by",
    "justification",
    "currency",
    "idempotency_key",
    "sku",
    "quantity",
    "unit_price",
    "ownership",
    "term_months",
    "sourcing",
    "agreement",
    "sourcing_justification",
}
HEADER_FIELDS = (
    "kind",
    "requester",
    "on_behalf_of",
    "cost_centre",
    "needed_by",
    "justification",
    "currency",
    "idempotency_key",
)
LINE_FIELDS = (
    "sku",
    "quantity",
    "unit_price",
    "ownership",
    "term_months",
    "sourcing",
    "agreement",
    "sourcing_justification",
)


@dataclass
class Draft:
    """A validated request from a file, with where it came from (for error messages)."""

    create: RequestCreate
    doc: Document
    base: Path_
    occurrence: int = 0  # how many identical requests came before it in the same file

    @property
    def idempotency_key(self) -> str:
        if self.create.idempotency_key:
            return self.create.idempotency_key
        suffix = f"-{self.occurrence}" if self.occurrence else ""
        return f"auto-{self.create.content_hash()[:40]}{suffix}"


def read_request_file(path: Path | str) -> list[Draft]:
    """Parse a request file: one request or a list (YAML/JSON), or a CSV of lines."""
    doc = load_document(
        path,
        required={"requester", "cost_centre", "needed_by", "sku", "quantity"},
        known=LINE_COLUMNS,
    )
    if Path(path).suffix.lower() == ".csv":
        return _drafts_from_csv(doc)
    items: list[tuple[Path_, Any]]
    if isinstance(doc.data, dict) and "requests" not in doc.data:
        items = [((), doc.data)]
    else:
        items = list(iter_items(doc, "requests"))
    if not items:
        raise InputError(doc.problem((), "holds no request"))
    drafts: list[Draft] = []
    problems: list[Problem] = []
    for base, data in items:
        if not isinstance(data, dict):
            problems.append(doc.problem(base, "a request must be a mapping of fields"))
            continue
        try:
            drafts.append(Draft(validate(RequestCreate, data, doc, base), doc, base))
        except InputError as exc:
            problems.extend(exc.problems)
    return _number_duplicates(_drafts_or_problems(drafts, problems))


def _drafts_from_csv(doc: Document) -> list[Draft]:
    """Group CSV rows into requests: by the `ref` column (every row names its request), else
    one request per row."""
    if not doc.data:
        raise InputError(doc.problem((), "holds no request: only a header, no rows"))
    drafts: list[Draft] = []
    problems: list[Problem] = []
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(doc.data):
        if "ref" in doc.columns and "ref" not in row:
            # Not a request of its own: a row that lost its ref would be ordered apart.
            problems.append(doc.problem((index, "ref"), "is empty: every row names its request"))
            continue
        groups.setdefault(row.get("ref") or f"#row{index}", []).append(index)
    for ref, indexes in groups.items():
        first = doc.data[indexes[0]]
        header = {k: first[k] for k in HEADER_FIELDS if k in first}
        for index in indexes[1:]:
            row = doc.data[index]
            for k in HEADER_FIELDS:
                if k in row and row[k] != header.get(k):
                    problems.append(
                        doc.problem(
                            (index, k),
                            f"differs from the first row of request {ref!r} ({header.get(k)!r})",
                        )
                    )
        data = {
            **header,
            "lines": [
                {k: doc.data[i][k] for k in LINE_FIELDS if k in doc.data[i]} for i in indexes
            ],
        }
        if "kind" not in data:
            data["kind"] = RequestKind.ROLLOUT.value
        # Errors in lines[n] point at the n-th row of the group.
        lines: dict[Path_, int] = {("lines", n): doc.lines[(i,)] for n, i in enumerate(indexes)}
        lines.update(
            {("lines", n, f): doc.lines[(i,)] for n, i in enumerate(indexes) for f in LINE_FIELDS}
        )
        lines[()] = doc.lines[(indexes[0],)]
        for f in HEADER_FIELDS:
            lines[(f,)] = doc.lines[(indexes[0],)]
        group_doc = Document(doc.source, data, lines)
        try:
            drafts.append(Draft(validate(RequestCreate, data, group_doc), group_doc, ()))
        except InputError as exc:
            problems.extend(exc.problems)
    return _number_duplicates(_drafts_or_problems(drafts, problems))


def _drafts_or_problems(drafts: list[Draft], problems: list[Problem]) -> list[Draft]:
    """The drafts of a file without problems. With problems, FieldErrors holding the valid
    requests, for actions.check_drafts to check their references too (one run, every problem);
    a request with a bad field is not checked: its references depend on all of it."""
    if problems:
        raise FieldErrors(in_file_order(problems), lambda: _number_duplicates(drafts))
    return drafts


def _number_duplicates(drafts: list[Draft]) -> list[Draft]:
    seen: dict[str, int] = {}
    for draft in drafts:
        key = draft.create.idempotency_key or draft.create.content_hash()
        draft.occurrence = seen.get(key, 0)
        seen[key] = draft.occurrence + 1
    return drafts
