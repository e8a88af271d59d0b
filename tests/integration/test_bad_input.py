"""Bad input through the plain functions: every problem names its file, line and field, nothing is written.

Parsing needs no database. What is checked against the organisation, the catalog, the pipeline
or the devices runs on SQLite and PostgreSQL, against one database per backend shared by this
module: bad input must write nothing, and every such test compares a snapshot of the database
(row counts, statuses, names, prices, the audit head) before and after.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import select

from models import actions, pipeline
from models.assets import Assignment, SerialIn, read_serials_file
from models.catalog import ItemCreate, check_catalog, load_catalog, read_catalog_file
from models.db import transaction
from models.errors import FieldErrors, InputError, Problem
from models.org import load_org, read_org_file
from models.pipeline import check_file
from models.requests import LineCreate, Request, RequestLine, RequestUpdate, read_request_file
from tests.factories import IDA, NINA, NOW, PAUL, RITA, approve_all, submit
from tests.worlds import World, world_fixture, writes_nothing

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ helpers


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def variant(base: str, old: str, new: str) -> str:
    """The base file with one passage changed (the passage must occur exactly once)."""
    assert base.count(old) == 1, f"{old!r} occurs {base.count(old)} times"
    return base.replace(old, new)


def expect(
    caught: pytest.ExceptionInfo[InputError],
    *,
    source: str | None,
    line: int | None,
    field: str | None,
    fragment: str,
    alone: bool = True,
) -> Problem:
    """The problem at (line, field); every problem names the source; the message holds fragment."""
    problems = caught.value.problems
    listing = "\n".join(str(p) for p in problems)
    assert all(p.source == source for p in problems), listing
    found = [p for p in problems if (p.line, p.field) == (line, field)]
    assert found, f"no problem at line {line}, field {field}; got:\n{listing}"
    assert fragment in found[0].message, listing
    if alone:
        assert len(problems) == 1, listing
    return found[0]


def test_the_snapshot_notices_a_write(engine: Engine) -> None:
    # The guard every database test below relies on: a single new request does not go unseen.
    with (
        pytest.raises(AssertionError, match="bad input changed the database"),
        writes_nothing(engine),
    ):
        submit(engine)


# ------------------------------------------------------------------ a shared database per backend


world = world_fixture()


def test_the_shared_world_is_in_the_states_the_tests_assume(world: World) -> None:
    with world.engine.connect() as connection:
        statuses = dict(connection.execute(text("SELECT id, status FROM request")).all())
        assets = dict(connection.execute(text("SELECT serial, status FROM asset")).all())
    refs = [world.ordered, world.delivered, world.deployed, world.returned]
    refs += [world.in_review, world.sent_back]
    assert [statuses[int(ref[3:])] for ref in refs] == [
        "ordered",
        "delivered",
        "rolled_out",
        "rolled_out",
        "in_review",
        "changes_requested",
    ]
    assert world.ordered == "PR-0001"
    assert {s: assets[s] for s in ("SN-D-1", "SN-P-1", "SN-R-1", "SN-R-2")} == {
        "SN-D-1": "delivered",
        "SN-P-1": "deployed",
        "SN-R-1": "erased",
        "SN-R-2": "returned",
    }


# ------------------------------------------------------------------ request files: YAML

REQUEST = """\
kind: onboarding
requester: rita.requester@example.com
on_behalf_of: nina.newhire@example.com
cost_centre: CC-ENG
needed_by: 2026-12-23
justification: Nina joins the platform team.
lines:
  - {sku: LAPTOP-STD-14, quantity: 1}
  - {sku: MON-27, quantity: 2, unit_price: 279.00}
