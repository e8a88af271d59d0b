"""The pipeline file: which stages a request passes between submission and order.

A pipeline is YAML, validated at load: stages with their roles (all-of or any-of),
conditions that add or skip a stage, SLAs in business hours, an escalation role, the
inputs whose change on resubmission resets a stage's approvals, and who is informed.
Conditions are Jinja expressions evaluated in an immutable sandbox (never `eval`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Text as SAText
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, select

from models import audit, reference
from models.calendar import Calendar
from models.errors import FieldErrors, InputError, Problem, in_file_order
from models.fields import Amount, Code, Currency, DefaultNo, Name, Slug, roles_list
from models.org import PIPELINE_ROLES
from models.sources import Path_, parse_yaml, read_text, valid, validate
from models.types import UTCDateTime, utcnow

DEFAULT_PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "default.yaml"

InputName = Literal[
    "kind", "lines", "total", "cost_centre", "needed_by", "justification", "on_behalf_of"
]
INPUT_NAMES: tuple[InputName, ...] = get_args(InputName)

# The names a condition can use, with a description for error messages and docs.
CONDITION_NAMES = {
    "total": "the request's total (a decimal amount)",
    "currency": "the request's currency code, e.g. 'EUR'",
    "quantity": "the number of units over all lines",
    "line_count": "the number of lines",
    "max_unit_price": "the highest unit price of any line",
    "kind": "onboarding, refresh, rollout or replacement",
    "categories": "the item categories of the lines, e.g. ['laptop', 'monitor']",
    "skus": "the SKUs of the lines",
    "cost_centre": "the cost centre code",
    "department": "the department of the person the devices are for",
}

_SAMPLES: tuple[dict[str, Any], ...] = (
    {
        "total": Decimal("0.00"),
        "currency": "EUR",
        "quantity": 1,
        "line_count": 1,
        "max_unit_price": Decimal("0.00"),
        "kind": "onboarding",
        "categories": ["laptop"],
        "skus": ["SKU-1"],
        "cost_centre": "CC-1",
        "department": "",
    },
    {
        "total": Decimal("1000000.00"),
        "currency": "USD",
        "quantity": 1000,
        "line_count": 3,
        "max_unit_price": Decimal("2500.00"),
        "kind": "rollout",
        "categories": ["laptop", "monitor", "phone"],
        "skus": ["A", "B", "C"],
        "cost_centre": "X",
        "department": "Engineering",
    },
)


# Filters a condition may use; the others (center, indent, wordwrap, format, ...) can build
# huge strings or reach further than a yes/no question about a request needs.
SAFE_FILTERS = frozenset(
    {
        "lower",
        "upper",
        "length",
        "count",
        "abs",
        "int",
        "min",
        "max",
        "first",
        "last",
        "sort",
        "unique",
        "trim",
        "default",
    }
)
MAX_SEQUENCE = 10_000  # longest string or list a condition may build with *
MAX_EXPONENT = 64


@lru_cache(maxsize=1)
def _sandbox() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError
    from jinja2.ext import Extension
    from jinja2.lexer import Token, TokenStream
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class ExactNumbers(Extension):
        """A number written with a decimal point is a Decimal, as the amounts it is compared
        with are: `total >= 258.10` holds for a total of 258.10 (a float 258.1 is a little more
        than that, so an exact comparison with the float would skip the stage). The lexer's
        float becomes ("258.1"|exact): its repr is the shortest text of the same value."""

        def filter_stream(self, stream: TokenStream) -> Any:
            for token in stream:
                if token.type != "float":
                    yield token
                    continue
                for kind, value in (
                    ("lparen", "("),
                    ("string", repr(token.value)),
                    ("pipe", "|"),
                    ("name", "exact"),
                    ("rparen", ")"),
                ):
                    yield Token(token.lineno, kind, value)

    class ConditionSandbox(ImmutableSandboxedEnvironment):
        """Jinja's immutable sandbox, also bounded in time and memory: no globals, few filters,
        and * / ** refused where they would build something huge."""

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**":
                exponent: int | Decimal | None = right if isinstance(right, int | Decimal) else None
                if exponent is None or not -MAX_EXPONENT <= exponent <= MAX_EXPONENT:
                    raise SecurityError(
                        f"exponents above {MAX_EXPONENT} are not allowed in conditions"
                    )
                return left**right
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(times, int)
                    and len(sequence) * times > MAX_SEQUENCE
                ):
                    raise SecurityError("a condition may not build strings or lists that long")
            return left * right

    env = ConditionSandbox(undefined=StrictUndefined, extensions=[ExactNumbers])
    env.globals.clear()
    env.filters = {name: f for name, f in env.filters.items() if name in SAFE_FILTERS}
    env.filters["exact"] = Decimal
    return env


@lru_cache(maxsize=512)
def compile_condition(source: str) -> Any:
    """Compile a condition once; raises ValueError with a readable message."""
    from jinja2 import TemplateSyntaxError

    if len(source) > 500:
        raise ValueError("is longer than 500 characters")
    try:
        return _sandbox().compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ValueError(f"is not a valid expression: {exc.message}") from None


def evaluate(source: str, context: dict[str, Any]) -> bool:
    """Evaluate a condition against a request's context."""
    from jinja2 import UndefinedError
    from jinja2.exceptions import SecurityError

    expression = compile_condition(source)
    try:
        return bool(expression(**context))
    except UndefinedError as exc:
        known = ", ".join(CONDITION_NAMES)
        raise ValueError(
            f"{exc.message}; the names a condition can use are: {known} "
            "(text values need quotes, e.g. kind == 'onboarding')"
        ) from None
    except SecurityError as exc:
        raise ValueError(f"is not allowed: {exc}") from None
    except Exception as exc:  # a type error in the expression, e.g. comparing text with a number
        raise ValueError(f"cannot be evaluated: {exc}") from None


