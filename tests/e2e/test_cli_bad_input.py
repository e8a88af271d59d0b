"""Bad input through the `procure` command (in-process): exit 2, file:line: field: message, nothing written.

Every test runs the CLI on SQLite and on PostgreSQL against one database per backend shared by
this module, and compares a snapshot of the database (row counts, statuses, names, prices, the
audit head) before and after the command. Commands that need no database (`pipeline check`)
run once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from models.catalog import read_catalog_file
from models.org import read_org_file
from models.requests import read_request_file
from procure.cli import main
from tests.factories import IDA, NOW, PAUL, RITA
from tests.worlds import World, world_fixture, writes_nothing

# ------------------------------------------------------------------ the shared database per backend


world = world_fixture()


# ------------------------------------------------------------------ running the CLI


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """`procure` in-process on the world's database, with the fixed clock."""

    def __init__(self, world: World, capsys: pytest.CaptureFixture[str]):
        self.world = world
        self.capsys = capsys

    def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()
        code = main(["--db", self.world.url, *(a.format(**self.world.refs) for a in args)])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def refused(self, *args: str) -> Result:
        """Run a command that must fail with exit 2, print nothing on stdout and write nothing."""
        with writes_nothing(self.world.engine):
            result = self(*args)
        assert_bad_input(result)
        return result


def assert_bad_input(result: Result) -> None:
    assert result.code == 2, f"exit {result.code}; stderr:\n{result.err}"
    assert result.out == ""
    assert "Traceback" not in result.err
    assert "internal error" not in result.err


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCURE_NOW", NOW.isoformat())
    # Internal errors show as users see them (exit 70 and a message), not as a traceback.
    monkeypatch.delenv("PROCURE_DEBUG", raising=False)


@pytest.fixture
def cli(world: World, capsys: pytest.CaptureFixture[str], clock: None) -> Cli:
    return Cli(world, capsys)


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


def where(path: Path, line: int | None, field: str | None) -> str:
    """How the CLI names a place: FILE:LINE: FIELD: (as much of it as is known)."""
    out = str(path) + (f":{line}" if line is not None else "") + ": "
    return out + (f"{field}: " if field else "")


def test_the_shared_world_is_in_the_states_the_tests_assume(cli: Cli) -> None:
    result = cli("request", "list", "--json")
    assert result.code == 0, result.err
    assert result.out.count('"id": "PR-') == 6
    assert cli.world.refs["ordered"] == "PR-0001"
    for key, status in (("ordered", "ordered"), ("delivered", "delivered")):
        shown = cli("request", "show", "{" + key + "}", "--json")
        assert f'"status": "{status}"' in shown.out


# ------------------------------------------------------------------ wrong arguments

# Refused from the input alone, before the database is opened: one backend is enough.
before_the_database = pytest.mark.parametrize("world", ["sqlite"], indirect=True)

# fmt: off
USAGE_ERRORS = [
    pytest.param(("request", "list", "--colour", "red"), "No such option: --colour", id="unknown option"),
    pytest.param(("request", "lsit"), "No such command 'lsit'", id="unknown command"),
    pytest.param(("request", "show"), "Missing argument 'ID'", id="missing id"),
    pytest.param(("decide", "{in_review}", "--approve"), "Missing option '--as'", id="missing --as"),
    pytest.param(("request", "resubmit", "{sent_back}"), "Missing option '--as'", id="resubmit without --as"),
    pytest.param(("decide", "{in_review}", "--as", PAUL, "--approve", "--reject"), "give exactly one of --approve, --reject, --send-back", id="approve and reject"),
    pytest.param(("decide", "{in_review}", "--as", PAUL, "--approve", "--send-back"), "give exactly one of", id="approve and send back"),
    pytest.param(("decide", "{in_review}", "--as", PAUL), "give exactly one of", id="no decision"),
    pytest.param(("terms", "{in_review}", "--all", "--confirm", "sla", "--as", PAUL), "--all: give either --confirm TERM or --all, not both", id="terms all and some"),
    pytest.param(("terms", "{in_review}", "--all"), "--as: give your email to confirm terms (or set PROCURE_USER)", id="terms without --as"),
    pytest.param(("terms", "{in_review}", "--note", "agreed"), "--note: goes with what you confirm", id="terms note alone"),
    pytest.param(("request", "list", "--status", "open"), "--status: unknown status 'open' (one of: draft,", id="unknown status"),
    pytest.param(("request", "list", "--limit", "0"), "Invalid value for '--limit'", id="limit 0"),
    pytest.param(("request", "list", "--limit", "ten"), "Invalid value for '--limit'", id="limit in words"),
    pytest.param(("schedule", "{ordered}", "--date", "2026-13-01"), "--date: not a date (YYYY-MM-DD): '2026-13-01'", id="month 13"),
    pytest.param(("schedule", "{ordered}", "--date", "01.12.2026"), "--date: not a date (YYYY-MM-DD): '01.12.2026'", id="German date"),
    pytest.param(("schedule", "{ordered}"), "Missing option '--date'", id="no date"),
    pytest.param(("asset", "erase", "SN-R-2", "--method", "NIST", "--provider", "X"), "Missing option '--certificate'", id="no certificate"),
    pytest.param(("pipeline", "check"), "Missing argument 'FILE'", id="check without a file"),
    pytest.param(("asset", "list", "--status", "lost"), "--status: unknown status 'lost' (one of: ordered, delivered, deployed,", id="unknown device status"),
    pytest.param(("asset", "list", "--limit", "0"), "Invalid value for '--limit'", id="device list limit 0"),
]
# fmt: on


@before_the_database
@pytest.mark.parametrize(("args", "fragment"), USAGE_ERRORS)
def test_wrong_usage_is_refused_with_exit_2(cli: Cli, args: tuple[str, ...], fragment: str) -> None:
    result = cli.refused(*args)
    assert fragment in result.err