"""
JUSTIFICATION = "Nina joins the platform team."
LINES = (
    "lines:\n  - {sku: LAPTOP-STD-14, quantity: 1}\n"
    "  - {sku: MON-27, quantity: 2, unit_price: 279.00}\n"
)


def test_the_sample_request_file_is_valid(tmp_path: Path) -> None:
    (draft,) = read_request_file(write(tmp_path / "req.yaml", REQUEST))
    assert [(ln.sku, ln.quantity, ln.unit_price) for ln in draft.create.lines] == [
        ("LAPTOP-STD-14", 1, None),
        ("MON-27", 2, Decimal("279.00")),
    ]


# fmt: off
BAD_VALUES = [
    # quantities: zero, negative, fractional, absurd, not a number
    pytest.param("quantity: 1}", "quantity: 1.5}", 8, "lines[0].quantity", "must be a whole number (got 1.5)", id="fractional quantity"),
    pytest.param("quantity: 1}", "quantity: 0}", 8, "lines[0].quantity", "must be at least 1 (got 0)", id="zero quantity"),
    pytest.param("quantity: 1}", "quantity: -3}", 8, "lines[0].quantity", "must be at least 1 (got -3)", id="negative quantity"),
    pytest.param("quantity: 1}", "quantity: 10001}", 8, "lines[0].quantity", "must be at most 10,000 per line (got 10,001)", id="absurd quantity"),
    pytest.param("quantity: 1}", "quantity: 1_000_000}", 8, "lines[0].quantity", "must be at most 10,000", id="absurd quantity with underscores"),
    pytest.param("quantity: 2,", "quantity: two,", 9, "lines[1].quantity", "must be a whole number (got 'two')", id="quantity in words"),
    pytest.param("quantity: 2,", "quantity: true,", 9, "lines[1].quantity", "must be a whole number", id="quantity true"),
    # money: more than two decimals, negative, absurd, a decimal comma, an unknown currency
    pytest.param("279.00", "279.001", 9, "lines[1].unit_price", "has more than two decimals (got 279.001)", id="three decimals"),
    pytest.param("279.00", "-279.00", 9, "lines[1].unit_price", "must not be negative (got -279.00)", id="negative price"),
    pytest.param("279.00", "0.00", 9, "lines[1].unit_price", "must be more than 0.00", id="zero price"),
    pytest.param("279.00", "2000000.00", 9, "lines[1].unit_price", "is implausibly large", id="absurd price"),
    pytest.param("279.00", "'279,00'", 9, "lines[1].unit_price", "not an amount: '279,00'", id="decimal comma"),
    pytest.param("279.00", "1.0e999999", 9, "lines[1].unit_price", "", id="astronomic price"),
    pytest.param(JUSTIFICATION, "Nina.\ncurrency: EURO", 7, "currency", "unknown currency 'EURO'", id="unknown currency"),
    # kinds, people, codes, dates
    pytest.param("kind: onboarding", "kind: purchase", 1, "kind", "(got 'purchase')", id="unknown kind"),
    pytest.param("requester: rita.requester@example.com", "requester: rita", 2, "requester", "not an email address: 'rita'", id="not an email"),
    pytest.param("cost_centre: CC-ENG", "cost_centre: CC ENG", 4, "cost_centre", "must be 1-64 letters", id="cost centre with a space"),
    pytest.param("needed_by: 2026-12-23", "needed_by: next week", 5, "needed_by", "not a date (YYYY-MM-DD): 'next week'", id="date in words"),
    pytest.param("sku: LAPTOP-STD-14", "sku: '=cmd|calc'", 8, "lines[0].sku", "must be 1-64 letters", id="formula as sku"),
    pytest.param("quantity: 2, unit_price: 279.00}", "quantity: 2, ownership: rented}", 9, "lines[1].ownership", "(got 'rented')", id="unknown ownership"),
    pytest.param("quantity: 2, unit_price: 279.00}", "quantity: 2, ownership: leased, term_months: 0}", 9, "lines[1].term_months", "greater than or equal to 1", id="lease of no months"),
    # shape
    pytest.param(LINES, "lines: []\n", 7, "lines", "is empty: give lines, or a bundle", id="no lines"),
    pytest.param("requester: rita.requester@example.com\n", "", 1, "requester", "is required", id="missing requester"),
    pytest.param("cost_centre: CC-ENG", "cost_centre: CC-ENG\ncolour: red", 5, "colour", "is not a known field", id="unknown field"),
    pytest.param("quantity: 1}", "quantity: 1, colour: red}", 8, "lines[0].colour", "is not a known field", id="unknown line field"),
    # unicode and control characters (YAML escapes), spreadsheet formula prefixes
    pytest.param(JUSTIFICATION, '"Nina\\a joins"', 6, "justification", "control character (U+0007) at position 5", id="bell"),
    pytest.param(JUSTIFICATION, '"Nina\\e[2J joins"', 6, "justification", "control character (U+001B) at position 5", id="terminal escape"),
    pytest.param(JUSTIFICATION, '"Nina\\0 joins"', 6, "justification", "control character (U+0000)", id="escaped NUL"),
    pytest.param(JUSTIFICATION, '"Nina\\x85 joins"', 6, "justification", "control character (U+0085)", id="C1 next line"),
    pytest.param(JUSTIFICATION, '"Nina \\u202eoj snioj"', 6, "justification", "invisible character (U+202E) at position 6", id="right-to-left override"),
    pytest.param(JUSTIFICATION, '"Nina \\ue000"', 6, "justification", "invalid character (U+E000)", id="private use character"),
    pytest.param(JUSTIFICATION, '\'=HYPERLINK("http://evil.example", "ok")\'', 6, "justification", "starts with '=', which spreadsheets run as a formula", id="formula ="),
    pytest.param(JUSTIFICATION, "'+49 30 123456'", 6, "justification", "starts with '+'", id="formula +"),
    pytest.param(JUSTIFICATION, "'-2+3+cmd|calc'", 6, "justification", "starts with '-'", id="formula -"),
    pytest.param(JUSTIFICATION, "'@SUM(A1:A9)'", 6, "justification", "starts with '@'", id="formula @"),
    pytest.param(JUSTIFICATION, '"\\t=1+2"', 6, "justification", "starts with '='", id="formula behind a tab"),
    pytest.param("cost_centre: CC-ENG", "cost_centre: CC-ENG\nidempotency_key: '=1+1'", 5, "idempotency_key", "starts with '='", id="formula as key"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "line", "field", "fragment"), BAD_VALUES)
def test_a_bad_value_in_a_request_file_is_named_with_its_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str, fragment: str
) -> None:
    path = write(tmp_path / "req.yaml", variant(REQUEST, old, new))
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    problem = expect(caught, source=str(path), line=line, field=field, fragment=fragment)
    assert str(problem).startswith(f"{path}:{line}: {field}: ")


def test_ordinary_unicode_and_line_breaks_in_free_text_are_accepted(tmp_path: Path) -> None:
    text_ = "Zoë joins the Zürich team 👩\u200d💻 (東京 → Köln).\nSecond line."
    quoted = '"' + text_.replace("\n", "\\n") + '"'
    path = write(tmp_path / "req.yaml", variant(REQUEST, JUSTIFICATION, quoted))
    (draft,) = read_request_file(path)
    assert draft.create.justification == text_


# fmt: off
MALFORMED_YAML = [
    pytest.param(REQUEST + "kind: refresh\n", 10, "duplicate key 'kind' (first on line 1)", id="duplicate key"),
    pytest.param(variant(REQUEST, "quantity: 2,", "quantity: 2, quantity: 3,"), 9, "duplicate key 'quantity'", id="duplicate key in a line"),
    pytest.param(variant(REQUEST, "  - {sku: MON-27", " - {sku: MON-27"), 9, "invalid YAML", id="bad indentation"),
    pytest.param(variant(REQUEST, "  - {sku: MON-27", "\t- {sku: MON-27"), 9, "invalid YAML", id="tab indentation"),
    pytest.param(variant(REQUEST, "quantity: 1}", "quantity: 1}}"), 8, "invalid YAML", id="stray brace"),
    pytest.param(variant(REQUEST, "Nina joins", "Nina: joins"), 6, "mapping values are not allowed", id="colon in plain text"),
    pytest.param(variant(REQUEST, "quantity: 1}", "quantity: .nan}"), 8, "not a number: '.nan'", id="NaN quantity"),
    pytest.param(variant(REQUEST, "279.00", ".inf"), 9, "not a number: '.inf'", id="infinite price"),
    pytest.param(variant(REQUEST, "Nina joins", "Nina\x07 joins"), 6, "0007", id="raw control character"),
    pytest.param(variant(REQUEST, "Nina joins", "Nina\x1b[2J joins"), 6, "001b", id="raw terminal escape"),
]
# fmt: on


@pytest.mark.parametrize(("content", "line", "fragment"), MALFORMED_YAML)
def test_malformed_yaml_is_refused_with_its_line(
    tmp_path: Path, content: str, line: int, fragment: str
) -> None:
    path = write(tmp_path / "req.yaml", content)
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    (problem,) = caught.value.problems
    assert (problem.source, problem.line) == (str(path), line), problem
    assert fragment.lower() in problem.message.lower()
    assert str(problem).startswith(f"{path}:{line}: ")


# fmt: off
SHAPES = [
    pytest.param("", None, None, "expected a list (or a mapping with requests)", id="empty file"),
    pytest.param("# only a comment\n", None, None, "expected a list", id="only a comment"),
    pytest.param("42\n", 1, None, "expected a list (or a mapping with requests)", id="a number"),
    pytest.param("[]\n", 1, None, "holds no request", id="empty list"),
    pytest.param("requests: []\n", 1, None, "holds no request", id="empty requests"),
    pytest.param("requests: 5\n", 1, None, "expected a list", id="requests not a list"),
    pytest.param("- 42\n", 1, "[0]", "a request must be a mapping of fields", id="list of numbers"),
]
# fmt: on


@pytest.mark.parametrize(("content", "line", "field", "fragment"), SHAPES)
def test_a_request_file_of_the_wrong_shape_is_refused(
    tmp_path: Path, content: str, line: int | None, field: str | None, fragment: str
) -> None:
    path = write(tmp_path / "req.yaml", content)
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    expect(caught, source=str(path), line=line, field=field, fragment=fragment)


def test_a_self_referencing_yaml_anchor_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "req.yaml", variant(REQUEST, JUSTIFICATION, "&j [*j]"))
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    assert caught.value.problems[0].source == str(path)
    assert caught.value.problems[0].line == 6


def _run_isolated(code: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
    """Run code in a fresh interpreter (a runaway parse cannot be stopped in-process)."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None


READ_AND_REPORT = """
from models.errors import InputError
from models.requests import read_request_file
try:
    read_request_file({path!r})
except InputError as exc:
    print("refused at line", exc.problems[0].line)
"""


def test_a_yaml_alias_bomb_is_refused_promptly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = write(tmp_path / "req.yaml", "\n".join([*lines, "kind: *a8", ""]))
    result = _run_isolated(READ_AND_REPORT.format(path=str(path)), timeout=3)
    assert result is not None, "reading a 1 KB file with nested aliases did not finish in 3 s"
    assert "refused at line" in result.stdout, result.stderr[-2000:]


def test_an_astronomic_quantity_is_refused_promptly(tmp_path: Path) -> None:
    path = write(
        tmp_path / "req.yaml", variant(REQUEST, "quantity: 1}", "quantity: 1.0e+999999999}")
    )
    result = _run_isolated(READ_AND_REPORT.format(path=str(path)), timeout=3)
    assert result is not None, "validating quantity 1.0e+999999999 did not finish in 3 s"
    assert "refused at line 8" in result.stdout, result.stderr[-2000:]


def _missing(path: Path) -> None:
    """Leave the file absent."""


def _directory(path: Path) -> None:
    path.mkdir()


def _latin1(path: Path) -> None:
    path.write_bytes(variant(REQUEST, "Nina joins", "Zürich").encode("latin-1"))


def _nul(path: Path) -> None:
    path.write_bytes(variant(REQUEST, "cost_centre", "cost\0_centre").encode())


def _plain(path: Path) -> None:
    path.write_text(REQUEST, encoding="utf-8")


def _too_large(path: Path) -> None:
    with path.open("wb") as handle:  # sparse: nothing is actually written
        handle.truncate(50 * 1024 * 1024 + 1)


# fmt: off
UNREADABLE = [
    pytest.param("req.yaml", _missing, None, "no such file", id="missing file"),
    pytest.param("req.yaml", _directory, None, "is a directory, not a file", id="directory"),
    pytest.param("req.yaml", _latin1, 6, "is not UTF-8 text (byte 0xfc)", id="latin-1"),
    pytest.param("req.yaml", _nul, 4, "contains a NUL byte", id="NUL byte"),
    pytest.param("req.txt", _plain, None, "unknown file type '.txt': use .yaml, .json or .csv", id="txt"),
    pytest.param("req", _plain, None, "unknown file type '(none)'", id="no extension"),
    pytest.param("req.yaml.bak", _plain, None, "unknown file type '.bak'", id="backup"),
    pytest.param("req.yaml", _too_large, None, "too large", id="too large"),
]
# fmt: on


