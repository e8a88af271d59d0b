"""Money and time: cents with one rounding rule, exact storage, aware UTC timestamps.

`models.types.money` is the one place an amount is rounded; the Money column stores an exact
integer count of cents; UTCDateTime refuses naive datetimes and hands back aware UTC ones.
`models.fields.amount` and `quantity` are the validators every input passes through.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError
from sqlmodel import Session, select

from models.catalog import Item, Supplier
from models.db import transaction
from models.fields import MAX_QUANTITY, MAX_UNIT_PRICE, amount, quantity
from models.outbox import Notification
from models.requests import RequestLine
from models.types import MONEY_MAX, as_utc, money
from tests.factories import submit

BERLIN = ZoneInfo("Europe/Berlin")


def case_id(value: Any) -> str:
    """Readable, stable test ids: 'Decimal('0.005')', '2.675', ..."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, str) else repr(value)


# ------------------------------------------------------------------ money()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Half a cent always rounds up, away from zero (ROUND_HALF_UP), never to even.
        (Decimal("0.005"), "0.01"),
        (Decimal("0.015"), "0.02"),  # banker's rounding would give 0.02 too; 0.025 tells them apart
        (Decimal("0.025"), "0.03"),  # banker's rounding would give 0.02
        ("2.675", "2.68"),  # the float 2.675 is 2.67499999...; as text it is exactly 2.675
        (Decimal("-0.005"), "-0.01"),
        ("-2.675", "-2.68"),
        (Decimal("0.004"), "0.00"),
        (Decimal("1.994"), "1.99"),
        (Decimal("1.995"), "2.00"),
        ("1e2", "100.00"),
        ("1E-2", "0.01"),
        (0, "0.00"),
        (5, "5.00"),
        (-7, "-7.00"),
        (123456789, "123456789.00"),
        ("949", "949.00"),
        ("  12.5 ", "12.50"),
        ("1_000", "1000.00"),  # Decimal's own syntax: underscores group digits
        (Decimal("33.33"), "33.33"),
        (MONEY_MAX, "90000000000000.00"),
        (-MONEY_MAX, "-90000000000000.00"),
    ],
    ids=case_id,
)
def test_money_quantizes_to_cents_rounding_half_up(value: Any, expected: str) -> None:
    result = money(value)
    assert isinstance(result, Decimal)
    assert str(result) == expected  # the exact text: two decimal places, no exponent


@pytest.mark.parametrize("value", [0.1, 1.0, 2.675, 0.0, float("nan"), float("inf"), True, False])
def test_money_refuses_floats_and_bools(value: Any) -> None:
    with pytest.raises(TypeError, match=f"not {type(value).__name__}"):
        money(value)