# fmt: off
WRONG_ARGUMENTS = [
    pytest.param(("decide", "PR-abc", "--as", PAUL, "--approve"), "not a request id: 'PR-abc' (expected PR-0042 or 42)", id="request id PR-abc"),
    pytest.param(("request", "show", "PR-abc"), "not a request id: 'PR-abc'", id="show PR-abc"),
    pytest.param(("request", "show", "PR--1"), "not a request id", id="show PR--1"),
    pytest.param(("request", "show", "PR-9999"), "no request PR-9999", id="unknown request"),
    pytest.param(("schedule", "{ordered}", "--date", "2026-11-24"), "date: 2026-11-24 is in the past (today is 2026-11-25)", id="date in the past"),
    pytest.param(("schedule", "{ordered}", "--date", "2036-01-01"), "date: 2036-01-01 is more than five years ahead", id="date too far ahead"),
    pytest.param(("inbox", "--as", "ghost@example.com"), "as: no person with email ghost@example.com", id="unknown person"),
    pytest.param(("inbox", "--as", "ghost"), "as: not an email address: 'ghost'", id="not an email"),
    pytest.param(("inbox", "--as", "rïta@exämple.com"), "as: not an email address", id="non-ASCII email"),
    pytest.param(("order", "{in_review}", "--as", "ghost@example.com"), "as: no person with email", id="order as nobody"),
    pytest.param(("decide", "{in_review}", "--as", PAUL, "--approve", "--comment", "ok\x1b[2J"), "comment: contains a control character (U+001B)", id="terminal escape in comment"),
    pytest.param(("decide", "{in_review}", "--as", PAUL, "--approve", "--comment", "=HYPERLINK(1)"), "comment: starts with '='", id="formula comment"),
    pytest.param(("decide", "{in_review}", "--as", PAUL, "--approve", "--stage", "nope"), "has no stage 'nope'", id="unknown stage"),
    pytest.param(("decide", "{in_review}", "--as", PAUL, "--send-back"), "comment: is needed to send a request back: say what the requester should change", id="send back without a comment"),
    pytest.param(("decide", "{in_review}", "--as", PAUL, "--send-back", "--comment", " "), "comment: is needed to send a request back", id="send back with a blank comment"),
    pytest.param(("decide", "{in_review}", "--as", PAUL, "--reject"), "comment: is needed to reject a request: say why", id="reject without a comment"),
    pytest.param(("request", "cancel", "{in_review}", "--as", RITA, "--reason", "\u202edellecnac"), "reason: contains an invisible character (U+202E)", id="bidi in reason"),
    pytest.param(("asset", "show", "SN NOPE"), "serial: must be 1-64 letters", id="serial with a space"),
    pytest.param(("asset", "show", "SN-NOPE"), "no asset with serial SN-NOPE", id="unknown serial"),
    pytest.param(("asset", "list", "--request", "PR-abc"), "--request: not a request id: 'PR-abc'", id="devices of PR-abc"),
    pytest.param(("asset", "list", "--request", "PR-9999"), "--request: no request PR-9999", id="devices of an unknown request"),
    pytest.param(("asset", "list", "--holder", "ghost@example.com"), "--holder: no person with email ghost@example.com", id="devices of nobody"),
    pytest.param(("asset", "ack", "SN-P-1", "--as", "nina"), "as: not an email address", id="ack as not an email"),
    pytest.param(("asset", "dispose", "SN-R-1", "--to", "landfill"), "to: unknown destination 'landfill'", id="unknown destination"),
    pytest.param(("asset", "request-return", "SN-P-1", "--reason", "=1+1"), "reason: starts with '='", id="formula return reason"),
    pytest.param(("asset", "cancel-return", "SN-P-1", "--reason", "=1+1"), "reason: starts with '='", id="formula cancel-return reason"),
    pytest.param(("asset", "erase", "SN-R-2", "--certificate", "=1+1", "--method", "NIST", "--provider", "DaaS Company"), "certificate: starts with '='", id="formula certificate"),
    pytest.param(("asset", "erase", "SN-R-2", "--certificate", "C-1", "--method", "NIST", "--provider", "DaaS Company"), "certificate C-1 of DaaS Company is already recorded for another device", id="certificate reused"),
    pytest.param(("asset", "erase", "SN-R-2", "--certificate", "C-2", "--method", "NIST", "--provider", ""), "provider: is required", id="empty provider"),
]
# fmt: on


@pytest.mark.parametrize(("args", "fragment"), WRONG_ARGUMENTS)
def test_arguments_naming_unknown_or_bad_things_are_refused_with_exit_2_and_write_nothing(
    cli: Cli, args: tuple[str, ...], fragment: str
) -> None:
    result = cli.refused(*args)
    assert fragment.format(**cli.world.refs) in result.err


def test_a_database_url_that_is_not_a_url_is_bad_input(
    capsys: pytest.CaptureFixture[str], clock: None
) -> None:
    code = main(["--db", "notaurl", "request", "list"])
    result = Result(code, *capsys.readouterr())
    assert_bad_input(result)
    assert "--db: not a database URL" in result.err


def test_a_missing_database_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clock: None
) -> None:
    code = main(["--db", f"sqlite:///{tmp_path}/none.db", "request", "list"])
    result = Result(code, *capsys.readouterr())
    assert_bad_input(result)
    assert f"--db: no database at {tmp_path}/none.db: run `procure init` first" in result.err
    assert not (tmp_path / "none.db").exists()