@pytest.mark.parametrize(("name", "make", "line", "fragment"), UNREADABLE)
def test_a_file_that_is_not_a_readable_request_file_is_named(
    tmp_path: Path, name: str, make: Callable[[Path], None], line: int | None, fragment: str
) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    expect(caught, source=str(path), line=line, field=None, fragment=fragment)


# ------------------------------------------------------------------ request files: JSON

REQUEST_JSON = """\
{
  "kind": "onboarding",
  "requester": "rita.requester@example.com",
  "on_behalf_of": "nina.newhire@example.com",
  "cost_centre": "CC-ENG",
  "needed_by": "2026-12-23",
  "justification": "Nina joins the platform team.",
  "lines": [
    {"sku": "LAPTOP-STD-14", "quantity": 1},
    {"sku": "MON-27", "quantity": 2, "unit_price": 279.00}
  ]
}
"""

# fmt: off
BAD_JSON = [
    pytest.param('"quantity": 1}', '"quantity": 1.5}', 9, "lines[0].quantity", "must be a whole number (got 1.5)", id="fractional quantity"),
    pytest.param('"quantity": 1}', '"quantity": -1}', 9, "lines[0].quantity", "must be at least 1 (got -1)", id="negative quantity"),
    pytest.param("279.00", "279.001", 10, "lines[1].unit_price", "has more than two decimals (got 279.001)", id="three decimals"),
    pytest.param("279.00", "-0.01", 10, "lines[1].unit_price", "must not be negative", id="negative price"),
    pytest.param("279.00", "0", 10, "lines[1].unit_price", "must be more than 0.00", id="zero price"),
    pytest.param('"CC-ENG",', '"CC-ENG",\n  "currency": "XXX",', 6, "currency", "unknown currency 'XXX'", id="unknown currency"),
    pytest.param("Nina joins", "Nina\\u0007 joins", 7, "justification", "control character (U+0007)", id="control character"),
    pytest.param("Nina joins", "Nina \\u202e joins", 7, "justification", "invisible character (U+202E)", id="bidi override"),
    pytest.param('"Nina joins the platform team."', '"=1+2"', 7, "justification", "starts with '='", id="formula"),
    pytest.param("279.00}", "279.00},", 11, None, "invalid JSON", id="trailing comma"),
    pytest.param('"kind": "onboarding"', "'kind': 'onboarding'", 2, None, "invalid JSON", id="single quotes"),
    pytest.param("279.00", "NaN", 10, None, "NaN is not a number procure accepts", id="NaN"),
    pytest.param('"CC-ENG",', '"CC-ENG",\n  "cost_centre": "CC-IT",', 6, None, "duplicate key 'cost_centre'", id="duplicate key"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "line", "field", "fragment"), BAD_JSON)
def test_a_bad_json_request_file_is_named_with_its_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str | None, fragment: str
) -> None:
    path = write(tmp_path / "req.json", variant(REQUEST_JSON, old, new))
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    expect(caught, source=str(path), line=line, field=field, fragment=fragment)


# ------------------------------------------------------------------ request files: CSV

REQUEST_CSV = """\
ref,kind,requester,on_behalf_of,cost_centre,needed_by,justification,sku,quantity,unit_price
A,onboarding,rita.requester@example.com,nina.newhire@example.com,CC-ENG,2026-12-23,New hire,LAPTOP-STD-14,1,
A,onboarding,rita.requester@example.com,nina.newhire@example.com,CC-ENG,2026-12-23,New hire,MON-27,2,279.00
B,refresh,rita.requester@example.com,,CC-ENG,2026-12-23,Dock for the desk,DOCK-USB4,1,
"""
HEADER = REQUEST_CSV.splitlines()[0]


def test_the_sample_csv_groups_its_rows_into_requests(tmp_path: Path) -> None:
    drafts = read_request_file(write(tmp_path / "req.csv", REQUEST_CSV))
    assert [[ln.sku for ln in d.create.lines] for d in drafts] == [
        ["LAPTOP-STD-14", "MON-27"],
        ["DOCK-USB4"],
    ]


def test_a_csv_without_a_ref_column_makes_each_row_a_request(tmp_path: Path) -> None:
    without_ref = "\n".join(row.split(",", 1)[1] for row in REQUEST_CSV.splitlines()) + "\n"
    drafts = read_request_file(write(tmp_path / "req.csv", without_ref))
    assert [[ln.sku for ln in d.create.lines] for d in drafts] == [
        ["LAPTOP-STD-14"],
        ["MON-27"],
        ["DOCK-USB4"],
    ]


# fmt: off
BAD_CSV = [
    pytest.param("MON-27,2,", "MON-27,1.5,", 3, "lines[1].quantity", "must be a whole number (got '1.5')", id="fractional quantity"),
    pytest.param("DOCK-USB4,1,", "DOCK-USB4,0,", 4, "lines[0].quantity", "must be at least 1 (got 0)", id="zero quantity"),
    pytest.param("DOCK-USB4,1,", "DOCK-USB4,99999,", 4, "lines[0].quantity", "must be at most 10,000", id="absurd quantity"),
    pytest.param("279.00", "279.001", 3, "lines[1].unit_price", "has more than two decimals", id="three decimals"),
    pytest.param("279.00", "-279.00", 3, "lines[1].unit_price", "must not be negative", id="negative price"),
    pytest.param("279.00", "0.00", 3, "lines[1].unit_price", "must be more than 0.00", id="zero price"),
    # a row of request A that lost its ref: not a request of its own
    pytest.param("A,onboarding,rita.requester@example.com,nina.newhire@example.com,CC-ENG,2026-12-23,New hire,MON-27", ",onboarding,rita.requester@example.com,nina.newhire@example.com,CC-ENG,2026-12-23,New hire,MON-27", 3, "ref", "is empty: every row names its request", id="row without its request"),
    pytest.param("B,refresh", " ,refresh", 4, "ref", "is empty: every row names its request", id="blank ref"),
    pytest.param("Dock for the desk", "=1+2", 4, "justification", "starts with '='", id="formula ="),
    pytest.param("Dock for the desk", "@SUM(A1:A2)", 4, "justification", "starts with '@'", id="formula @"),
    pytest.param("Dock for the desk", "Dock\x0bfor the desk", 4, "justification", "control character (U+000B)", id="vertical tab"),
    pytest.param("2026-12-23,Dock", "2026-13-23,Dock", 4, "needed_by", "not a date (YYYY-MM-DD): '2026-13-23'", id="month 13"),
    pytest.param("DOCK-USB4,1,", "DOCK-USB4,1,,surplus", 4, None, "has 11 fields, the header has 10", id="too many fields"),
    pytest.param("DOCK-USB4,1,", "DOCK-USB4", 4, None, "has 8 fields, the header has 10", id="too few fields"),
    pytest.param("CC-ENG,2026-12-23,New hire,MON-27", "CC-IT,2026-12-23,New hire,MON-27", 3, "cost_centre", "differs from the first row of request 'A'", id="request rows disagree"),
    pytest.param(",unit_price\n", ",unit_price,colour\n", 1, None, "unknown column(s): colour", id="unknown column"),
    pytest.param(",unit_price\n", ",sku\n", 1, None, "a column name appears twice", id="duplicate column"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "line", "field", "fragment"), BAD_CSV)
def test_a_bad_csv_request_file_is_named_with_its_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str | None, fragment: str
) -> None:
    path = write(tmp_path / "req.csv", variant(REQUEST_CSV, old, new))
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    expect(caught, source=str(path), line=line, field=field, fragment=fragment)


def test_a_csv_without_a_required_column_names_the_header_line(tmp_path: Path) -> None:
    without_quantity = "\n".join(
        ",".join(cells[:8] + cells[9:])
        for cells in (row.split(",") for row in REQUEST_CSV.splitlines())
    )
    path = write(tmp_path / "req.csv", without_quantity + "\n")
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    expect(caught, source=str(path), line=1, field=None, fragment="missing column(s): quantity")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param("", "is empty: expected a header row", id="empty"),
        pytest.param(HEADER + "\n", "", id="header only"),
        pytest.param(HEADER + "\n,,,,,,,,,\n\n", "", id="blank rows only"),
    ],
)
def test_a_csv_without_any_request_is_refused(tmp_path: Path, content: str, fragment: str) -> None:
    path = write(tmp_path / "req.csv", content)
    with pytest.raises(InputError) as caught:
        read_request_file(path)
    (problem,) = caught.value.problems
    assert problem.source == str(path)
    assert fragment in problem.message


# ------------------------------------------------------------------ submitting: references and dates