@pytest.mark.parametrize(
    "value",
    [None, [1], {"amount": 1}, b"1.00", object()],
    ids=["None", "list", "dict", "bytes", "object"],
)
def test_money_refuses_values_that_are_not_amounts_at_all(value: Any) -> None:
    with pytest.raises(TypeError, match="money must be a Decimal, int or str"):
        money(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Decimal("NaN"), "not a finite amount"),
        (Decimal("sNaN"), "not a finite amount"),
        (Decimal("Infinity"), "not a finite amount"),
        (Decimal("-Infinity"), "not a finite amount"),
        ("NaN", "not a finite amount"),
        ("Infinity", "not a finite amount"),
        ("-inf", "not a finite amount"),
        ("", "not an amount"),
        ("abc", "not an amount"),
        ("12,50", "not an amount"),
        ("1 000", "not an amount"),
        ("€12", "not an amount"),
    ],
    ids=case_id,
)
def test_money_refuses_text_that_is_not_a_finite_amount(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        money(value)


@pytest.mark.parametrize(
    "value",
    [
        MONEY_MAX + Decimal("0.01"),
        -MONEY_MAX - Decimal("0.01"),
        "90000000000000.005",  # rounds up past the maximum
        "1e15",
        "1e20",
        # Beyond 28 significant digits quantizing itself fails: still "out of range", not a crash.
        "1e26",
        Decimal("1E+30"),
        10**40,
    ],
    ids=case_id,
)
def test_money_refuses_amounts_out_of_range(value: Any) -> None:
    with pytest.raises(ValueError, match="out of range"):
        money(value)


def test_three_times_33_33_is_exactly_99_99() -> None:
    # 33.33 is 3,333 cents; 3 x 3,333 cents = 9,999 cents = 99.99 exactly.
    # (In binary floating point 33.33 is 33.3299999999999982946974341757595539093017578125.)
    unit = money("33.33")
    assert unit * 3 == Decimal("99.99")
    assert money(unit * 3) == Decimal("99.99")
    assert money(sum([unit, unit, unit], Decimal(0))) == Decimal("99.99")
    # Splitting 100.00 three ways: 100.00 / 3 = 33.333... -> 33.33 each, and 3 x 33.33 = 99.99:
    # one cent short of 100.00. Rounding happens once, where money() is called, not later.
    share = money(Decimal("100.00") / 3)
    assert share == Decimal("33.33")
    assert Decimal("100.00") - 3 * share == Decimal("0.01")


# ------------------------------------------------------------------ the Money column
#
# Each database test below runs once per backend and walks its whole table in that one
# database: a fresh PostgreSQL database per row would cost more time than the checks.

# (written, integer cents in the database, read back)
MONEY_ROUND_TRIPS: list[tuple[Any, int, str]] = [
    (Decimal("0.01"), 1, "0.01"),
    (Decimal("1234.56"), 123456, "1234.56"),
    (Decimal("949"), 94900, "949.00"),
    (Decimal("0.10"), 10, "0.10"),
    (Decimal("0.005"), 1, "0.01"),  # written through money(): half a cent rounds up
    (Decimal("0.00"), 0, "0.00"),
    (MONEY_MAX, 9_000_000_000_000_000, "90000000000000.00"),  # well inside a signed 64-bit
    (12345, 1234500, "12345.00"),
    ("19.99", 1999, "19.99"),
]


def _supplier_id(session: Session) -> int:
    supplier = session.exec(select(Supplier).where(Supplier.code == "NORDIC-IT")).one()
    assert supplier.id is not None
    return supplier.id


def _raw(session: Session, sql: str, **params: Any) -> Any:
    return session.connection().execute(text(sql), params).scalar_one()


def _probe_item(session: Session, sku: str, price: Any) -> Item:
    return Item(
        sku=sku,
        name="Money probe",
        category="probe",
        list_price=price,
        supplier_id=_supplier_id(session),
    )


def test_the_money_column_stores_integer_cents_and_reads_back_the_exact_decimal(
    engine: Engine,
) -> None:
    with transaction(engine) as session:
        for index, (price, _, _) in enumerate(MONEY_ROUND_TRIPS):
            session.add(_probe_item(session, f"TEST-MONEY-{index}", price))
    with transaction(engine, readonly=True) as session:
        for index, (price, cents, read_back) in enumerate(MONEY_ROUND_TRIPS):
            sku = f"TEST-MONEY-{index}"
            stored = _raw(session, "SELECT list_price FROM item WHERE sku = :sku", sku=sku)
            item = session.exec(select(Item).where(Item.sku == sku)).one()
            assert (type(stored), stored) == (int, cents), f"{price!r} is stored as {stored!r}"
            assert isinstance(item.list_price, Decimal)
            assert str(item.list_price) == read_back, f"{price!r} reads back as {item.list_price!r}"


def test_a_request_line_of_3_times_33_33_is_stored_as_9999_cents(engine: Engine) -> None:
    # 3 x 33.33 = 99.99: 3 x 3,333 cents = 9,999 cents, both on the line and on the request.
    ref = submit(engine, lines=[{"sku": "MON-27", "quantity": 3, "unit_price": "33.33"}])
    request_id = int(ref.removeprefix("PR-"))
    with transaction(engine, readonly=True) as session:
        line = session.exec(select(RequestLine).where(RequestLine.request_id == request_id)).one()
        raw = session.connection().execute(
            text("SELECT unit_price, total FROM request_line WHERE id = :id"), {"id": line.id}
        )
        raw_unit, raw_total = raw.one()
        raw_request_total = _raw(session, "SELECT total FROM request WHERE id = :id", id=request_id)
    assert (line.unit_price, line.total) == (Decimal("33.33"), Decimal("99.99"))
    assert (raw_unit, raw_total, raw_request_total) == (3333, 9999, 9999)


def test_the_money_column_refuses_a_float_at_bind_time_and_writes_nothing(engine: Engine) -> None:
    for price in (12.5, 0.1, True):
        with pytest.raises(StatementError) as caught, transaction(engine) as session:
            session.add(_probe_item(session, "TEST-FLOAT", price))
            session.flush()
        assert isinstance(caught.value.orig, TypeError)
        assert f"not {type(price).__name__}" in str(caught.value.orig)
    with transaction(engine, readonly=True) as session:
        assert session.exec(select(Item).where(Item.sku == "TEST-FLOAT")).first() is None


# ------------------------------------------------------------------ UTCDateTime

# (written, the UTC wall time it stands for)
UTC_ROUND_TRIPS: list[tuple[datetime, datetime]] = [
    # 25 Nov 2026 is winter time in Berlin: CET = UTC+1, so 10:00 there is 09:00 UTC.
    (datetime(2026, 11, 25, 10, 0, tzinfo=BERLIN), datetime(2026, 11, 25, 9, 0)),
    # 1 Jul 2026 is summer time: CEST = UTC+2, so 10:00 there is 08:00 UTC.
    (datetime(2026, 7, 1, 10, 0, tzinfo=BERLIN), datetime(2026, 7, 1, 8, 0)),
    # +05:30: 12:00 there is 06:30 UTC.
    (
        datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 3, 1, 6, 30),
    ),
    # 00:30 in Berlin on 1 Jan is still 31 Dec in UTC: the date moves with the instant.
    (datetime(2026, 1, 1, 0, 30, tzinfo=BERLIN), datetime(2025, 12, 31, 23, 30)),
    # Microseconds survive.
    (datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 123456)),
]