def test_a_missing_database_named_by_the_environment_is_named_so(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clock: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No --db given: the message names PROCURE_DATABASE_URL, or PROCURE_HOME for the default
    file, where the URL came from."""
    monkeypatch.setenv("PROCURE_DATABASE_URL", f"sqlite:///{tmp_path}/none.db")
    result = Result(main(["request", "list"]), *capsys.readouterr())
    assert_bad_input(result)
    assert (
        f"PROCURE_DATABASE_URL: no database at {tmp_path}/none.db: run `procure init` first"
    ) in result.err
    monkeypatch.setenv("PROCURE_DATABASE_URL", "nonsense://")
    result = Result(main(["init"]), *capsys.readouterr())
    assert_bad_input(result)
    assert "PROCURE_DATABASE_URL: " in result.err and "--db" not in result.err
    assert not (tmp_path / "none.db").exists()
    # Neither: the default file under PROCURE_HOME, named by that.
    monkeypatch.delenv("PROCURE_DATABASE_URL")
    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "home"))
    result = Result(main(["request", "list"]), *capsys.readouterr())
    assert_bad_input(result)
    assert result.err == (
        f"procure: bad input: PROCURE_HOME: no database at {tmp_path}/home/procure.db: run "
        "`procure init` first\n"
    )
    assert not (tmp_path / "home" / "procure.db").exists()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param("yesterday", "PROCURE_NOW: Input should be a valid datetime", id="words"),
        pytest.param("2026-11-25T09:00:00", "PROCURE_NOW: needs a time zone", id="no zone"),
    ],
)
@before_the_database
def test_a_bad_clock_setting_is_named_with_its_variable(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, value: str, fragment: str
) -> None:
    monkeypatch.setenv("PROCURE_NOW", value)
    result = cli.refused("request", "list")
    assert fragment in result.err


# ------------------------------------------------------------------ request files

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
REQUEST_JSON = """\
{
  "kind": "onboarding",
  "requester": "rita.requester@example.com",
  "cost_centre": "CC-ENG",
  "needed_by": "2026-12-23",
  "lines": [
    {"sku": "LAPTOP-STD-14", "quantity": 1},
    {"sku": "MON-27", "quantity": 2, "unit_price": 279.00}
  ]
}
"""
REQUEST_CSV = """\
ref,kind,requester,on_behalf_of,cost_centre,needed_by,justification,sku,quantity,unit_price
A,onboarding,rita.requester@example.com,nina.newhire@example.com,CC-ENG,2026-12-23,New hire,LAPTOP-STD-14,1,
A,onboarding,rita.requester@example.com,nina.newhire@example.com,CC-ENG,2026-12-23,New hire,MON-27,2,279.00
B,refresh,rita.requester@example.com,,CC-ENG,2026-12-23,Dock for the desk,DOCK-USB4,1,
"""
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


# fmt: off
MALFORMED_REQUEST_FILES = [
    # quantities
    pytest.param("req.yaml", REQUEST, "quantity: 1}", "quantity: 1.5}", 8, "lines[0].quantity", "must be a whole number (got 1.5)", id="fractional quantity"),
    pytest.param("req.yaml", REQUEST, "quantity: 1}", "quantity: 0}", 8, "lines[0].quantity", "must be at least 1 (got 0)", id="zero quantity"),
    pytest.param("req.yaml", REQUEST, "quantity: 1}", "quantity: -2}", 8, "lines[0].quantity", "must be at least 1 (got -2)", id="negative quantity"),
    pytest.param("req.yaml", REQUEST, "quantity: 1}", "quantity: 50000}", 8, "lines[0].quantity", "must be at most 10,000 per line (got 50,000)", id="absurd quantity"),
    pytest.param("req.json", REQUEST_JSON, '"quantity": 1}', '"quantity": 2.5}', 7, "lines[0].quantity", "must be a whole number (got 2.5)", id="json fractional quantity"),
    pytest.param("req.csv", REQUEST_CSV, "MON-27,2,", "MON-27,0.5,", 3, "lines[1].quantity", "must be a whole number (got '0.5')", id="csv fractional quantity"),
    pytest.param("req.csv", REQUEST_CSV, "B,refresh", ",refresh", 4, "ref", "is empty: every row names its request", id="csv row without its request"),
    # money
    pytest.param("req.yaml", REQUEST, "279.00", "279.999", 9, "lines[1].unit_price", "has more than two decimals (got 279.999)", id="three decimals"),
    pytest.param("req.yaml", REQUEST, "279.00", "-279.00", 9, "lines[1].unit_price", "must not be negative", id="negative price"),
    pytest.param("req.yaml", REQUEST, "279.00", "0.00", 9, "lines[1].unit_price", "must be more than 0.00", id="zero price"),
    pytest.param("req.json", REQUEST_JSON, "279.00", "279.005", 8, "lines[1].unit_price", "has more than two decimals (got 279.005)", id="json three decimals"),
    pytest.param("req.yaml", REQUEST, JUSTIFICATION, "Nina.\ncurrency: DOGE", 7, "currency", "unknown currency 'DOGE'", id="unknown currency"),
    pytest.param("req.yaml", REQUEST, "279.00", "1.0e999999", 9, "lines[1].unit_price", "", id="astronomic price"),
    # dates
    pytest.param("req.yaml", REQUEST, "needed_by: 2026-12-23", "needed_by: 2026-02-29", 5, None, "", id="impossible date"),
    # unicode, control characters, formula prefixes
    pytest.param("req.yaml", REQUEST, JUSTIFICATION, '"Nina\\e[31m joins"', 6, "justification", "contains a control character (U+001B) at position 5", id="terminal escape"),
    pytest.param("req.yaml", REQUEST, JUSTIFICATION, '"Nina \\u202e joins"', 6, "justification", "contains an invisible character (U+202E)", id="bidi override"),
    pytest.param("req.yaml", REQUEST, JUSTIFICATION, "'=HYPERLINK(\"http://evil.example\")'", 6, "justification", "starts with '=', which spreadsheets run as a formula", id="formula ="),
    pytest.param("req.yaml", REQUEST, JUSTIFICATION, "'@SUM(A1:A9)'", 6, "justification", "starts with '@'", id="formula @"),
    pytest.param("req.csv", REQUEST_CSV, "Dock for the desk", "+1+cmd|calc", 4, "justification", "starts with '+'", id="csv formula"),
    pytest.param("req.yaml", REQUEST, "Nina joins", "Nina\x07 joins", 6, None, "", id="raw control character"),
    # malformed files
    pytest.param("req.yaml", REQUEST, "kind: onboarding", "kind: onboarding\nkind: refresh", 2, None, "invalid YAML: duplicate key 'kind' (first on line 1)", id="duplicate key"),
    pytest.param("req.yaml", REQUEST, "  - {sku: MON-27", " - {sku: MON-27", 9, None, "invalid YAML", id="bad indentation"),
    pytest.param("req.json", REQUEST_JSON, "279.00}", "279.00},", 9, None, "invalid JSON", id="json trailing comma"),
    pytest.param("req.json", REQUEST_JSON, "279.00", "NaN", 8, None, "invalid JSON: NaN is not a number", id="json NaN"),
    pytest.param("req.json", REQUEST_JSON, '"CC-ENG",', '"CC-ENG",\n  "cost_centre": "CC-IT",', 5, None, "invalid JSON: duplicate key 'cost_centre'", id="json duplicate key"),
    pytest.param("req.csv", REQUEST_CSV, "DOCK-USB4,1,", "DOCK-USB4,1,,", 4, None, "has 11 fields, the header has 10", id="csv too many fields"),
    pytest.param("req.csv", REQUEST_CSV, ",unit_price\n", ",price\n", 1, None, "unknown column(s): price", id="csv unknown column"),
    pytest.param("req.csv", REQUEST_CSV, "ref,kind,requester", "ref,kind,requestor", 1, None, "missing column(s): requester", id="csv missing column"),
]
REQUEST_FILES_NAMING_UNKNOWN_THINGS = [
    pytest.param("req.yaml", REQUEST, "sku: LAPTOP-STD-14", "sku: LAPTOP-XXL-99", 8, "lines[0].sku", "unknown SKU LAPTOP-XXL-99", id="unknown SKU"),
    pytest.param("req.yaml", REQUEST, "requester: rita.requester@example.com", "requester: ghost@example.com", 2, "requester", "unknown person ghost@example.com", id="unknown requester"),
    pytest.param("req.yaml", REQUEST, "on_behalf_of: nina.newhire@example.com", "on_behalf_of: ghost@example.com", 3, "on_behalf_of", "unknown person ghost@example.com", id="unknown beneficiary"),
    pytest.param("req.yaml", REQUEST, "cost_centre: CC-ENG", "cost_centre: CC-NOPE", 4, "cost_centre", "unknown cost centre CC-NOPE", id="unknown cost centre"),
    pytest.param("req.yaml", REQUEST, "needed_by: 2026-12-23", "needed_by: 2026-11-20", 5, "needed_by", "2026-11-20 is in the past (today is 2026-11-25)", id="date in the past"),
    pytest.param("req.csv", REQUEST_CSV, "DOCK-USB4", "DOCK-USB9", 4, "lines[0].sku", "unknown SKU DOCK-USB9", id="csv unknown SKU"),
    pytest.param("req.yaml", TWO_REQUESTS, "", "", 13, "[1].lines[0].sku", "unknown SKU PHONE-XL", id="second request bad"),
    pytest.param("req.yaml", REQUEST, "cost_centre: CC-ENG", "cost_centre: CC-ENG\nidempotency_key: hr-4711", 5, "idempotency_key", "'hr-4711' was already used for {ordered} with different content", id="key reused"),
]
# fmt: on


def _submit_refused(
    cli: Cli,
    tmp_path: Path,
    name: str,
    base: str,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path / name, variant(base, old, new) if old else base)
    result = cli.refused("request", "submit", str(path))
    assert where(path, line, field) + fragment.format(**cli.world.refs) in result.err


@before_the_database
@pytest.mark.parametrize(
    ("name", "base", "old", "new", "line", "field", "fragment"), MALFORMED_REQUEST_FILES
)
def test_a_malformed_request_file_is_refused_with_file_line_and_field(
    cli: Cli,
    tmp_path: Path,
    name: str,
    base: str,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    _submit_refused(cli, tmp_path, name, base, old, new, line, field, fragment)


@pytest.mark.parametrize(
    ("name", "base", "old", "new", "line", "field", "fragment"), REQUEST_FILES_NAMING_UNKNOWN_THINGS
)
def test_a_request_file_naming_unknown_things_is_refused_and_submits_nothing(
    cli: Cli,
    tmp_path: Path,
    name: str,
    base: str,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    _submit_refused(cli, tmp_path, name, base, old, new, line, field, fragment)


@before_the_database
def test_every_problem_of_a_request_file_is_listed(cli: Cli, tmp_path: Path) -> None:
    content = variant(REQUEST, "quantity: 1}", "quantity: 0}")
    content = variant(content, "279.00", "-1.00")
    content = variant(content, JUSTIFICATION, "'=1+1'")
    path = write(tmp_path / "req.yaml", content)
    result = cli.refused("request", "submit", str(path))
    assert result.err.splitlines() == [
        "procure: bad input (3 problems):",
        f"  {path}:6: justification: starts with '=', which spreadsheets run as a formula; rephrase it",
        f"  {path}:8: lines[0].quantity: must be at least 1 (got 0)",
        f"  {path}:9: lines[1].unit_price: must not be negative (got -1.00)",
    ]


# fmt: off
REQUEST_FILES_WITH_A_FIELD_ERROR_AND_A_BAD_REFERENCE = [
    pytest.param(
        "req.yaml", variant(TWO_REQUESTS, "LAPTOP-STD-14, quantity: 1", "LAPTOP-STD-14, quantity: 0"),
        [(7, "[0].lines[0].quantity", "must be at least 1 (got 0)"),
         (13, "[1].lines[0].sku", "unknown SKU PHONE-XL")],
        id="yaml",
    ),
    pytest.param(
        "req.csv", variant(variant(REQUEST_CSV, "MON-27,2,", "MON-27,0.5,"), "DOCK-USB4", "DOCK-USB9"),
        [(3, "lines[1].quantity", "must be a whole number (got '0.5')"),
         (4, "lines[0].sku", "unknown SKU DOCK-USB9")],
        id="csv",
    ),
]
# fmt: on


@pytest.mark.parametrize("command", [("request", "submit"), ("run", "intake")], ids=" ".join)
@pytest.mark.parametrize(
    ("name", "content", "expected"), REQUEST_FILES_WITH_A_FIELD_ERROR_AND_A_BAD_REFERENCE
)
def test_a_request_file_s_field_errors_and_the_references_of_its_other_requests_come_in_one_run(
    cli: Cli,
    tmp_path: Path,
    command: tuple[str, str],
    name: str,
    content: str,
    expected: list[tuple[int, str, str]],
) -> None:
    path = write(tmp_path / name, content)
    result = cli.refused(*command, str(path))
    assert result.err.splitlines() == [
        f"procure: bad input ({len(expected)} problems):",
        *(f"  {where(path, line, field)}{message}" for line, field, message in expected),
    ]


# fmt: off
NOT_REQUEST_FILES = [
    pytest.param("missing.yaml", None, None, "no such file", id="missing file"),
    pytest.param("folder.yaml", "DIR", None, "is a directory, not a file", id="directory"),
    pytest.param("req.yaml", REQUEST.replace("Nina joins", "Zoë joins").encode("latin-1"), 6, "is not UTF-8 text (byte 0xeb)", id="latin-1"),
    pytest.param("req.yaml", REQUEST.replace("CC-ENG", "CC-\0ENG").encode(), 4, "contains a NUL byte: this is not a text file", id="NUL byte"),
    pytest.param("req.txt", REQUEST, None, "unknown file type '.txt': use .yaml, .json or .csv", id="txt"),
    pytest.param("req.xlsx", b"PK\x03\x04", None, "unknown file type '.xlsx'", id="spreadsheet"),
    pytest.param("req.csv", REQUEST_CSV.splitlines()[0] + "\n", None, "", id="csv without rows"),
]
# fmt: on


@before_the_database
@pytest.mark.parametrize(("name", "content", "line", "fragment"), NOT_REQUEST_FILES)
def test_a_file_that_cannot_be_a_request_file_is_named(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str | bytes | None,
    line: int | None,
    fragment: str,
) -> None:
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        write(path, content)
    result = cli.refused("request", "submit", str(path))
    assert where(path, line, None) + fragment in result.err


# ------------------------------------------------------------------ organisation and catalog files

ORG = """\
people:
  - email: zoe.new@example.com
    name: Zoë New
    department: Engineering
    roles: [requester]
  - {email: rita.requester@example.com, name: Rita Renamed, department: Engineering}
cost_centres:
  - {code: CC-NEW, name: New team, budget_owner: zoe.new@example.com}
"""
PEOPLE_CSV = """\
email,name,department,roles
zoe.new@example.com,Zoë New,Engineering,requester
rita.requester@example.com,Rita Renamed,Engineering,requester
"""
CATALOG = """\
suppliers:
  - {code: ACME, name: Acme Devices, lead_time_days: 5}
items:
  - {sku: TAB-11, name: Tablet, category: tablet, list_price: 499.00, supplier: ACME}
  - {sku: LAPTOP-STD-14, name: Standard laptop, category: laptop, list_price: 899.00, supplier: NORDIC-IT}
"""
ITEMS_CSV = """\
sku,name,category,list_price,supplier,lead_time_days
TAB-11,Tablet,tablet,499.00,ACME,5
LAPTOP-STD-14,Standard laptop,laptop,899.00,NORDIC-IT,
"""


@pytest.mark.parametrize(
    ("reader", "name", "content"),
    [
        pytest.param(read_request_file, "req.yaml", REQUEST, id="request yaml"),
        pytest.param(read_request_file, "req.json", REQUEST_JSON, id="request json"),
        pytest.param(read_request_file, "req.csv", REQUEST_CSV, id="request csv"),
        pytest.param(read_org_file, "org.yaml", ORG, id="org yaml"),
        pytest.param(read_org_file, "org.csv", PEOPLE_CSV, id="people csv"),
        pytest.param(read_catalog_file, "cat.yaml", CATALOG, id="catalog yaml"),
        pytest.param(read_catalog_file, "cat.csv", ITEMS_CSV, id="items csv"),
    ],
)
def test_the_files_the_bad_ones_are_made_from_are_valid(
    tmp_path: Path, reader: Callable[[Path], Any], name: str, content: str
) -> None:
    assert reader(write(tmp_path / name, content))


# fmt: off
MALFORMED_ORG_AND_CATALOG_FILES = [
    pytest.param("org", "org.yaml", ORG, "roles: [requester]", "roles: [requester, admin]", 5, "people[0].roles[1]", "Input should be 'requester', 'it', 'purchasing', 'hr', 'finance' or 'management' (got 'admin')", id="unknown role"),
    pytest.param("org", "org.yaml", ORG, "name: Zoë New", "name: '=HYPERLINK(\"x\")'", 3, "people[0].name", "starts with '='", id="formula name"),
    pytest.param("org", "org.csv", PEOPLE_CSV, "Zoë New", "@SUM(A1)", 2, "people[0].name", "starts with '@'", id="csv formula name"),
    pytest.param("org", "org.csv", PEOPLE_CSV, "Engineering,requester\nrita", "Engineering\nrita", 2, None, "has 3 fields, the header has 4", id="csv too few fields"),
    pytest.param("org", "org.csv", PEOPLE_CSV, "email,name", "e-mail,name", 1, None, "missing column(s): email", id="csv missing column"),
    pytest.param("org", "org.yaml", ORG, "roles: [requester]", "roles: [requester]\n    active: maybe", 6, "people[0].active", "expected true or false (or yes/no, on/off, 1/0), not 'maybe'", id="active neither true nor false"),
    pytest.param("org", "org.csv", PEOPLE_CSV, "roles\nzoe.new@example.com,Zoë New,Engineering,requester\nrita.requester@example.com,Rita Renamed,Engineering,requester", "roles,active\nzoe.new@example.com,Zoë New,Engineering,requester,1.0\nrita.requester@example.com,Rita Renamed,Engineering,requester,", 2, "people[0].active", "expected true or false (or yes/no, on/off, 1/0), not '1.0'", id="csv active a fraction"),
    pytest.param("catalog", "cat.yaml", CATALOG, "499.00", "499.005", 4, "items[0].list_price", "has more than two decimals (got 499.005)", id="three decimals"),
    pytest.param("catalog", "cat.yaml", CATALOG, "499.00", "-5.00", 4, "items[0].list_price", "must not be negative", id="negative price"),
    pytest.param("catalog", "cat.yaml", CATALOG, "supplier: ACME}", "supplier: ACME, currency: BTC}", 4, "items[0].currency", "unknown currency 'BTC'", id="unknown currency"),
    pytest.param("catalog", "cat.csv", ITEMS_CSV, "499.00", "499.001", 2, "items[0].list_price", "has more than two decimals", id="csv three decimals"),
    pytest.param("catalog", "cat.csv", ITEMS_CSV, "Tablet,tablet", "=1+1,tablet", 2, "items[0].name", "starts with '='", id="csv formula name"),
    pytest.param("catalog", "cat.csv", ITEMS_CSV, ",lead_time_days\n", ",lead_time\n", 1, None, "unknown column(s): lead_time", id="csv unknown column"),
]
ORG_AND_CATALOG_FILES_NAMING_UNKNOWN_THINGS = [
    pytest.param("org", "org.yaml", ORG, "budget_owner: zoe.new@example.com", "budget_owner: ghost@example.com", 8, "cost_centres[0].budget_owner", "unknown person ghost@example.com", id="unknown budget owner"),
    pytest.param("org", "org.yaml", ORG, "{email: rita.requester@example.com", "{email: zoe.new@example.com", 6, "people[1].email", "zoe.new@example.com is listed twice (also people[0])", id="person twice"),
    pytest.param("catalog", "cat.yaml", CATALOG, "supplier: ACME}", "supplier: NOPE}", 4, "items[0].supplier", "unknown supplier NOPE", id="unknown supplier"),
]
# fmt: on


def _load_refused(
    cli: Cli,
    tmp_path: Path,
    command: str,
    name: str,
    base: str,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path / name, variant(base, old, new))
    result = cli.refused(command, "load", str(path))
    assert where(path, line, field) + fragment in result.err


@before_the_database
@pytest.mark.parametrize(
    ("command", "name", "base", "old", "new", "line", "field", "fragment"),
    MALFORMED_ORG_AND_CATALOG_FILES,
)
def test_a_malformed_organisation_or_catalog_file_is_refused(
    cli: Cli,
    tmp_path: Path,
    command: str,
    name: str,
    base: str,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    _load_refused(cli, tmp_path, command, name, base, old, new, line, field, fragment)


@pytest.mark.parametrize(
    ("command", "name", "base", "old", "new", "line", "field", "fragment"),
    ORG_AND_CATALOG_FILES_NAMING_UNKNOWN_THINGS,
)
def test_an_organisation_or_catalog_file_naming_unknown_things_changes_nothing(
    cli: Cli,
    tmp_path: Path,
    command: str,
    name: str,
    base: str,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    _load_refused(cli, tmp_path, command, name, base, old, new, line, field, fragment)


ROLE_ADMIN = (
    "Input should be 'requester', 'it', 'purchasing', 'hr', 'finance' or 'management' (got 'admin')"
)
BUNDLE = "bundles:\n  - {code: dev, name: Developer kit, items: [{sku: NOPE-1}]}\n"

# A field error in one row and, in another (or the same), a reference the file gets wrong.
# fmt: off
FILES_WITH_A_FIELD_ERROR_AND_A_BAD_REFERENCE = [
    pytest.param(
        "org", "org.yaml", variant(variant(ORG, "roles: [requester]", "roles: [admin]"), "budget_owner: zoe.new@", "budget_owner: ghost@"),
        [(5, "people[0].roles[0]", ROLE_ADMIN),
         (8, "cost_centres[0].budget_owner", "unknown person ghost@example.com")],
        id="org yaml",
    ),
    pytest.param(
        "org", "org.csv", variant(variant(PEOPLE_CSV, "Engineering,requester\nrita", "Engineering,admin\nrita"), "rita.requester@", "zoe.new@"),
        [(2, "people[0].roles[0]", ROLE_ADMIN),
         (3, "people[1].email", "zoe.new@example.com is listed twice (also people[0])")],
        id="people csv",
    ),
    pytest.param(
        "catalog", "cat.yaml", variant(variant(CATALOG, "499.00", "499.005"), "supplier: NORDIC-IT", "supplier: NOPE") + BUNDLE,
        [(4, "items[0].list_price", "has more than two decimals (got 499.005)"),
         (5, "items[1].supplier", "unknown supplier NOPE (list it under suppliers, or give lead_time_days)"),
         (7, "bundles[0].items[0].sku", "unknown SKU NOPE-1")],
        id="catalog yaml",
    ),
    pytest.param(
        "catalog", "cat.csv", variant(variant(ITEMS_CSV, "499.00", "499.005"), "NORDIC-IT", "NOPE"),
        [(2, "items[0].list_price", "has more than two decimals (got 499.005)"),
         (3, "items[1].supplier", "unknown supplier NOPE (list it under suppliers, or give lead_time_days)")],
        id="items csv",
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("command", "name", "content", "expected"), FILES_WITH_A_FIELD_ERROR_AND_A_BAD_REFERENCE
)
def test_an_organisation_or_catalog_file_s_field_errors_and_references_are_reported_in_one_run(
    cli: Cli,
    tmp_path: Path,
    command: str,
    name: str,
    content: str,
    expected: list[tuple[int, str, str]],
) -> None:
    path = write(tmp_path / name, content)
    result = cli.refused(command, "load", str(path))
    assert result.err.splitlines() == [
        f"procure: bad input ({len(expected)} problems):",
        *(f"  {where(path, line, field)}{message}" for line, field, message in expected),
    ]


# ------------------------------------------------------------------ pipeline files

PIPELINE = """\
name: small
version: 2
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
"""
WHEN = "when: total >= 1000"

# fmt: off
BAD_PIPELINES = [
    pytest.param("roles: [it, purchasing]", "roles: [it, janitor]", 6, "stages[0].roles", "unknown role 'janitor' (known: budget_owner,", id="unknown role"),
    pytest.param("after: [review]", "after: [reveiw]", 12, "stages[1].after[0]", "'reveiw' is not a stage of this pipeline", id="unknown stage in after"),
    pytest.param("id: budget\n", "id: review\n", 8, "stages[1].id", "stage id 'review' is used twice (also stages[0])", id="duplicate stage id"),
    pytest.param(WHEN, "when: totl >= 10", 13, "stages[1].when", "'totl' is undefined; the names a condition can use are: total,", id="unknown name"),
    pytest.param(WHEN, "when: total >= (10", 13, "stages[1].when", "is not a valid expression", id="syntax error"),
    pytest.param(WHEN, "when: ().__class__.__mro__", 13, "stages[1].when", "is not allowed: access to attribute '__class__' of 'tuple' object is unsafe", id="sandbox escape"),
    pytest.param("    mode: any\n", "    mode: any\n    approver: bob\n", 12, "stages[1].approver", "is not a known field (check the spelling)", id="unknown key"),
    pytest.param("sla_hours: 16", "sla_hours: 0", 7, "stages[0].sla_hours", "Input should be greater than or equal to 1", id="sla 0"),
    pytest.param("name: small", "name: small\nname: big", 2, None, "invalid YAML: duplicate key 'name' (first on line 1)", id="duplicate key"),
]
# fmt: on


def test_a_good_pipeline_file_checks_ok(
    capsys: pytest.CaptureFixture[str], clock: None, tmp_path: Path
) -> None:
    path = write(tmp_path / "pipeline.yaml", PIPELINE)
    code = main(["pipeline", "check", str(path)])
    result = Result(code, *capsys.readouterr())
    assert (result.code, result.err) == (0, "")
    assert result.out.startswith(f"{path}: ok — pipeline small@2, 2 stages")


@pytest.mark.parametrize(("old", "new", "line", "field", "fragment"), BAD_PIPELINES)
def test_pipeline_check_names_file_line_and_field(
    capsys: pytest.CaptureFixture[str],
    clock: None,
    tmp_path: Path,
    old: str,
    new: str,
    line: int,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path / "pipeline.yaml", variant(PIPELINE, old, new))
    code = main(["pipeline", "check", str(path)])  # no database needed
    result = Result(code, *capsys.readouterr())
    assert_bad_input(result)
    assert where(path, line, field) + fragment in result.err


def test_pipeline_check_reports_field_errors_and_unknown_stages_in_one_run(
    capsys: pytest.CaptureFixture[str], clock: None, tmp_path: Path
) -> None:
    content = variant(PIPELINE, "sla_hours: 16", "sla_hours: 0")
    content = variant(content, "after: [review]", "after: [reveiw]")
    path = write(tmp_path / "pipeline.yaml", content)
    result = Result(main(["pipeline", "check", str(path)]), *capsys.readouterr())
    assert_bad_input(result)
    assert result.err.splitlines() == [
        "procure: bad input (2 problems):",
        f"  {path}:7: stages[0].sla_hours: Input should be greater than or equal to 1",
        f"  {path}:12: stages[1].after[0]: 'reveiw' is not a stage of this pipeline",
    ]


def test_a_bad_pipeline_is_not_installed(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "pipeline.yaml", variant(PIPELINE, WHEN, "when: totl >= 10"))
    result = cli.refused("pipeline", "load", str(path))
    assert where(path, 13, "stages[1].when") + "'totl' is undefined" in result.err
    shown = cli("pipeline", "show")
    assert shown.code == 0 and shown.out.startswith("pipeline default@1")


# ------------------------------------------------------------------ serial files for `procure deliver`

# fmt: off
MALFORMED_SERIAL_FILES = [
    pytest.param("serials.csv", "serial,sku,colour\nSN-N-8,MON-27,red\n", 1, None, "unknown column(s): colour", id="unknown column"),
    pytest.param("serials.csv", "serial,sku\nSN 9,MON-27\n", 2, "serial", "must be 1-64 letters", id="serial with a space"),
    pytest.param("serials.csv", "serial,sku\n=cmd|calc,MON-27\n", 2, "serial", "must be 1-64 letters", id="formula as serial"),
    pytest.param("serials.txt", "SN-N-11\n@SUM(A1)\n", 2, "serial", "serial must be 1-64 letters", id="text with formula"),
    pytest.param("serials.yaml", "- {serial: SN-N-13, colour: red}\n", 1, "[0].colour", "is not a known field (serial, sku, request)", id="yaml unknown field"),
]
SERIAL_FILES_THE_REQUEST_REFUSES = [
    pytest.param("serials.csv", "serial,sku\nSN-N-1,MON-27\nSN-N-1,MON-27\n", 3, "serial", "serial SN-N-1 appears twice", id="duplicate serial"),
    pytest.param("serials.csv", "serial,sku\nSN-D-1,LAPTOP-STD-14\n", 2, "serial", "serial SN-D-1 is already recorded for another device", id="serial already used"),
    pytest.param("serials.csv", "serial,sku\nSN-N-2,PHONE-STD\n", 2, "sku", "{ordered} did not order PHONE-STD", id="sku not ordered"),
    pytest.param("serials.csv", "serial,sku\nSN-N-3,LAPTOP-STD-14\nSN-N-4,LAPTOP-STD-14\n", 3, "sku", "all 1 ordered LAPTOP-STD-14 units are already delivered or listed above", id="too many serials"),
    pytest.param("serials.csv", "serial,sku\nSN-N-5,MON-27\nSN-N-6,MON-27\nSN-N-7,MON-27\n", 4, "sku", "all 2 ordered MON-27 units", id="too many of one sku"),
    pytest.param("serials.txt", "# first box\nSN-N-10\n", 2, "sku", "give the SKU: {ordered} awaits several items (LAPTOP-STD-14, MON-27)", id="text without sku"),
    pytest.param("serials.yaml", "- {serial: SN-N-15, sku: LAPTOP-STD-14}\n- {serial: SN-N-16, sku: MON-27}\n- {serial: SN-N-17, sku: MON-27}\n- {serial: SN-N-18}\n", 4, "sku", "all 3 ordered units (LAPTOP-STD-14, MON-27) are already delivered or listed above", id="one too many without sku"),
    pytest.param("serials.yaml", "- {serial: SN-N-12, sku: MON-27}\n- {serial: SN-N-12, sku: MON-27}\n", 2, "serial", "serial SN-N-12 appears twice", id="yaml duplicate"),
    pytest.param("serials.json", '[\n  {"serial": "SN-N-14", "sku": "MON-27"},\n  {"serial": "SN-N-14", "sku": "MON-27"}\n]\n', 3, "serial", "serial SN-N-14 appears twice", id="json duplicate"),
    pytest.param("serials.txt", "", None, None, "no serials given", id="empty"),
]
# fmt: on


def _deliver_refused(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path / name, content)
    result = cli.refused("deliver", "{ordered}", "--serials", str(path))
    assert where(path, line, field) + fragment.format(**cli.world.refs) in result.err


@before_the_database
@pytest.mark.parametrize(("name", "content", "line", "field", "fragment"), MALFORMED_SERIAL_FILES)
def test_a_malformed_serial_file_is_refused(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    _deliver_refused(cli, tmp_path, name, content, line, field, fragment)


@pytest.mark.parametrize(
    ("name", "content", "line", "field", "fragment"), SERIAL_FILES_THE_REQUEST_REFUSES
)
def test_a_serial_file_the_request_refuses_delivers_nothing(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    _deliver_refused(cli, tmp_path, name, content, line, field, fragment)


# ------------------------------------------------------------------ assignment files for `procure rollout`

# fmt: off
MALFORMED_ASSIGNMENT_FILES = [
    pytest.param("assign.csv", "serial,email\nSN-D-1,nina\n", 2, "email", "not an email address: 'nina'", id="not an email"),
    pytest.param("assign.csv", "serial,person\nSN-D-1,nina.newhire@example.com\n", 1, None, "missing column(s): email", id="missing column"),
    pytest.param("assign.yaml", "- {serial: SN-D-1}\n", 1, "[0].email", "is required", id="yaml without email"),
    pytest.param("assign.txt", "SN-D-1 nina.newhire@example.com\n", None, None, "unknown file type '.txt'", id="text file"),
]
ASSIGNMENT_FILES_THE_REQUEST_REFUSES = [
    pytest.param("assign.csv", "serial,email\nSN-D-1,ghost@example.com\n", 2, "email", "unknown or inactive person ghost@example.com", id="unknown person"),
    pytest.param("assign.csv", "serial,email\nSN-R-2,nina.newhire@example.com\n", 2, "serial", "SN-R-2 is not a device of {delivered}", id="serial of another request"),
    pytest.param("assign.csv", "serial,email\nSN-X-1,nina.newhire@example.com\n", 2, "serial", "SN-X-1 is not a device of {delivered}", id="unknown serial"),
    pytest.param("assign.csv", "serial,email\nSN-D-1,nina.newhire@example.com\nSN-D-1,rita.requester@example.com\n", 3, "serial", "serial SN-D-1 is assigned twice", id="serial twice"),
]
# fmt: on


def _rollout_refused(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path / name, content)
    result = cli.refused("rollout", "{delivered}", "--assign", str(path), "--as", IDA)
    assert where(path, line, field) + fragment.format(**cli.world.refs) in result.err


@before_the_database
@pytest.mark.parametrize(
    ("name", "content", "line", "field", "fragment"), MALFORMED_ASSIGNMENT_FILES
)
def test_a_malformed_assignment_file_is_refused(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    _rollout_refused(cli, tmp_path, name, content, line, field, fragment)


@pytest.mark.parametrize(
    ("name", "content", "line", "field", "fragment"), ASSIGNMENT_FILES_THE_REQUEST_REFUSES
)
def test_an_assignment_file_the_request_refuses_hands_out_nothing(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    _rollout_refused(cli, tmp_path, name, content, line, field, fragment)


# ------------------------------------------------------------------ changes files for `procure request resubmit`

# fmt: off
MALFORMED_CHANGES_FILES = [
    pytest.param("changes.yaml", "lines:\n  - {sku: MON-27, quantity: 0.5}\n", 2, "lines[0].quantity", "must be a whole number (got 0.5)", id="fractional quantity"),
    pytest.param("changes.yaml", "requester: bob.budget@example.com\n", 1, "requester", "is fixed once the request is submitted (a resubmission changes only kind, on_behalf_of", id="requester cannot change"),
    pytest.param("changes.yaml", "justification: '-1+1'\n", 1, "justification", "starts with '-'", id="formula"),
    pytest.param("changes.yaml", "- lines\n", 1, None, "expected a mapping of the fields to change", id="a list"),
    pytest.param("changes.csv", "sku,quantity\nMON-27,1\n", None, None, "CSV is not accepted for this kind of file", id="csv"),
]
CHANGES_FILES_NAMING_UNKNOWN_THINGS = [
    pytest.param("changes.yaml", "lines:\n  - {sku: NOPE-1, quantity: 1}\n", 2, "lines[0].sku", "unknown SKU NOPE-1", id="unknown SKU"),
    pytest.param("changes.yaml", "needed_by: 2026-01-05\n", 1, "needed_by", "2026-01-05 is in the past", id="date in the past"),
    pytest.param("changes.yaml", "# new owner\non_behalf_of: ghost@example.com\n", 2, "on_behalf_of", "unknown person ghost@example.com", id="unknown person"),
]
# fmt: on


def _resubmit_refused(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    path = write(tmp_path / name, content)
    result = cli.refused("request", "resubmit", "{sent_back}", str(path), "--as", RITA)
    assert where(path, line, field) + fragment.format(**cli.world.refs) in result.err


@before_the_database
@pytest.mark.parametrize(("name", "content", "line", "field", "fragment"), MALFORMED_CHANGES_FILES)
def test_a_malformed_changes_file_is_refused(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    _resubmit_refused(cli, tmp_path, name, content, line, field, fragment)


@pytest.mark.parametrize(
    ("name", "content", "line", "field", "fragment"), CHANGES_FILES_NAMING_UNKNOWN_THINGS
)
def test_a_changes_file_naming_unknown_things_resubmits_nothing(
    cli: Cli,
    tmp_path: Path,
    name: str,
    content: str,
    line: int | None,
    field: str | None,
    fragment: str,
) -> None:
    _resubmit_refused(cli, tmp_path, name, content, line, field, fragment)


# ------------------------------------------------------------------ files for `procure run ...`


def test_a_shipping_notice_naming_unknown_requests_is_refused_before_prefect_starts(
    cli: Cli, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "notice.csv",
        "request,serial,sku\n{ordered},SN-R-1,MON-27\nPR-9998,SN-R-2,MON-27\n"
        "PR-9999,SN-R-3,MON-27\nPR-9999,SN-R-4,MON-27\n".format(**cli.world.refs),
    )
    result = cli.refused("run", "delivery", "--serials", str(path))
    # Every unknown request at once, at its first line; the known one is not delivered either.
    assert where(path, 3, "request") + "no request PR-9998" in result.err
    assert where(path, 4, "request") + "no request PR-9999" in result.err
    assert "Traceback" not in result.err and "Retry" not in result.err


# One database is enough: the naming does not depend on it. As a process of its own, as people
# run it (the notice is checked whole before the flow would start a temporary Prefect server).
@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_a_shipping_notice_whose_serial_the_request_refuses_is_named_by_file_and_line(
    cli: Cli, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    path = write(
        tmp_path / "notice.csv",
        "request,serial,sku\n{ordered},SN-V-1,MON-27\n{ordered},SN-V-2,LAPTOP-DEV-16\n".format(
            **cli.world.refs
        ),
    )
    procure = str(Path(sys.executable).with_name("procure"))
    env = {**os.environ, "PROCURE_NOW": NOW.isoformat()}
    with writes_nothing(cli.world.engine):
        done = subprocess.run(
            [procure, "--db", cli.world.url, "run", "delivery", "--serials", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    result = Result(done.returncode, done.stdout, done.stderr)
    assert_bad_input(result)
    assert (
        where(path, 3, "sku") + "{ordered} did not order LAPTOP-DEV-16".format(**cli.world.refs)
        in result.err
    )


def test_a_shipping_notice_naming_a_serial_twice_is_refused_with_both_lines(
    cli: Cli, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "notice.csv",
        "request,serial,sku\n{ordered},SN-T-1,MON-27\n{ordered},SN-T-1,MON-27\n".format(
            **cli.world.refs
        ),
    )
    result = cli.refused("run", "delivery", "--serials", str(path))
    assert where(path, 3, "serial") + "serial SN-T-1 appears twice (first on line 2)" in result.err
    assert "Traceback" not in result.err


def test_a_shipping_notice_s_bad_rows_of_known_requests_come_in_one_run_before_prefect_starts(
    cli: Cli, tmp_path: Path
) -> None:
    # Row 2 is fine; the others are what `procure deliver` refuses, across three requests.
    path = write(
        tmp_path / "notice.csv",
        "request,serial,sku\n{ordered},SN-W-1,MON-27\n{delivered},SN-W-2,LAPTOP-STD-14\n"
        "{ordered},SN-D-1,MON-27\n{in_review},SN-W-3,LAPTOP-STD-14\n"
        "{ordered},SN-W-4,LAPTOP-STD-14\n{ordered},SN-W-5,LAPTOP-STD-14\n".format(**cli.world.refs),
    )
    result = cli.refused("run", "delivery", "--serials", str(path))
    refs = cli.world.refs
    assert result.err.splitlines() == [
        "procure: bad input (4 problems):",
        f"  {where(path, 3, 'request')}{refs['delivered']} is delivered: cannot deliver; "
        "possible now: roll_out",
        f"  {where(path, 4, 'serial')}serial SN-D-1 is already recorded for another device",
        f"  {where(path, 5, 'request')}{refs['in_review']} is in_review: cannot deliver; "
        "possible now: approve, reject, send_back, cancel",
        f"  {where(path, 7, 'sku')}all 1 ordered LAPTOP-STD-14 units are already delivered "
        "or listed above",
    ]


def test_a_shipping_notice_s_bad_fields_and_unknown_requests_come_in_one_run(
    cli: Cli, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "notice.csv",
        "request,serial,sku\n{ordered},SN 1,MON-27\nPR-9999,SN-R-3,MON-27\n".format(
            **cli.world.refs
        ),
    )
    result = cli.refused("run", "delivery", "--serials", str(path))
    assert result.err.splitlines() == [
        "procure: bad input (2 problems):",
        f"  {where(path, 2, 'serial')}must be 1-64 letters, digits, '.', '_', '/' or '-', "
        "starting with a letter or digit",
        f"  {where(path, 3, 'request')}no request PR-9999",
    ]


def test_an_hr_export_naming_unknown_things_is_refused_before_prefect_starts(
    cli: Cli, tmp_path: Path
) -> None:
    start = (NOW + timedelta(days=10)).date()
    path = write(
        tmp_path / "hr.csv",
        "email,name,department,role,cost_centre,manager,start_date,end_date\n"
        f"new.joiner@example.com,New Joiner,Engineering,astronaut,CC-ENG,{RITA},{start},\n",
    )
    result = cli.refused("run", "hr-sync", str(path))
    assert where(path, 2, "role") + "unknown bundle astronaut" in result.err
    assert "Traceback" not in result.err and "Retry" not in result.err


def test_an_hr_export_s_field_errors_and_unknown_references_are_reported_in_one_run(
    cli: Cli, tmp_path: Path
) -> None:
    start = (NOW + timedelta(days=10)).date()
    path = write(
        tmp_path / "hr.csv",
        "email,name,department,role,cost_centre,manager,start_date,end_date\n"
        f"ann.new@example.com,Ann New,Engineering,developer,CC-ENG,{RITA},2026-13-01,\n"
        f"bea.new@example.com,Bea New,=Sales,astronaut,CC-ENG,{RITA},{start},\n"
        f"cid.new@example.com,Cid New,Sales,developer,CC-NOPE,rita,{start},\n",
    )
    result = cli.refused("run", "hr-sync", str(path))
    assert result.err.splitlines() == [
        "procure: bad input (5 problems):",
        f"  {path}:2: start_date: not a date (YYYY-MM-DD): '2026-13-01'",
        f"  {path}:3: department: starts with '=', which spreadsheets run as a formula; rephrase it",
        f"  {path}:3: role: unknown bundle astronaut",
        f"  {path}:4: manager: not an email address: 'rita'",
        f"  {path}:4: cost_centre: unknown cost centre CC-NOPE",
    ]


def test_an_erasure_file_naming_unknown_devices_is_refused_before_prefect_starts(
    cli: Cli, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "certs.csv",
        "serial,certificate,method,provider\n"
        "SN-R-2,C-77,NIST 800-88,DaaS Company\nSN-NOPE,C-78,NIST 800-88,DaaS Company\n",
    )
    result = cli.refused("run", "returns", "--certificates", str(path))
    assert where(path, 3, "serial") + "no asset with serial SN-NOPE" in result.err
    assert "SN-R-2" not in result.err and "Traceback" not in result.err


def test_an_erasure_file_s_bad_fields_and_unknown_devices_come_in_one_run(
    cli: Cli, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "certs.csv",
        "serial,certificate,method,provider\n"
        "SN-R-2,C-77,=NIST,DaaS Company\nSN-NOPE,C-78,NIST 800-88,DaaS Company\n",
    )
    result = cli.refused("run", "returns", "--certificates", str(path))
    assert result.err.splitlines() == [
        "procure: bad input (2 problems):",
        f"  {where(path, 2, 'method')}starts with '=', which spreadsheets run as a formula; "
        "rephrase it",
        f"  {where(path, 3, 'serial')}no asset with serial SN-NOPE",
    ]


def test_an_erasure_file_is_checked_whole_against_the_devices_and_their_certificates(
    cli: Cli, tmp_path: Path
) -> None:
    rows = [
        "SN-R-2,C-77,NIST 800-88,DaaS Company",  # 2: returned: fine on its own
        "SN-P-1,C-78,NIST 800-88,DaaS Company",  # 3: still deployed to Nina
        "SN-D-1,C-1,NIST 800-88,DaaS Company",  # 4: C-1 is SN-R-1's
        "SN-R-2,C-80,NIST 800-88,DaaS Company",  # 5: SN-R-2 again
        "SN-R-1,C-99,NIST 800-88,DaaS Company",  # 6: erased under C-1 before
        "SN-NOPE,C-77,NIST 800-88,DaaS Company",  # 7: C-77 again
    ]
    path = write(tmp_path / "certs.csv", "serial,certificate,method,provider\n" + "\n".join(rows))
    result = cli.refused("run", "returns", "--certificates", str(path))
    for line, field, message in [
        (3, "serial", "SN-P-1 is deployed: only a device asked back or returned can be erased"),
        (
            4,
            "certificate",
            "certificate C-1 of DaaS Company is already recorded for another device",
        ),
        (5, "serial", "SN-R-2 is named twice (first on line 2)"),
        (6, "certificate", "SN-R-1 was erased already, under certificate C-1 of DaaS Company"),
        (7, "certificate", "certificate C-77 of DaaS Company is given twice (first on line 2)"),
    ]:
        assert where(path, line, field) + message in result.err
    # The good row is not erased either (refused() checks that nothing was written).
    assert where(path, 2, None) not in result.err and "Traceback" not in result.err


def test_erasing_a_device_again_under_its_own_certificate_changes_nothing(cli: Cli) -> None:
    with writes_nothing(cli.world.engine):
        result = cli(
            "asset", "erase", "SN-R-1", "--certificate", "C-1", "--method", "NIST 800-88 purge",
            "--provider", "DaaS Company", "--as", IDA, "--json",
        )  # fmt: skip
    assert result.code == 0, result.err
    again = json.loads(result.out)
    assert (again["status"], again["erasure"]["certificate"]) == ("erased", "C-1")
    with writes_nothing(cli.world.engine):
        other = cli(
            "asset", "erase", "SN-R-1", "--certificate", "C-2", "--method", "NIST 800-88 purge",
            "--provider", "DaaS Company", "--as", IDA,
        )  # fmt: skip
    assert (other.code, other.err) == (
        1,
        "procure: refused: asset SN-R-1 is erased: cannot erase; "
        "possible now: deploy, dispose, return_to_provider\n",
    )


def test_a_bought_device_is_not_sent_back_to_a_provider(cli: Cli) -> None:
    with writes_nothing(cli.world.engine):
        result = cli("asset", "dispose", "SN-R-1", "--to", "provider", "--as", IDA)
    assert (result.code, result.err) == (
        1,
        "procure: refused: SN-R-1 was bought: it goes to a recycler (--to recycler), "
        "not to a provider\n",
    )