def _condition(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an expression such as: total >= 10000")
    value = value.strip()
    compile_condition(value)
    for sample in _SAMPLES:
        evaluate(value, sample)
    return value


# Someone to tell (not to ask) when a stage opens.
class InformSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: str
    when: str | None = None

    @field_validator("role")
    @classmethod
    def _check_role(cls, value: str) -> str:
        return _pipeline_role(value)

    @field_validator("when", mode="before")
    @classmethod
    def _check_when(cls, value: Any) -> str | None:
        return _condition(value)


def _pipeline_role(value: Any) -> str:
    if value not in PIPELINE_ROLES:
        raise ValueError(f"unknown role {value!r} (known: {', '.join(sorted(PIPELINE_ROLES))})")
    return str(value)


# One stage of the pipeline as written in the file.
class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Slug
    name: Name = Field(max_length=200)
    roles: tuple[str, ...] = Field(min_length=1)
    mode: Literal["all", "any"] = "all"
    when: str | None = None
    unless: str | None = None
    after: tuple[Slug, ...] | None = None
    sla_hours: int | None = Field(default=None, ge=1, le=2000)
    escalate_to: str | None = None
    inputs: tuple[InputName, ...] = INPUT_NAMES
    inform: tuple[InformSpec, ...] = ()

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for role in value:
            _pipeline_role(role)
        if len(set(value)) != len(value):
            raise ValueError("a role is listed twice")
        return value

    @field_validator("escalate_to")
    @classmethod
    def _escalate(cls, value: str | None) -> str | None:
        return None if value is None else _pipeline_role(value)

    @field_validator("when", "unless", mode="before")
    @classmethod
    def _conditions(cls, value: Any) -> str | None:
        return _condition(value)

    def applies(self, context: dict[str, Any]) -> bool:
        """Whether this stage is part of a request with this context."""
        if self.when is not None and not evaluate(self.when, context):
            return False
        return not (self.unless is not None and evaluate(self.unless, context))


# What involving purchasing late costs per device (defaults: the article's figures, in EUR).
class LateCosts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    unclear_terms: Amount = Decimal("90.00")
    individual_order: Amount = Decimal("70.00")
    missed_delivery_planning: Amount = Decimal("80.00")


# What the organisation spends per device on what a lease or DaaS offer may include.
class DeviceCosts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rollout: Amount = Decimal("60.00")
    support_per_month: Amount = Decimal("8.00")
    return_handling: Amount = Decimal("40.00")
    erasure: Amount = Decimal("25.00")


# The money side of the pipeline: planning, late-involvement figures, device costs, budgets.
class Economics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    preparation_days: int = Field(default=5, ge=0, le=90)  # between delivery and the needed-by date
    late_involvement: LateCosts = LateCosts()
    device_costs: DeviceCosts = DeviceCosts()
    term_months: int = Field(default=36, ge=1, le=120)  # the term buy/lease/DaaS are compared over
    budget_policy: Literal["warn", "stop"] = "warn"  # when a request exceeds its budget's remainder
    bundling_window_days: int = Field(default=30, ge=0, le=365)
    fiscal_year_start_month: int = Field(default=1, ge=1, le=12)
    # Catalog categories that are not devices: no late-involvement cost per unit and no device
    # costs (rollout, support, return, erasure) in buy vs lease vs DaaS. A headset or a dock
    # bought alongside 100 laptops does not make them 200 devices.
    peripheral_categories: tuple[Code, ...] = ("accessory", "dock", "monitor", "peripheral")

    @field_validator("peripheral_categories", mode="before")
    @classmethod
    def _categories(cls, value: Any) -> Any:
        return roles_list(value)  # a list, or one string separated by spaces or commas

    @field_validator("peripheral_categories")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower() for v in value)  # as the catalog stores categories

    def is_device(self, category: str) -> bool:
        """Whether items of this catalog category count as devices."""
        return category.lower() not in self.peripheral_categories


