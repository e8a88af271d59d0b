"""Money and time: Decimal quantized with one rounding rule, timezone-aware UTC datetimes; and
how both read in messages."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

CENT = Decimal("0.01")
ROUNDING = ROUND_HALF_UP
MONEY_MAX = Decimal("90000000000000.00")  # fits a signed 64-bit count of cents with room to spare


def money_text(amount: str | Decimal | None, currency: str) -> str:
    """12,345.60 EUR (or a dash for no amount): an amount as people read it, in messages."""
    if amount is None:
        return "—"
    return f"{Decimal(amount):,.2f} {currency}"


def difference_text(amount: str | Decimal, currency: str) -> str:
    """2,900.00 EUR more, 1,900.00 EUR less, or the same: a difference as people read it."""
    value = Decimal(amount)
    if not value:
        return "the same"
    return f"{money_text(abs(value), currency)} {'more' if value > 0 else 'less'}"


def moment_text(at: datetime, timezone: str) -> str:
    """25 Nov 2026 at 10:00 CET: a moment as people read it, in a time zone (the organisation's:
    its pipeline's calendar)."""
    return f"{as_utc(at).astimezone(ZoneInfo(timezone)):%d %b %Y at %H:%M %Z}"


# Words people write in capitals (roles, contract terms, sourcing options).
_CAPITALS = {"it": "IT", "hr": "HR", "sla": "SLA", "daas": "DaaS", "tco": "TCO"}


def label(value: Any) -> str:
    """'in_review' -> 'in review', 'send_back' -> 'send back', 'daas' -> 'DaaS'."""
    if value is None:
        return "—"
    return " ".join(_CAPITALS.get(w, w) for w in str(value).replace("_", " ").split(" "))


def plural(count: Any, one: str, many: str | None = None) -> str:
    """'1 device', '3 devices', '2 leaves' (plural(2, "leave")): a count and its noun, in
    messages and logs."""
    n = int(count)
    return f"{n} {one if n == 1 else (many or one + 's')}"


def sentence(value: Any) -> str:
    """A text at the start of a sentence: its first letter a capital, the others as they are
    ('DaaS contract' stays so, 'lease' -> 'Lease'), where Jinja's `capitalize` lowers them
    ('Daas contract')."""
    text = str(value)
    return text[:1].upper() + text[1:]


# What ends for a device that is not its warranty: its lease, or its DaaS contract (a "DaaS"
# alone reads as the service, not the contract that ends).
_ENDINGS = {"daas": "DaaS contract"}


def ending(what: Any) -> str:
    """What ends for a device (models.watch: 'warranty', 'lease' or 'daas'), as a noun in a
    sentence: 'warranty', 'lease', 'DaaS contract'."""
    return _ENDINGS.get(str(what), label(what))


def money(value: Any) -> Decimal:
    """Return value as a Decimal quantized to cents (ROUND_HALF_UP); floats are refused."""
    if isinstance(value, bool | float):
        raise TypeError(f"money must be a Decimal, int or str, not {type(value).__name__}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | str):
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"not an amount: {value!r}") from None
    else:
        raise TypeError(f"money must be a Decimal, int or str, not {type(value).__name__}")
    if not d.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    # The range check comes first: quantizing a number of more than 28 digits fails itself.
    if abs(d) > MONEY_MAX:
        raise ValueError(f"amount out of range: {str(value)[:40]!r}")
    q = d.quantize(CENT, rounding=ROUNDING)
    return q.copy_abs() if q.is_zero() else q  # never -0.00


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Convert an aware datetime to UTC; a naive one is refused (its zone would be a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime refused (no time zone): {value.isoformat()}")
    return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """A money column: Decimal in Python, an exact integer count of cents in the database."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(money(value).scaleb(2))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)).scaleb(-2).quantize(CENT)

    @property
    def python_type(self) -> type:
        return Decimal


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp column: aware datetimes in, aware UTC datetimes out, stored in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        utc = as_utc(value)
        if dialect.name == "sqlite":
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @property
    def python_type(self) -> type:
        return datetime