# fmt: off
BAD_REFERENCES = [
    pytest.param("sku: LAPTOP-STD-14", "sku: LAPTOP-XXL-99", 8, "lines[0].sku", "unknown SKU LAPTOP-XXL-99", id="unknown SKU"),
    pytest.param("requester: rita.requester@example.com", "requester: ghost@example.com", 2, "requester", "unknown person ghost@example.com", id="unknown requester"),
    pytest.param("on_behalf_of: nina.newhire@example.com", "on_behalf_of: ghost@example.com", 3, "on_behalf_of", "unknown person ghost@example.com", id="unknown beneficiary"),
    pytest.param("cost_centre: CC-ENG", "cost_centre: CC-NOPE", 4, "cost_centre", "unknown cost centre CC-NOPE", id="unknown cost centre"),
    pytest.param("needed_by: 2026-12-23", "needed_by: 2026-11-24", 5, "needed_by", "2026-11-24 is in the past (today is 2026-11-25)", id="yesterday"),
    pytest.param("needed_by: 2026-12-23", "needed_by: 1999-12-31", 5, "needed_by", "is in the past", id="last century"),
    pytest.param("needed_by: 2026-12-23", "needed_by: 2126-12-23", 5, "needed_by", "more than five years ahead", id="next century"),
    pytest.param(JUSTIFICATION, "Nina.\ncurrency: USD", 9, "lines[0].sku", "is priced in EUR, the request is in USD", id="other currency"),
    pytest.param("quantity: 2, unit_price: 279.00}", "quantity: 2, ownership: leased}", 9, "lines[1].ownership", "no lease offer for MON-27", id="lease without an offer"),
    pytest.param("cost_centre: CC-ENG", "cost_centre: CC-ENG\nidempotency_key: hr-4711", 5, "idempotency_key", "'hr-4711' was already used for PR-0001 with different content", id="key reused"),
]
# fmt: on


def _submit_file(engine: Engine, path: Path) -> list[actions.Submitted]:
    drafts = read_request_file(path)
    with transaction(engine) as session:
        return actions.submit(session, drafts=drafts, now=NOW)


@pytest.mark.parametrize(("old", "new", "line", "field", "fragment"), BAD_REFERENCES)
def test_an_unknown_reference_or_a_bad_date_is_named_and_nothing_is_submitted(
    world: World, tmp_path: Path, old: str, new: str, line: int, field: str, fragment: str
) -> None:
    path = write(tmp_path / "req.yaml", variant(REQUEST, old, new))
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        _submit_file(world.engine, path)
    expect(caught, source=str(path), line=line, field=field, fragment=fragment, alone=False)


def test_every_problem_of_a_request_is_reported_at_once(world: World, tmp_path: Path) -> None:
    content = variant(REQUEST, "rita.requester@", "ghost@")
    content = variant(content, "2026-12-23", "2026-11-01")
    content = variant(content, "sku: MON-27", "sku: MON-99")
    path = write(tmp_path / "req.yaml", content)
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        _submit_file(world.engine, path)
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (2, "requester"),
        (5, "needed_by"),
        (9, "lines[1].sku"),
    ]


def test_an_unknown_requester_asking_for_themselves_is_named_once_as_requester(
    world: World, tmp_path: Path
) -> None:
    # No on_behalf_of: the devices are for the requester, whose problem is theirs alone.
    content = variant(REQUEST, "on_behalf_of: nina.newhire@example.com\n", "")
    path = write(tmp_path / "req.yaml", variant(content, "rita.requester@", "ghost@"))
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        _submit_file(world.engine, path)
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
        (2, "requester", "unknown person ghost@example.com")
    ]


TWO_REQUESTS = """\
- kind: onboarding
  requester: rita.requester@example.com
  on_behalf_of: nina.newhire@example.com
  cost_centre: CC-ENG
  needed_by: 2026-12-23
  justification: First of two.
  lines: [{sku: LAPTOP-STD-14, quantity: 1}]
- kind: refresh
  requester: rita.requester@example.com
  cost_centre: CC-ENG
  needed_by: 2026-12-23
  justification: Second of two.
  lines: [{sku: PHONE-XL, quantity: 1}]
"""
TWO_REQUESTS_JSON = """\
[
  {"kind": "onboarding", "requester": "rita.requester@example.com", "cost_centre": "CC-ENG",
   "needed_by": "2026-12-23", "lines": [{"sku": "LAPTOP-STD-14", "quantity": 1}]},
  {"kind": "refresh", "requester": "rita.requester@example.com", "cost_centre": "CC-ENG",
   "needed_by": "2026-12-23", "lines": [{"sku": "PHONE-XL", "quantity": 1}]}
]
"""


@pytest.mark.parametrize(
    ("name", "content", "line", "field"),
    [
        pytest.param("req.yaml", TWO_REQUESTS, 13, "[1].lines[0].sku", id="yaml list"),
        pytest.param(
            "req.yaml",
            "requests:\n" + "".join(f"  {ln}\n" for ln in TWO_REQUESTS.splitlines()),
            14,
            "requests[1].lines[0].sku",
            id="yaml requests",
        ),
        pytest.param("req.json", TWO_REQUESTS_JSON, 5, "[1].lines[0].sku", id="json list"),
        pytest.param(
            "req.csv",
            variant(REQUEST_CSV, "DOCK-USB4", "PHONE-XL"),
            4,
            "lines[0].sku",
            id="csv",
        ),
    ],
)
def test_a_file_whose_second_request_is_bad_submits_neither(
    world: World, tmp_path: Path, name: str, content: str, line: int, field: str
) -> None:
    path = write(tmp_path / name, content)
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        _submit_file(world.engine, path)
    expect(caught, source=str(path), line=line, field=field, fragment="unknown SKU PHONE-XL")


def test_one_idempotency_key_for_two_different_requests_in_a_file_is_refused(
    world: World, tmp_path: Path
) -> None:
    content = TWO_REQUESTS.replace("PHONE-XL", "PHONE-STD").replace(
        "  lines:", "  idempotency_key: k-2\n  lines:"
    )
    path = write(tmp_path / "req.yaml", content)
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        _submit_file(world.engine, path)
    expect(
        caught,
        source=str(path),
        line=14,
        field="[1].idempotency_key",
        fragment="'k-2' is used twice in this file",
    )


# ------------------------------------------------------------------ money is exact