def _notification(key: str, created_at: datetime) -> Notification:
    return Notification(event="probe", audience="team:it", dedup_key=key, created_at=created_at)


def test_utc_datetimes_are_stored_in_utc_and_read_back_aware_in_utc(engine: Engine) -> None:
    with transaction(engine) as session:
        for index, (written, _) in enumerate(UTC_ROUND_TRIPS):
            session.add(_notification(f"utc-probe-{index}", written))
    with transaction(engine, readonly=True) as session:
        for index, (written, utc_instant) in enumerate(UTC_ROUND_TRIPS):
            key = f"utc-probe-{index}"
            row = session.exec(select(Notification).where(Notification.dedup_key == key)).one()
            as_stored = _raw(
                session, "SELECT created_at FROM notification WHERE dedup_key = :key", key=key
            )
            assert row.created_at.tzinfo is not None, written
            assert row.created_at.utcoffset() == timedelta(0), written
            assert row.created_at == written  # the same instant
            assert row.created_at.replace(tzinfo=None) == utc_instant
            # In the database: SQLite keeps the UTC wall time as text, PostgreSQL a timestamptz.
            if isinstance(as_stored, str):
                assert as_stored.startswith(utc_instant.isoformat(sep=" ")), as_stored
            else:
                assert as_stored == utc_instant.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "databases", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_timestamps_come_back_in_utc_whatever_the_session_time_zone(
    engine: Engine,
) -> None:
    written = datetime(2026, 11, 25, 10, 0, tzinfo=BERLIN)
    with transaction(engine) as session:
        session.add(_notification("tz-probe", written))
    with transaction(engine, readonly=True) as session:
        session.connection().execute(text("SET TIME ZONE 'Asia/Tokyo'"))
        row = session.exec(select(Notification).where(Notification.dedup_key == "tz-probe")).one()
    assert row.created_at == written
    assert (row.created_at.hour, row.created_at.tzinfo) == (9, UTC)


def test_utc_datetime_refuses_a_naive_datetime_and_writes_nothing(engine: Engine) -> None:
    with pytest.raises(StatementError) as caught, transaction(engine) as session:
        session.add(_notification("naive-probe", datetime(2026, 11, 25, 10, 0)))
        session.flush()
    assert isinstance(caught.value.orig, ValueError)
    assert "naive datetime refused" in str(caught.value.orig)
    with transaction(engine, readonly=True) as session:
        found = session.exec(select(Notification).where(Notification.dedup_key == "naive-probe"))
        assert found.first() is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 11, 25, 10, 0, tzinfo=BERLIN), datetime(2026, 11, 25, 9, 0, tzinfo=UTC)),
        (datetime(2026, 7, 1, 10, 0, tzinfo=BERLIN), datetime(2026, 7, 1, 8, 0, tzinfo=UTC)),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, tzinfo=UTC)),
    ],
    ids=case_id,
)
def test_as_utc_converts_aware_datetimes_to_utc(value: datetime, expected: datetime) -> None:
    result = as_utc(value)
    assert result == expected
    assert result.tzinfo is UTC