# How a leaver gives their devices back (the HR sync records the last day; see models/hr.py).
class Offboarding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Working days of the calendar before the last day on which the devices are asked back:
    # late enough that the leaver works with them until then, early enough to collect them.
    return_lead_workdays: int = Field(default=10, ge=0, le=60)


# A whole pipeline file.
class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Slug
    version: int = Field(ge=1, le=1_000_000)  # a database INTEGER holds it everywhere
    description: str = ""
    currency: Currency = "EUR"
    calendar: Calendar = Calendar()
    economics: Economics = Economics()
    offboarding: Offboarding = Offboarding()
    # Approved requests are ordered by the orchestration (call-offs and purchase orders) without
    # waiting for someone to run `procure order`.
    auto_order: DefaultNo = False
    stages: tuple[StageSpec, ...] = Field(min_length=1, max_length=50)

    def dependencies(self, stage: StageSpec) -> tuple[str, ...]:
        """The stages that must be approved or skipped before this one opens."""
        if stage.after is not None:
            return stage.after
        index = [s.id for s in self.stages].index(stage.id)
        return (self.stages[index - 1].id,) if index else ()


def _cross_checks(spec: PipelineSpec) -> list[tuple[Path_, str]]:
    """Duplicate stage ids and `after:` naming no earlier stage; on a partial spec (salvage),
    what its valid fields allow."""
    problems: list[tuple[Path_, str]] = []
    if not valid(spec, "stages"):
        return problems
    seen: dict[str, int] = {}
    for index, stage in enumerate(spec.stages):
        named = valid(stage, "id")  # a stage whose id failed still has its `after:` checked
        if named and stage.id in seen:
            problems.append(
                (
                    ("stages", index, "id"),
                    f"stage id {stage.id!r} is used twice (also stages[{seen[stage.id]}])",
                )
            )
        for j, dep in enumerate(stage.after or ()):
            if dep == stage.id:
                problems.append((("stages", index, "after", j), "a stage cannot wait for itself"))
            elif dep not in seen:
                later = any(s.id == dep for s in spec.stages if valid(s, "id"))
                why = (
                    "must be a stage listed before this one"
                    if later
                    else "is not a stage of this pipeline"
                )
                problems.append((("stages", index, "after", j), f"{dep!r} {why}"))
        if named:
            seen.setdefault(stage.id, index)
    return problems


def parse_pipeline(text: str, source: str) -> PipelineSpec:
    """Parse and validate pipeline YAML; every error names the file, line and field."""
    doc = parse_yaml(text, source)
    if not isinstance(doc.data, dict):
        raise InputError(
            doc.problem((), "a pipeline file must be a mapping with name, version and stages")
        )

    def cross_checks(spec: PipelineSpec) -> list[Problem]:
        return [doc.problem(path, message) for path, message in _cross_checks(spec)]

    try:
        spec = validate(PipelineSpec, doc.data, doc)
    except FieldErrors as exc:
        raise exc.with_checks(cross_checks) from None
    problems = cross_checks(spec)
    if problems:
        raise InputError(in_file_order(problems))
    return spec