def test_money_from_yaml_and_json_is_decimal_and_stays_exact_in_the_database(
    engine: Engine, tmp_path: Path
) -> None:
    yaml_file = write(
        tmp_path / "req.yaml",
        variant(REQUEST, "quantity: 2, unit_price: 279.00", "quantity: 3, unit_price: 0.10"),
    )
    json_file = write(
        tmp_path / "req.json",
        variant(
            variant(
                REQUEST_JSON,
                '"quantity": 2, "unit_price": 279.00',
                '"quantity": 3, "unit_price": 0.10',
            ),
            "Nina joins",
            "Nina (JSON) joins",
        ),
    )
    refs = []
    for path in (yaml_file, json_file):
        (draft,) = read_request_file(path)
        price = draft.create.lines[1].unit_price
        assert type(price) is Decimal and price == Decimal("0.10")
        refs += [r.ref for r in _submit_file(engine, path) if r.created]
    assert len(refs) == 2
    with transaction(engine, readonly=True) as session:
        lines = session.exec(select(RequestLine).where(RequestLine.sku == "MON-27")).all()
        totals = [r.total for r in session.exec(select(Request)).all()]
    assert [(ln.unit_price, ln.total) for ln in lines] == [(Decimal("0.10"), Decimal("0.30"))] * 2
    assert totals == [Decimal("949.30")] * 2  # 949.00 + 3 x 0.10, not 949.3000000000001
    with engine.connect() as connection:
        raw = connection.execute(text("SELECT unit_price, total FROM request_line")).all()
    assert raw and not any(isinstance(value, float) for row in raw for value in row)


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        pytest.param(
            LineCreate,
            {"sku": "MON-27", "quantity": 1, "unit_price": 0.1},
            "unit_price",
            id="unit price",
        ),
        pytest.param(LineCreate, {"sku": "MON-27", "quantity": 2.0}, "quantity", id="quantity"),
        pytest.param(
            ItemCreate,
            {"sku": "X-1", "name": "X", "category": "x", "list_price": 9.99, "supplier": "ACME"},
            "list_price",
            id="list price",
        ),
    ],
)
def test_a_float_is_never_accepted_where_an_exact_number_is_expected(
    model: type, data: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert "float" in error["msg"]


# ------------------------------------------------------------------ organisation files

ORG = """\
people:
  - email: zoe.new@example.com
    name: Zoë New
    department: Engineering
    roles: [requester]
  - {email: rita.requester@example.com, name: Rita Renamed, department: Engineering}
cost_centres:
  - {code: CC-NEW, name: New team, budget_owner: zoe.new@example.com}
delegations:
  - {delegator: zoe.new@example.com, delegate: bob.budget@example.com, from: 2026-12-01, to: 2026-12-31}
"""
PEOPLE_CSV = """\
email,name,department,roles
zoe.new@example.com,Zoë New,Engineering,requester
yann.new@example.com,Yann New,IT,it hr
rita.requester@example.com,Rita Renamed,Engineering,requester
"""

# fmt: off
BAD_ORG = [
    # found when the file is read
    pytest.param("org.yaml", ORG, "roles: [requester]", "roles: [requester, wizard]", 5, "people[0].roles[1]", "(got 'wizard')", id="unknown role"),
    pytest.param("org.yaml", ORG, "email: zoe.new@example.com\n", "email: zoe.new\n", 2, "people[0].email", "not an email address: 'zoe.new'", id="not an email"),
    pytest.param("org.yaml", ORG, "name: Zoë New", "name: \"=cmd|' /C calc'!A0\"", 3, "people[0].name", "starts with '='", id="formula name"),
    pytest.param("org.yaml", ORG, "name: Zoë New", 'name: "Zoë\\nNew"', 3, "people[0].name", "control character (U+000A)", id="line break in a name"),
    pytest.param("org.yaml", ORG, "name: Zoë New", 'name: "Zoë \\u202eweN"', 3, "people[0].name", "invisible character (U+202E)", id="bidi in a name"),
    pytest.param("org.yaml", ORG, "    roles: [requester]", "    phone: 555\n    roles: [requester]", 5, "people[0].phone", "is not a known field", id="unknown field"),
    pytest.param("org.yaml", ORG, "from: 2026-12-01", "from: soon", 10, "delegations[0].from", "not a date (YYYY-MM-DD): 'soon'", id="date in words"),
    pytest.param("org.yaml", ORG, "delegations:", "people: []\ndelegations:", 9, None, "duplicate key 'people' (first on line 1)", id="duplicate key"),
    pytest.param("org.csv", PEOPLE_CSV, "Yann New", "=1+2", 3, "people[1].name", "starts with '='", id="csv formula name"),
    pytest.param("org.csv", PEOPLE_CSV, "Yann New", "@SUM(A1)", 3, "people[1].name", "starts with '@'", id="csv @ name"),
    pytest.param("org.csv", PEOPLE_CSV, "it hr", "it wizard", 3, "people[1].roles[1]", "(got 'wizard')", id="csv unknown role"),
    pytest.param("org.csv", PEOPLE_CSV, "IT,it hr", "IT,it,hr", 3, None, "has 5 fields, the header has 4", id="csv too many fields"),
    pytest.param("org.csv", PEOPLE_CSV, "email,name", "mail,name", 1, None, "missing column(s): email", id="csv missing column"),
    pytest.param("org.csv", PEOPLE_CSV, ",roles\n", ",roles,phone\n", 1, None, "unknown column(s): phone", id="csv unknown column"),
    # found against the organisation in the database
    pytest.param("org.yaml", ORG, "budget_owner: zoe.new@example.com", "budget_owner: ghost@example.com", 8, "cost_centres[0].budget_owner", "unknown person ghost@example.com", id="unknown budget owner"),
    pytest.param("org.yaml", ORG, "delegator: zoe.new@example.com", "delegator: ghost@example.com", 10, "delegations[0].delegator", "unknown person ghost@example.com", id="unknown delegator"),
    pytest.param("org.yaml", ORG, "delegate: bob.budget@example.com", "delegate: zoe.new@example.com", 10, "delegations[0].delegate", "cannot delegate to themselves", id="self delegation"),
    pytest.param("org.yaml", ORG, "to: 2026-12-31", "to: 2026-11-30", 10, "delegations[0].to", "ends (2026-11-30) before it starts (2026-12-01)", id="delegation ends first"),
    pytest.param("org.yaml", ORG, "{email: rita.requester@example.com", "{email: zoe.new@example.com", 6, "people[1].email", "is listed twice (also people[0])", id="person twice"),
    pytest.param("org.csv", PEOPLE_CSV, "yann.new@example.com", "zoe.new@example.com", 3, "people[1].email", "is listed twice", id="csv person twice"),
]
# fmt: on


@pytest.mark.parametrize(("name", "base", "old", "new", "line", "field", "fragment"), BAD_ORG)
def test_a_bad_organisation_file_is_named_and_changes_nobody(
    world: World,
    tmp_path: Path,
    name: str,
    base: str,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path / name, variant(base, old, new))
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        org, doc = read_org_file(path)
        with transaction(world.engine) as session:
            load_org(session, org=org, doc=doc, actor="tests", at=NOW)
    expect(caught, source=str(path), line=line, field=field, fragment=fragment, alone=False)


# ------------------------------------------------------------------ catalog files

CATALOG = """\
suppliers:
  - {code: ACME, name: Acme Devices, lead_time_days: 5}
items:
  - sku: TAB-11
    name: Tablet 11"
    category: tablet
    list_price: 499.00
    supplier: ACME
  - {sku: LAPTOP-STD-14, name: Standard laptop 14", category: laptop, list_price: 899.00, supplier: NORDIC-IT}
"""
ITEMS_CSV = """\
sku,name,category,list_price,supplier,lead_time_days
TAB-11,Tablet 11,tablet,499.00,ACME,5
PEN-1,Stylus,accessory,89.00,ACME,5
"""
SUPPLIER = "    supplier: ACME\n"

# fmt: off
BAD_CATALOG = [
    pytest.param("cat.yaml", CATALOG, "499.00", "499.999", 7, "items[0].list_price", "has more than two decimals (got 499.999)", id="three decimals"),
    pytest.param("cat.yaml", CATALOG, "499.00", "-499.00", 7, "items[0].list_price", "must not be negative", id="negative price"),
    pytest.param("cat.yaml", CATALOG, "499.00", "4990000.00", 7, "items[0].list_price", "is implausibly large", id="absurd price"),
    pytest.param("cat.yaml", CATALOG, "499.00", "'499,00'", 7, "items[0].list_price", "not an amount", id="decimal comma"),
    pytest.param("cat.yaml", CATALOG, SUPPLIER, SUPPLIER + "    currency: EURO\n", 9, "items[0].currency", "unknown currency 'EURO'", id="unknown currency"),
    pytest.param("cat.yaml", CATALOG, 'name: Tablet 11"', "name: '=HYPERLINK(\"x\")'", 5, "items[0].name", "starts with '='", id="formula name"),
    pytest.param("cat.yaml", CATALOG, "category: tablet", "category: tab let", 6, "items[0].category", "must be 1-64 letters", id="category with a space"),
    pytest.param("cat.yaml", CATALOG, SUPPLIER, SUPPLIER + "    specs: {ram: '+8 GB'}\n", 9, "items[0].specs.ram", "starts with '+'", id="formula in specs"),
    pytest.param("cat.yaml", CATALOG, SUPPLIER, SUPPLIER + "    specs: {ram: {size: 16}}\n", 9, "items[0].specs.ram", "", id="nested specs"),
    pytest.param("cat.yaml", CATALOG, "lead_time_days: 5", "lead_time_days: -1", 2, "suppliers[0].lead_time_days", "greater than or equal to 0", id="negative lead time"),
    pytest.param("cat.csv", ITEMS_CSV, "89.00", "89.001", 3, "items[1].list_price", "has more than two decimals", id="csv three decimals"),
    pytest.param("cat.csv", ITEMS_CSV, "89.00", "-89.00", 3, "items[1].list_price", "must not be negative", id="csv negative price"),
    pytest.param("cat.csv", ITEMS_CSV, "89.00", "NaN", 3, "items[1].list_price", "must be an amount", id="csv NaN price"),
    pytest.param("cat.csv", ITEMS_CSV, "89.00", "1e999999", 3, "items[1].list_price", "", id="csv astronomic price"),
    pytest.param("cat.csv", ITEMS_CSV, "Stylus", "=2+3", 3, "items[1].name", "starts with '='", id="csv formula name"),
    pytest.param("cat.csv", ITEMS_CSV, "ACME,5\nPEN", "ACME,5,x\nPEN", 2, None, "has 7 fields, the header has 6", id="csv too many fields"),
    pytest.param("cat.csv", ITEMS_CSV, ",lead_time_days\n", ",lead_days\n", 1, None, "unknown column(s): lead_days", id="csv unknown column"),
    # found against the catalog in the database
    pytest.param("cat.yaml", CATALOG, SUPPLIER, "    supplier: NOPE\n", 8, "items[0].supplier", "unknown supplier NOPE", id="unknown supplier"),
    pytest.param("cat.yaml", CATALOG, "sku: TAB-11", "sku: LAPTOP-STD-14", 9, "items[1].sku", "is listed twice (also items[0])", id="sku twice"),
    pytest.param("cat.yaml", CATALOG, "items:", "  - {code: ACME, name: Again}\nitems:", 3, "suppliers[1].code", "ACME is listed twice (also suppliers[0])", id="supplier twice"),
    pytest.param("cat.csv", ITEMS_CSV, "89.00,ACME,5", "89.00,NEWCO,", 3, "items[1].supplier", "unknown supplier NEWCO", id="csv unknown supplier"),
]
# fmt: on


@pytest.mark.parametrize(("name", "base", "old", "new", "line", "field", "fragment"), BAD_CATALOG)
def test_a_bad_catalog_file_is_named_and_changes_no_item(
    world: World,
    tmp_path: Path,
    name: str,
    base: str,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path / name, variant(base, old, new))
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        catalog, doc = read_catalog_file(path)
        with transaction(world.engine) as session:
            load_catalog(session, catalog=catalog, doc=doc, actor="tests", at=NOW)
    expect(caught, source=str(path), line=line, field=field, fragment=fragment)


def test_a_catalog_file_with_bad_fields_still_has_every_reference_and_tier_table_checked(
    world: World, tmp_path: Path
) -> None:
    content = """\
agreements:
  - code: FA-NEW
    name: New agreement
    supplier: NOPE
    valid_from: 2026-01-01
    valid_to: 2027-12-31
    committed_volume: 0
    prices:
      - sku: MON-27
        tiers:
          - {from: 1, to: 9, unit_price: 1.005}
          - {from: 20, unit_price: 250.00}
offers:
  - {sku: PHONE-XL, kind: rent, provider: DAAS-CO, monthly_rate: 20.00, term_months: 24}
"""
    path = write(tmp_path / "cat.yaml", content)
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        catalog, doc = read_catalog_file(path)
        with transaction(world.engine) as session:
            load_catalog(session, catalog=catalog, doc=doc, actor="tests", at=NOW)
    # The fields alone: the references of the valid part are the CLI's to add.
    assert isinstance(caught.value, FieldErrors)
    with transaction(world.engine, readonly=True) as session:
        every = caught.value.with_checks(lambda found: check_catalog(session, *found))
    assert [(p.line, p.field, p.message) for p in every.problems] == [
        (4, "agreements[0].supplier", "unknown supplier NOPE"),
        (7, "agreements[0].committed_volume", "Input should be greater than or equal to 1"),
        (
            11,
            "agreements[0].prices[0].tiers[0].unit_price",
            "has more than two decimals (got 1.005)",
        ),
        (12, "agreements[0].prices[0].tiers[1].from", "leaves a gap: units 10 to 19 have no price"),
        (14, "offers[0].kind", "Input should be 'lease' or 'daas' (got 'rent')"),
        (14, "offers[0].sku", "unknown SKU PHONE-XL"),  # a line's field errors come first
    ]


# ------------------------------------------------------------------ pipeline files

PIPELINE = """\
name: small
version: 2
calendar:
  timezone: Europe/Berlin
stages:
  - id: review
    name: Review
    roles: [it, purchasing]
    sla_hours: 16
  - id: budget
    name: Budget
    roles: [budget_owner]
    mode: any
    after: [review]
    when: total >= 1000
    inform:
      - role: hr
        when: kind == 'onboarding'
"""
WHEN = "when: total >= 1000"
BUDGET_BODY = "    name: Budget\n    roles: [budget_owner]\n    mode: any\n"


def test_the_sample_pipeline_file_is_valid(tmp_path: Path) -> None:
    spec = check_file(write(tmp_path / "pipeline.yaml", PIPELINE))
    assert [s.id for s in spec.stages] == ["review", "budget"]


# fmt: off
BAD_PIPELINES = [
    pytest.param("roles: [it, purchasing]", "roles: [it, wizard]", 8, "stages[0].roles", "unknown role 'wizard'", id="unknown role"),
    pytest.param("roles: [it, purchasing]", "roles: [it, it]", 8, "stages[0].roles", "a role is listed twice", id="role twice"),
    pytest.param("roles: [it, purchasing]", "roles: []", 8, "stages[0].roles", "needs at least 1 entry", id="no roles"),
    pytest.param("after: [review]", "after: [reveiw]", 14, "stages[1].after[0]", "'reveiw' is not a stage of this pipeline", id="unknown stage in after"),
    pytest.param("after: [review]", "after: [budget]", 14, "stages[1].after[0]", "a stage cannot wait for itself", id="waits for itself"),
    pytest.param("    sla_hours: 16\n", "    sla_hours: 16\n    after: [budget]\n", 10, "stages[0].after[0]", "'budget' must be a stage listed before this one", id="waits for a later stage"),
    pytest.param("id: budget\n" + BUDGET_BODY + "    after: [review]\n", "id: review\n" + BUDGET_BODY, 10, "stages[1].id", "stage id 'review' is used twice (also stages[0])", id="duplicate stage id"),
    pytest.param(WHEN, "when: totl >= 10", 15, "stages[1].when", "'totl' is undefined; the names a condition can use are: total,", id="unknown name in condition"),
    pytest.param(WHEN, "when: total >=", 15, "stages[1].when", "is not a valid expression", id="condition syntax error"),
    pytest.param(WHEN, "when: total >= 1000)", 15, "stages[1].when", "is not a valid expression", id="unbalanced parenthesis"),
    pytest.param(WHEN, "when: ().__class__.__mro__", 15, "stages[1].when", "is not allowed: access to attribute '__class__'", id="sandbox escape via mro"),
    pytest.param(WHEN, "when: \"cycler.__init__.__globals__.os.system('id')\"", 15, "stages[1].when", "", id="sandbox escape via globals"),
    pytest.param(WHEN, "when: \"lipsum.__globals__['os'].popen('id').read()\"", 15, "stages[1].when", "", id="sandbox escape via lipsum"),
    pytest.param(WHEN, "when: total.__class__", 15, "stages[1].when", "is not allowed", id="dunder on a value"),
    pytest.param(WHEN, "when: range(10**9) | list | length > 0", 15, "stages[1].when", "", id="huge range"),
    pytest.param(WHEN, "when: total ** 99999999 > 1", 15, "stages[1].when", "", id="huge power"),
    pytest.param(WHEN, "when: \"'x' * 100000000 | length > 0\"", 15, "stages[1].when", "", id="huge string"),
    pytest.param(WHEN, "when: kind >= 10", 15, "stages[1].when", "cannot be evaluated", id="text compared with a number"),
    pytest.param(WHEN, "when: " + "total > 1 and " * 40 + "true", 15, "stages[1].when", "is longer than 500 characters", id="long condition"),
    pytest.param("when: kind == 'onboarding'", "when: kind == onboarding", 18, "stages[1].inform[0].when", "'onboarding' is undefined", id="unquoted text in inform"),
    pytest.param("    mode: any\n", "    mode: any\n    approvers: [bob]\n", 14, "stages[1].approvers", "is not a known field", id="unknown stage key"),
    pytest.param("version: 2\n", "version: 2\nowner: me\n", 3, "owner", "is not a known field", id="unknown top-level key"),
    pytest.param("sla_hours: 16", "sla_hours: 0", 9, "stages[0].sla_hours", "greater than or equal to 1", id="sla of 0 hours"),
    pytest.param("sla_hours: 16", "sla_hours: -4", 9, "stages[0].sla_hours", "greater than or equal to 1", id="negative sla"),
    pytest.param("sla_hours: 16", "sla_hours: 1.5", 9, "stages[0].sla_hours", "fractional part", id="fractional sla"),
    pytest.param("sla_hours: 16", "sla_hours: 16\n    escalate_to: boss", 10, "stages[0].escalate_to", "unknown role 'boss'", id="unknown escalation role"),
    pytest.param("sla_hours: 16", "sla_hours: 16\n    inputs: [total, colour]", 10, "stages[0].inputs[1]", "(got 'colour')", id="unknown input"),
    pytest.param("id: budget", "id: Budget Stage", 10, "stages[1].id", "must be lower-case letters", id="bad stage id"),
    pytest.param("mode: any", "mode: some", 13, "stages[1].mode", "(got 'some')", id="unknown mode"),
    pytest.param("role: hr", "role: payroll", 17, "stages[1].inform[0].role", "unknown role 'payroll'", id="unknown role informed"),
    pytest.param("version: 2", "version: 0", 2, "version", "greater than or equal to 1", id="version 0"),
    pytest.param("version: 2", "version: 9223372036854776000", 2, "version", "less than or equal to 1000000", id="version beyond a database integer"),
    pytest.param("Europe/Berlin", "Mars/Olympus", 4, "calendar.timezone", "unknown time zone 'Mars/Olympus'", id="unknown time zone"),
    pytest.param("  timezone: Europe/Berlin\n", "  timezone: Europe/Berlin\n  start: '18:00'\n  end: '08:00'\n", 4, "calendar", "end (08:00:00) must be after start (18:00:00)", id="day ends before it starts"),
    pytest.param("  timezone: Europe/Berlin\n", "  timezone: Europe/Berlin\n  end: '00:00Z'\n", 5, "calendar.end", "a time of day without a zone, e.g. 08:00 (the calendar's timezone applies), not 00:00:00+00:00", id="an hour with a zone (found by Hypothesis)"),
    pytest.param("    mode: any\n", "    mode: any\n    name: Again\n", 14, None, "duplicate key 'name' (first on line 11)", id="duplicate key"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "line", "field", "fragment"), BAD_PIPELINES)
def test_a_bad_pipeline_file_is_named_with_its_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str | None, fragment: str
) -> None:
    path = write(tmp_path / "pipeline.yaml", variant(PIPELINE, old, new))
    with pytest.raises(InputError) as caught:
        check_file(path)
    expect(caught, source=str(path), line=line, field=field, fragment=fragment)


