"""Validated field types shared by every input (files, CLI arguments, web forms, API payloads).

Each type refuses what would be dangerous or meaningless downstream: control and bidi
characters, spreadsheet formula prefixes, floats in money, fractional or absurd quantities.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

MAX_QUANTITY = 10_000
MAX_UNIT_PRICE = Decimal("1000000.00")
CURRENCIES = frozenset(
    {"EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "JPY", "CAD", "AUD"}
)

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_SLUG = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Invisible characters that reorder or hide text: bidi controls, zero-width spaces, BOMs.
_BIDI = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    "\u200b\u2060\ufeff\u180e"
)
_FORMULA_START = ("=", "+", "@", "\t", "\r")


def _check_text(value: str, *, multiline: bool) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    for index, char in enumerate(value):
        if char in _BIDI:
            raise ValueError(
                f"contains an invisible character (U+{ord(char):04X}) at position {index + 1}"
            )
        category = unicodedata.category(char)
        if category == "Cc" and not (multiline and char in "\n\t"):
            raise ValueError(
                f"contains a control character (U+{ord(char):04X}) at position {index + 1}"
            )
        if category in ("Cs", "Co", "Cn"):
            raise ValueError(
                f"contains an invalid character (U+{ord(char):04X}) at position {index + 1}"
            )
    if value.startswith(_FORMULA_START) or (
        value.startswith("-") and len(value) > 1 and not value[1].isspace()
    ):
        raise ValueError(
            f"starts with {value[0]!r}, which spreadsheets run as a formula; rephrase it"
        )
    return value


def single_line(value: str) -> str:
    """Text on one line: names, titles, codes people typed."""
    return _check_text(value, multiline=False)


def multi_line(value: str) -> str:
    """Free text that may span lines: justifications, comments."""
    return _check_text(value, multiline=True)


def email(value: Any) -> str:
    """An email address, lower-cased."""
    if not isinstance(value, str):
        raise ValueError("must be an email address")
    value = value.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError(f"not an email address: {value[:80]!r}")
    return value


def code(value: Any) -> str:
    """An identifier such as a SKU or a cost-centre code."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _CODE.match(value.strip()):
        raise ValueError(
            "must be 1-64 letters, digits, '.', '_', '/' or '-', starting with a letter or digit"
        )
    return value.strip()


def slug(value: Any) -> str:
    """A lower-case identifier: pipeline and stage ids."""
    if not isinstance(value, str) or not _SLUG.match(value):
        raise ValueError("must be lower-case letters, digits and '_', starting with a letter")
    return value


def quantity(value: Any) -> int:
    """A whole number of units, 1 to MAX_QUANTITY."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, float):
        raise ValueError("must be a whole number, not a float")
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"[+-]?\d+(\.0*)?", value):
            raise ValueError(f"must be a whole number (got {value[:40]!r})")
        value = Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"must be a whole number (got {value})")
        if value > MAX_QUANTITY:  # before int(): 1e999999999 would take forever to convert
            raise ValueError(f"must be at most {MAX_QUANTITY:,} per line (got {str(value)[:40]})")
        if value != value.to_integral_value():
            raise ValueError(f"must be a whole number (got {value})")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError("must be a whole number")
    if value < 1:
        raise ValueError(f"must be at least 1 (got {value})")
    if value > MAX_QUANTITY:
        raise ValueError(f"must be at most {MAX_QUANTITY:,} per line (got {value:,})")
    return value


def amount(value: Any) -> Decimal:
    """A money amount: 0 or more, at most two decimals, never a float."""
    if isinstance(value, bool | float):
        raise ValueError("must be an exact amount such as 899.00 (floats are not accepted)")
    if isinstance(value, int):
        value = Decimal(value)
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not an amount: {value[:40]!r}") from None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError("must be an amount such as 899.00")
    if value < 0:
        raise ValueError(f"must not be negative (got {value})")
    if value > MAX_UNIT_PRICE:  # before quantizing: a huge number cannot be quantized
        raise ValueError(f"is implausibly large (got {str(value)[:40]}; at most {MAX_UNIT_PRICE})")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError(f"has more than two decimals (got {value})")
    return value.quantize(Decimal("0.01")).copy_abs()


def currency(value: Any) -> str:
    """An ISO 4217 currency code that procure knows."""
    if not isinstance(value, str) or value.strip().upper() not in CURRENCIES:
        known = ", ".join(sorted(CURRENCIES))
        raise ValueError(f"unknown currency {value!r} (known: {known})")
    return value.strip().upper()


def roles_list(value: Any) -> Any:
    """Accept roles as a list or as one string separated by spaces, commas, ';' or '|'."""
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,;|]+", value.strip()) if part]
    return value


_TRUE = frozenset({"true", "yes", "on", "1", "t", "y"})
_FALSE = frozenset({"false", "no", "off", "0", "f", "n"})


def flag(value: Any) -> bool | None:
    """A yes/no field read alike from YAML, JSON and CSV: true/false, yes/no, on/off or 1/0 in
    any case, as a boolean, a number or text; empty or null means not given (a CSV's empty
    cell). A number other than 1 or 0 (1.0 included) is refused, as in a CSV."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "":
            return None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"expected true or false (or yes/no, on/off, 1/0), not {str(value)!r}")


Name = Annotated[str, AfterValidator(single_line)]
Text = Annotated[str, AfterValidator(multi_line)]
Email = Annotated[str, BeforeValidator(email)]
Code = Annotated[str, BeforeValidator(code)]
Slug = Annotated[str, BeforeValidator(slug)]
Quantity = Annotated[int, BeforeValidator(quantity)]
Amount = Annotated[Decimal, BeforeValidator(amount)]


def _priced(value: Decimal) -> Decimal:
    if not value:
        raise ValueError("must be more than 0.00: a price is what something costs")
    return value


# A catalog's price (a list price, a tier's, a monthly rate): an amount above 0.00.
Price = Annotated[Decimal, BeforeValidator(amount), AfterValidator(_priced)]
Currency = Annotated[str, BeforeValidator(currency)]
Flag = Annotated[bool | None, BeforeValidator(flag)]  # None: the file does not say


def _flag_or(default: bool) -> Any:
    def read(value: Any) -> bool:
        found = flag(value)
        return default if found is None else found

    return BeforeValidator(read)


# A yes/no field with a default (an empty CSV cell, or null, means the default).
DefaultYes = Annotated[bool, _flag_or(True)]
DefaultNo = Annotated[bool, _flag_or(False)]