def check_file(path: Path | str) -> PipelineSpec:
    """Read and validate a pipeline file (.yaml or .yml)."""
    source, text = read_pipeline_file(path)
    return parse_pipeline(text, source)


def read_pipeline_file(path: Path | str) -> tuple[str, str]:
    """The (source, text) of a pipeline file; other file types are refused by name."""
    if Path(path).suffix.lower() not in (".yaml", ".yml"):
        raise InputError(
            Problem("a pipeline file is YAML: name it .yaml or .yml", source=str(path))
        )
    return read_text(path)


# A pipeline as installed: the exact YAML, so every request keeps the rules it was submitted under.
class PipelineVersion(SQLModel, table=True):
    __tablename__ = "pipeline_version"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(max_length=64)
    version: int
    sha256: str = SQLField(max_length=64, index=True)
    source: str = SQLField(sa_type=SAText)
    loaded_from: str = SQLField(default="", max_length=500)
    loaded_by: str = SQLField(default="", max_length=254)
    loaded_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    active: bool = SQLField(default=False, index=True)


@lru_cache(maxsize=64)
def _parse_cached(sha: str, text: str) -> PipelineSpec:
    return parse_pipeline(text, f"pipeline {sha[:12]}")


def spec_of(row: PipelineVersion) -> PipelineSpec:
    """The parsed pipeline of an installed version."""
    return _parse_cached(row.sha256, row.source)


def install(
    session: Session, *, text: str, source: str, actor: str, at: datetime | None = None
) -> tuple[PipelineVersion, bool]:
    """Make this pipeline the active one; returns (row, changed). The same text again is a no-op."""
    spec = parse_pipeline(text, source)
    sha = hashlib.sha256(text.encode()).hexdigest()
    current = active_row(session)
    if current is not None and current.sha256 == sha:
        return current, False
    same_version = session.exec(
        select(PipelineVersion).where(
            PipelineVersion.name == spec.name, PipelineVersion.version == spec.version
        )
    ).first()
    if same_version is not None and same_version.sha256 != sha:
        raise InputError(
            Problem(
                f"pipeline {spec.name}@{spec.version} is already installed with different content: "
                "raise `version:` in the file",
                source=source,
                field="version",
            )
        )
    if current is not None:
        current.active = False
        session.add(current)
    if same_version is not None:  # an earlier version installed again
        row = same_version
        row.active = True
    else:
        row = PipelineVersion(
            name=spec.name,
            version=spec.version,
            sha256=sha,
            source=text,
            loaded_from=source[:500],
            loaded_by=actor,
            loaded_at=at or utcnow(),
            active=True,
        )
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=actor,
        entity="pipeline",
        entity_id=f"{spec.name}@{spec.version}",
        action="install",
        details={"sha256": sha, "stages": [s.id for s in spec.stages], "from": source[:500]},
        at=at,
    )
    return row, True


def active_row(session: Session) -> PipelineVersion | None:
    return session.exec(_ACTIVE).first()


_ACTIVE = select(PipelineVersion).where(PipelineVersion.active)


def active(session: Session) -> tuple[PipelineVersion, PipelineSpec]:
    """The active pipeline; a clear error if none is installed. Its row is a shared, read-only
    one (reference.shared): to install another, install() reads its own."""
    rows = reference.shared(session, _ACTIVE, {})
    row = rows[0] if rows else None
    if row is None:
        raise InputError(
            Problem("no pipeline is installed: run `procure init` or `procure pipeline load FILE`")
        )
    return row, spec_of(row)


def describe(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The stages in a form fit for printing or JSON."""
    out = []
    for stage in spec.stages:
        out.append(
            {
                "id": stage.id,
                "name": stage.name,
                "roles": list(stage.roles),
                "mode": stage.mode,
                "when": stage.when,
                "unless": stage.unless,
                "after": list(spec.dependencies(stage)),
                "sla_hours": stage.sla_hours,
                "escalate_to": stage.escalate_to,
                "inputs": list(stage.inputs),
                "inform": [{"role": i.role, "when": i.when} for i in stage.inform],
            }
        )
    return out