# fmt: off
IMPOSSIBLE_DATES = [
    pytest.param(read_request_file, "req.yaml", variant(REQUEST, "2026-12-23", "2026-02-30"), 5, id="request needed_by"),
    pytest.param(read_org_file, "org.yaml", variant(ORG, "from: 2026-12-01", "from: 2026-11-31"), 10, id="delegation start"),
    pytest.param(check_file, "pipeline.yaml", variant(PIPELINE, "  timezone: Europe/Berlin\n", "  timezone: Europe/Berlin\n  holidays: [2026-02-30]\n"), 5, id="pipeline holiday"),
]
# fmt: on


@pytest.mark.parametrize(("reader", "name", "content", "line"), IMPOSSIBLE_DATES)
def test_an_impossible_calendar_date_is_refused_with_its_line(
    tmp_path: Path, reader: Callable[[Path], Any], name: str, content: str, line: int
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(InputError) as caught:
        reader(path)
    (problem,) = caught.value.problems
    assert (problem.source, problem.line) == (str(path), line), problem


def test_every_problem_of_a_pipeline_file_is_reported_at_once(tmp_path: Path) -> None:
    content = variant(PIPELINE, "roles: [it, purchasing]", "roles: [it, wizard]")
    content = variant(content, "sla_hours: 16", "sla_hours: 0")
    content = variant(content, WHEN, "when: totl >= 10")
    path = write(tmp_path / "pipeline.yaml", content)
    with pytest.raises(InputError) as caught:
        check_file(path)
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (8, "stages[0].roles"),
        (9, "stages[0].sla_hours"),
        (15, "stages[1].when"),
    ]