def test_as_utc_refuses_a_naive_datetime_because_its_zone_would_be_a_guess() -> None:
    with pytest.raises(ValueError, match=r"naive datetime refused \(no time zone\): 2026-11-25"):
        as_utc(datetime(2026, 11, 25, 10, 0))


# ------------------------------------------------------------------ models.fields


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("899"), "899.00"),
        (Decimal("899.5"), "899.50"),
        (Decimal("1.230"), "1.23"),  # a trailing zero is not a third decimal
        ("899.00", "899.00"),
        (" 19.99 ", "19.99"),
        ("1e2", "100.00"),
        (0, "0.00"),
        (949, "949.00"),
        (MAX_UNIT_PRICE, "1000000.00"),
    ],
    ids=case_id,
)
def test_amount_accepts_exact_amounts_with_at_most_two_decimals(value: Any, expected: str) -> None:
    result = amount(value)
    assert isinstance(result, Decimal)
    assert str(result) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (899.0, "floats are not accepted"),
        (0.1, "floats are not accepted"),
        (True, "floats are not accepted"),
        ("-1", "must not be negative"),
        (Decimal("-0.01"), "must not be negative"),
        ("1.234", "more than two decimals"),
        (Decimal("0.001"), "more than two decimals"),
        ("1000000.01", "implausibly large"),
        (10**7, "implausibly large"),
        # Far beyond the limit, where quantizing itself overflows Decimal's 28 digits:
        ("1e26", "implausibly large"),
        (Decimal("1E+30"), "implausibly large"),
        ("NaN", "must be an amount"),
        ("Infinity", "must be an amount"),
        (Decimal("sNaN"), "must be an amount"),
        ("abc", "not an amount"),
        ("12,50", "not an amount"),
        ("", "not an amount"),
        (None, "must be an amount"),
        ([899], "must be an amount"),
    ],
    ids=case_id,
)
def test_amount_refuses_floats_negatives_fractions_of_cents_and_nonsense(
    value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        amount(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        (3, 3),
        ("3", 3),
        (" 7 ", 7),
        ("+5", 5),
        ("2.0", 2),
        ("2.00", 2),
        (Decimal("5"), 5),
        (Decimal("5.00"), 5),
        (MAX_QUANTITY, MAX_QUANTITY),
        (str(MAX_QUANTITY), MAX_QUANTITY),
    ],
    ids=case_id,
)
def test_quantity_accepts_whole_numbers_from_1_to_the_maximum(value: Any, expected: int) -> None:
    result = quantity(value)
    assert type(result) is int
    assert result == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "at least 1"),
        (-1, "at least 1"),
        ("-0", "at least 1"),
        ("0", "at least 1"),
        (MAX_QUANTITY + 1, "at most 10,000"),
        ("10001", "at most 10,000"),
        (10**12, "at most 10,000"),
        (1.0, "not a float"),
        (2.5, "not a float"),
        (True, "whole number"),
        (False, "whole number"),
        ("1.5", "whole number"),
        ("1e3", "whole number"),
        ("abc", "whole number"),
        ("", "whole number"),
        ("1,000", "whole number"),
        (Decimal("1.5"), "whole number"),
        (Decimal("NaN"), "whole number"),
        (Decimal("sNaN"), "whole number"),
        (Decimal("Infinity"), "whole number"),
        (None, "whole number"),
        ([1], "whole number"),
    ],
    ids=case_id,
)
def test_quantity_refuses_fractions_floats_bools_and_absurd_counts(
    value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        quantity(value)


@pytest.mark.parametrize("ref", ["PR-¹", "PR-٣", "²", "PR-0", "PR-", "PR-1x", "x"])
def test_a_request_reference_is_ascii_digits_or_bad_input(ref: str) -> None:
    from models.errors import InputError
    from models.requests import parse_ref

    with pytest.raises(InputError, match="not a request id"):
        parse_ref(ref)
    assert parse_ref("pr-0042") == parse_ref(" 42 ") == 42


def test_a_reference_in_a_run_name_reads_as_procure_writes_it_and_never_fails() -> None:
    from models.requests import canonical_ref

    assert canonical_ref("pr-1") == canonical_ref(" 1 ") == canonical_ref(1) == "PR-0001"
    assert canonical_ref("pr-x") == "PR-X"  # not a reference: named as given, not refused