def test_a_pipeline_file_s_field_errors_and_stage_references_are_reported_in_one_run(
    tmp_path: Path,
) -> None:
    # The budget stage's mode is wrong, and so is the stage its after: names; a stage with a
    # bad field still has its references checked.
    content = variant(PIPELINE, "sla_hours: 16", "sla_hours: 0")
    content = variant(content, "mode: any", "mode: some")
    content = variant(content, "after: [review]", "after: [reveiw]")
    path = write(tmp_path / "pipeline.yaml", content)
    with pytest.raises(InputError) as caught:
        check_file(path)
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
        (9, "stages[0].sla_hours", "Input should be greater than or equal to 1"),
        (13, "stages[1].mode", "Input should be 'all' or 'any' (got 'some')"),
        (14, "stages[1].after[0]", "'reveiw' is not a stage of this pipeline"),
    ]


def test_a_stage_id_that_fails_leaves_the_stages_waiting_for_it_unknown(tmp_path: Path) -> None:
    path = write(tmp_path / "pipeline.yaml", variant(PIPELINE, "id: review", "id: Review Stage"))
    with pytest.raises(InputError) as caught:
        check_file(path)
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (6, "stages[0].id"),
        (14, "stages[1].after[0]"),
    ]
    assert caught.value.problems[1].message == "'review' is not a stage of this pipeline"


def test_a_bad_pipeline_is_not_installed(world: World) -> None:
    content = variant(PIPELINE, "after: [review]", "after: [nowhere]")
    with (
        writes_nothing(world.engine),
        pytest.raises(InputError) as caught,
        transaction(world.engine) as session,
    ):
        pipeline.install(session, text=content, source="small.yaml", actor="tests", at=NOW)
    expect(
        caught,
        source="small.yaml",
        line=14,
        field="stages[1].after[0]",
        fragment="'nowhere' is not a stage",
    )


# ------------------------------------------------------------------ serials on delivery

# fmt: off
BAD_SERIALS = [
    pytest.param([SerialIn("SN-N-1", "MON-27", 1), SerialIn("SN-N-1", "MON-27", 2)], 2, "serial", "serial SN-N-1 appears twice", id="duplicate serial"),
    pytest.param([SerialIn("SN-D-1", "LAPTOP-STD-14", 1)], 1, "serial", "serial SN-D-1 is already recorded for another device", id="serial already used"),
    pytest.param([SerialIn("SN-N-2", "PHONE-STD", 3)], 3, "sku", "did not order PHONE-STD", id="sku not ordered"),
    pytest.param([SerialIn("SN-N-3", "LAPTOP-STD-14", 1), SerialIn("SN-N-4", "LAPTOP-STD-14", 2)], 2, "sku", "all 1 ordered LAPTOP-STD-14 units are already delivered or listed above", id="too many serials"),
    pytest.param([SerialIn("SN-N-5", None, 4)], 4, "sku", "give the SKU", id="sku needed"),
    pytest.param([SerialIn("SN-N-8", "LAPTOP-STD-14", 1), SerialIn("SN-N-9", "MON-27", 2), SerialIn("SN-N-10", "MON-27", 3), SerialIn("SN-N-11", None, 4)], 4, "sku", "all 3 ordered units (LAPTOP-STD-14, MON-27) are already delivered or listed above", id="one too many without sku"),
    pytest.param([SerialIn("SN-N-6", "MON-27", 1), SerialIn("SN-N-7", "DOCK-USB4", 2)], 2, "sku", "did not order DOCK-USB4", id="good serial before a bad one"),
    pytest.param([], None, None, "no serials given", id="no serials"),
]
# fmt: on


@pytest.mark.parametrize(("units", "line", "field", "fragment"), BAD_SERIALS)
def test_bad_serials_on_delivery_are_named_and_nothing_is_delivered(
    world: World, units: list[SerialIn], line: int | None, field: str | None, fragment: str
) -> None:
    # The request is ordered without a delivery date: a good serial before a bad one would
    # queue the notice of a part delivered without a date, which must be rolled back too.
    with (
        writes_nothing(world.engine),
        pytest.raises(InputError) as caught,
        transaction(world.engine) as session,
    ):
        actions.deliver(session, ref=world.ordered, units=units, now=NOW, source="serials.csv")
    expect(caught, source="serials.csv", line=line, field=field, fragment=fragment)


def test_a_serial_file_sent_again_is_refused_as_already_delivered_for_that_request(
    engine: Engine,
) -> None:
    ref = submit(engine, justification="sent twice", lines=[{"sku": "MON-27", "quantity": 2}])
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, now=NOW)
    first = [SerialIn("SN-TWICE-1", "MON-27", 2)]
    with transaction(engine) as session:
        actions.deliver(session, ref=ref, units=first, now=NOW, source="part.csv")
    with (
        writes_nothing(engine),
        pytest.raises(InputError) as caught,
        transaction(engine) as session,
    ):
        actions.deliver(session, ref=ref, units=first, now=NOW, source="part.csv")
    expect(
        caught,
        source="part.csv",
        line=2,
        field="serial",
        fragment=f"serial SN-TWICE-1 is already delivered for {ref}",
    )


def test_a_text_serial_file_with_a_header_line_is_one_serial_too_many(
    engine: Engine, tmp_path: Path
) -> None:
    # A .txt file has no header: a `serial` line is a serial, one more than the two ordered.
    ref = submit(engine, justification="text file", lines=[{"sku": "MON-27", "quantity": 2}])
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, now=NOW)
    path = write(tmp_path / "serials.txt", "serial\nSN-TXT-1\nSN-TXT-2\n")
    with (
        writes_nothing(engine),
        pytest.raises(InputError) as caught,
        transaction(engine) as session,
    ):
        units = read_serials_file(path)
        actions.deliver(session, ref=ref, units=units, now=NOW, source=str(path))
    expect(
        caught,
        source=str(path),
        line=3,
        field="sku",
        fragment="all 2 ordered MON-27 units are already delivered or listed above",
    )


# ------------------------------------------------------------------ assignments on rollout

# fmt: off
BAD_ASSIGNMENTS = [
    pytest.param([Assignment("SN-D-1", "ghost@example.com", 2)], 2, "email", "unknown or inactive person ghost@example.com", id="unknown person"),
    pytest.param([Assignment("SN-R-2", NINA, 3)], 3, "serial", "SN-R-2 is not a device of", id="serial of another request"),
    pytest.param([Assignment("SN-NOPE", NINA, 1)], 1, "serial", "SN-NOPE is not a device of", id="unknown serial"),
    pytest.param([Assignment("SN-D-1", NINA, 1), Assignment("SN-D-1", RITA, 2)], 2, "serial", "serial SN-D-1 is assigned twice", id="serial twice"),
    pytest.param([], None, None, "no assignments given", id="no assignments"),
]
# fmt: on


@pytest.mark.parametrize(("assignments", "line", "field", "fragment"), BAD_ASSIGNMENTS)
def test_bad_assignments_on_rollout_are_named_and_nothing_is_handed_out(
    world: World,
    assignments: list[Assignment],
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    with (
        writes_nothing(world.engine),
        pytest.raises(InputError) as caught,
        transaction(world.engine) as session,
    ):
        actions.roll_out(
            session,
            ref=world.delivered,
            assignments=assignments,
            actor_email=IDA,
            now=NOW,
            source="assign.csv",
        )
    expect(caught, source="assign.csv", line=line, field=field, fragment=fragment)


# ------------------------------------------------------------------ arguments of actions

ERASURE = {
    "serial": "SN-R-2",
    "certificate": "C-2",
    "method": "NIST 800-88 purge",
    "provider": "DaaS Company",
}
# fmt: off
BAD_ERASURES = [
    pytest.param({"certificate": "=cmd|' /C calc'!A0"}, "certificate", "starts with '='", id="formula certificate"),
    pytest.param({"method": "NIST\x1b[2J"}, "method", "control character (U+001B)", id="escape in method"),
    pytest.param({"provider": "Daa\u202eS"}, "provider", "invisible character (U+202E)", id="bidi in provider"),
    pytest.param({"provider": ""}, "provider", "is required", id="no provider"),
    pytest.param({"provider": "x" * 201}, "provider", "longer than 200 characters", id="long provider"),
    pytest.param({"certificate": "C-1"}, "certificate", "certificate C-1 of DaaS Company is already recorded", id="certificate reused"),
    pytest.param({"serial": "SN R2"}, "serial", "must be 1-64 letters", id="bad serial"),
    pytest.param({"serial": "SN-NOPE"}, None, "no asset with serial SN-NOPE", id="unknown serial"),
]
# fmt: on


@pytest.mark.parametrize(("changes", "field", "fragment"), BAD_ERASURES)
def test_a_bad_erasure_record_is_named_and_nothing_is_erased(
    world: World, changes: dict[str, str], field: str | None, fragment: str
) -> None:
    with (
        writes_nothing(world.engine),
        pytest.raises(InputError) as caught,
        transaction(world.engine) as session,
    ):
        actions.erase(session, **{**ERASURE, **changes}, now=NOW)
    expect(caught, source=None, line=None, field=field, fragment=fragment)


def _decide(world: World, **kw: Any) -> None:
    args = {"ref": world.in_review, "actor_email": PAUL, "outcome": "approve"} | kw
    with transaction(world.engine) as session:
        actions.decide(session, now=NOW, **args)


def _cancel(world: World, **kw: Any) -> None:
    with transaction(world.engine) as session:
        actions.cancel(session, ref=world.in_review, actor_email=RITA, now=NOW, **kw)


def _schedule(world: World, **kw: Any) -> None:
    with transaction(world.engine) as session:
        actions.schedule_delivery(session, ref=world.ordered, actor_email=PAUL, now=NOW, **kw)


def _request_return(world: World, **kw: Any) -> None:
    with transaction(world.engine) as session:
        actions.request_return(session, serial="SN-P-1", actor_email=IDA, now=NOW, **kw)


def _dispose(world: World, **kw: Any) -> None:
    with transaction(world.engine) as session:
        actions.dispose(session, serial="SN-R-1", now=NOW, **kw)


def _resubmit(world: World, **kw: Any) -> None:
    with transaction(world.engine) as session:
        actions.resubmit(session, ref=world.sent_back, actor_email=RITA, now=NOW, **kw)


def _line(sku: str) -> LineCreate:
    return LineCreate(sku=sku, quantity=1)


# fmt: off
BAD_ARGUMENTS = [
    pytest.param(_decide, {"outcome": "maybe"}, None, "unknown decision 'maybe'", id="unknown decision"),
    pytest.param(_decide, {"comment": "ok\x1b]0;pwned\x07"}, "comment", "control character (U+001B)", id="escape in comment"),
    pytest.param(_decide, {"comment": "=1+1"}, "comment", "starts with '='", id="formula comment"),
    pytest.param(_decide, {"comment": "x" * 4001}, "comment", "longer than 4000 characters", id="long comment"),
    pytest.param(_decide, {"stage_key": "nope"}, None, "has no stage 'nope'", id="unknown stage"),
    pytest.param(_decide, {"ref": "PR-abc"}, None, "not a request id: 'PR-abc'", id="request id PR-abc"),
    pytest.param(_decide, {"ref": "PR-0"}, None, "not a request id", id="request id PR-0"),
    pytest.param(_decide, {"ref": "PR-9999"}, None, "no request PR-9999", id="unknown request"),
    pytest.param(_decide, {"actor_email": "ghost@example.com"}, "as", "no person with email ghost@example.com", id="unknown person"),
    pytest.param(_decide, {"actor_email": "ghost"}, "as", "not an email address", id="not an email"),
    pytest.param(_cancel, {"reason": "\u202egninrom"}, "reason", "invisible character (U+202E)", id="bidi cancel reason"),
    pytest.param(_schedule, {"on": NOW.date().replace(day=24)}, "date", "2026-11-24 is in the past (today is 2026-11-25)", id="delivery yesterday"),
    pytest.param(_schedule, {"on": NOW.date().replace(year=2040)}, "date", "more than five years ahead", id="delivery in 2040"),
    pytest.param(_request_return, {"reason": "=HYPERLINK(1)"}, "reason", "starts with '='", id="formula return reason"),
    pytest.param(_dispose, {"to": "landfill"}, "to", "unknown destination 'landfill'", id="unknown destination"),
    pytest.param(_resubmit, {"comment": "done\x00"}, "comment", "control character (U+0000)", id="NUL in comment"),
    pytest.param(_resubmit, {"update": RequestUpdate(lines=[_line("NOPE-1")])}, "lines[0].sku", "unknown SKU NOPE-1", id="resubmitted unknown sku"),
    pytest.param(_resubmit, {"update": RequestUpdate(needed_by=NOW.date().replace(month=1))}, "needed_by", "is in the past", id="resubmitted past date"),
]
# fmt: on


@pytest.mark.parametrize(("action", "arguments", "field", "fragment"), BAD_ARGUMENTS)
def test_a_bad_argument_to_an_action_is_named_and_nothing_changes(
    world: World,
    action: Callable[..., None],
    arguments: dict[str, Any],
    field: str | None,
    fragment: str,
) -> None:
    with writes_nothing(world.engine), pytest.raises(InputError) as caught:
        action(world, **arguments)
    expect(caught, source=None, line=None, field=field, fragment=fragment)
