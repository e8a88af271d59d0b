"""The money through the `procure` command (in-process, SQLite and PostgreSQL): what `request
show` says about sourcing, buy/lease/DaaS, the delivery plan, the late-involvement ledger, the
budget, bundling and the terms; purchasing's `terms`, `quote add`, `sourcing` and
`decide --confirm-terms`; `report` as JSON, CSV and PNG; bad arguments.

Every database starts blank and gets `procure init --sample` (org, catalog and the sample
agreement FA-2026-NORDIC); the clock is fixed at NOW (Wednesday 2026-11-25).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.db import make_engine
from procure.cli import main
from tests.conftest import Databases
from tests.factories import BOB, FIONA, IDA, MAX, NOW, PAUL, PETRA, RITA, SARA, row_counts

PNG = b"\x89PNG\r\n\x1a\n"


class Cli:
    """Runs `procure` in-process against one database and returns (exit code, stdout, stderr)."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]):
        self.url = url
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--db", self.url, *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, err
        return out


@pytest.fixture
def cli(
    databases: Databases, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    monkeypatch.setenv("PROCURE_NOW", NOW.isoformat())
    runner = Cli(databases.url("blank"), capsys)
    runner.json("init", "--sample")
    return runner


def laptops_file(
    tmp_path: Path,
    name: str,
    quantity: int,
    needed_by: str,
    *,
    individually: str | None = None,
    justification: str = "Laptops for the support floor.",
    requester: str = RITA,
    on_behalf_of: str | None = None,
) -> str:
    """A rollout of LAPTOP-STD-14 for CC-ENG; `individually`: ordered alone, with this reason."""
    line = f"  - sku: LAPTOP-STD-14\n    quantity: {quantity}\n"
    if individually:
        line += f"    sourcing: individual\n    sourcing_justification: {individually}\n"
    whom = f"on_behalf_of: {on_behalf_of}\n" if on_behalf_of else ""
    path = tmp_path / name
    path.write_text(
        f"kind: rollout\nrequester: {requester}\n{whom}cost_centre: CC-ENG\n"
        f"needed_by: {needed_by}\njustification: {justification}\nlines:\n{line}",
        encoding="utf-8",
    )
    return str(path)


# The article's late request: 100 laptops ordered individually, needed in 10 days.
WEB_SHOP = "IT ordered from the web shop"


def submit_late(cli: Cli, tmp_path: Path) -> str:
    path = laptops_file(tmp_path, "late.yaml", 100, "2026-12-05", individually=WEB_SHOP)
    (ref,) = cli.json("request", "submit", path)["ids"]
    return str(ref)


def test_request_economics_says_which_lines_are_not_counted_as_devices(
    cli: Cli, tmp_path: Path
) -> None:
    path = Path(laptops_file(tmp_path, "kit.yaml", 100, "2026-12-05", individually=WEB_SHOP))
    path.write_text(
        path.read_text(encoding="utf-8") + "  - sku: DOCK-USB4\n    quantity: 100\n",
        encoding="utf-8",
    )
    (ref,) = cli.json("request", "submit", str(path))["ids"]
    out = cli.ok("request", "economics", str(ref))
    # The docks are under the agreement, the laptops not: 100 devices, not 200.
    assert "late-involvement cost (if ordered today): 24,000.00 EUR incurred" in out, out
    assert (
        "not counted as devices (economics.peripheral_categories): 100 × DOCK-USB4 (dock)" in out
    ), out


def phones_file(tmp_path: Path, name: str, ownership: str = "bought") -> str:
    """One PHONE-STD for Sara's sales team (no agreement covers phones)."""
    path = tmp_path / name
    path.write_text(
        f"kind: onboarding\nrequester: {SARA}\ncost_centre: CC-SALES\nneeded_by: 2026-12-20\n"
        f"justification: A phone ({name}).\nlines:\n  - sku: PHONE-STD\n    quantity: 1\n"
        f"    ownership: {ownership}\n",
        encoding="utf-8",
    )
    return str(path)


def test_a_phone_no_agreement_covers_is_charged_no_individual_order_for_other_phone_demand(
    cli: Cli, tmp_path: Path
) -> None:
    (ref,) = cli.json("request", "submit", phones_file(tmp_path, "bought.yaml"))["ids"]
    no_charge = "Individual order instead of a framework agreement        0 ×"
    assert no_charge in cli.ok("request", "economics", str(ref))
    # Phones as a service are no units to buy together with this one.
    (daas,) = cli.json("request", "submit", phones_file(tmp_path, "daas.yaml", "daas"))["ids"]
    out = cli.ok("request", "economics", str(ref))
    assert no_charge in out and "bundling" not in out, out
    # Another bought phone is bundling, but no agreement prices the two: nothing was missed.
    (other,) = cli.json("request", "submit", phones_file(tmp_path, "other.yaml"))["ids"]
    out = cli.ok("request", "economics", str(ref))
    assert no_charge in out, out
    assert (
        f"bundling: PHONE-STD is also wanted by {other}: 2 units together, "
        "but no agreement has a price for them"
    ) in out, out
    assert daas not in out


def approve(cli: Cli, ref: str, *approvers: str) -> None:
    for who in approvers:
        extra = ("--confirm-terms",) if who in (PAUL, PETRA) else ()
        cli.json("decide", ref, "--as", who, "--approve", *extra)


# ------------------------------------------------------------------ request show


def test_request_show_has_the_sourcing_tco_delivery_ledger_budget_bundling_and_terms(
    cli: Cli, tmp_path: Path
) -> None:
    late = submit_late(cli, tmp_path)
    other = cli.json("request", "submit", laptops_file(tmp_path, "more.yaml", 20, "2026-12-10"))
    detail = cli.json("request", "show", late)
    for key in ("sourcing", "tco", "delivery", "ledger", "budget", "bundling", "terms"):
        assert key in detail, key

    (line,) = detail["sourcing"]
    expected = {
        "line": 1,
        "sku": "LAPTOP-STD-14",
        "quantity": 100,
        "mode": "individual",
        "agreement": None,
        "unit_price": "949.00",
        "list_price": "949.00",
        "framework_price": "879.00",  # 100 units: the 50-199 tier
        "framework_agreement": "FA-2026-NORDIC",
        "individual_price": "949.00",
        "difference": "7000.00",  # 100 x (949.00 - 879.00)
        "missing_terms": ["warranty", "sla", "returns", "erasure"],
    }
    assert {k: line.get(k) for k in expected} == expected
    assert line["justification"] == WEB_SHOP and line["quotes"] == []

    # 100 devices over 36 months; services not included cost 60 + 8 x 36 + 40 + 25 = 413.00 each
    # buy:   94,900.00 + 41,300.00 - 100 x 120.00 residual = 124,200.00; / 36 = 3,450.00
    # lease: 100 x (27.90 x 36 + 413.00) = 141,740.00; / 36 = 3,937.22
    # DaaS:  100 x 33.50 x 36 = 120,600.00, everything included; / 36 = 3,350.00 (cheapest)
    (tco,) = detail["tco"]
    assert [
        (o["option"], o["capex"], o["opex"], o["residual"], o["total"], o["monthly"], o["cheapest"])
        for o in tco["options"]
    ] == [
        ("buy", "94900.00", "41300.00", "12000.00", "124200.00", "3450.00", False),
        ("lease", "0.00", "141740.00", "0.00", "141740.00", "3937.22", False),
        ("daas", "0.00", "120600.00", "0.00", "120600.00", "3350.00", True),
    ]  # fmt: skip

    assert detail["delivery"] == {
        "needed_by": "2026-12-05",
        "lead_time_days": 10,
        "preparation_days": 5,
        "order_by": "2026-11-20",  # 2026-12-05 - 10 - 5: five days before it was submitted
        "days_left": -5,
        "ordered_on": None,
        "missed": True,
    }
    ledger = detail["ledger"]
    assert (ledger["frozen"], ledger["incurred"], ledger["avoided"]) == (False, "24000.00", "0.00")
    assert [(e["kind"], e["devices"], e["per_device"], e["incurred"]) for e in ledger["entries"]] == [
        ("unclear_terms", 100, "90.00", "9000.00"),
        ("individual_order", 100, "70.00", "7000.00"),
        ("missed_delivery_planning", 100, "80.00", "8000.00"),
    ]  # fmt: skip
    assert detail["budget"] == {
        "cost_centre": "CC-ENG",
        "fiscal_year": 2026,
        "amount": "250000.00",
        "committed": "0.00",
        "spent": "0.00",
        "remaining": "250000.00",
        "this_request": "94900.00",  # 100 x 949.00
        "counted": False,
        "overspent": False,
        "exceeds": False,
        "policy": "warn",
    }
    # 20 more laptops wanted by 2026-12-10: together 120 reach 879.00, 70.00 less on each of 100
    assert detail["bundling"] == [
        {
            "sku": "LAPTOP-STD-14",
            "with": other["ids"],
            "quantity": 100,
            "combined_quantity": 120,
            "unit_price": "949.00",
            "combined_price": "879.00",
            "saving": "7000.00",
        }
    ]
    assert detail["terms"] == {
        "confirmed": {},
        "missing": ["warranty", "sla", "returns", "erasure"],
        "confirm_by": {
            "role": "purchasing",
            "people": [PAUL, PETRA],
            "delegates": [],
            "escalated": None,
        },
    }

    # The same figures for people.
    out = cli.ok("request", "show", late)
    for expected in (
        f"1. LAPTOP-STD-14    individual order ({WEB_SHOP}): 949.00 EUR a unit "
        "(list 949.00 EUR; FA-2026-NORDIC would be 879.00 EUR: this order costs 7,000.00 EUR "
        "more in total)",
        "buy / lease / DaaS, line 1 (LAPTOP-STD-14) over 36 months",
        "delivery plan: order by 2026-11-20 (5 days late): needed by 2026-12-05 "
        "- 10 days lead time - 5 days preparation  MISSED",
        "late-involvement cost (if ordered today): 24,000.00 EUR incurred, 0.00 EUR avoided",
        "budget CC-ENG 2026: 250,000.00 EUR, committed 0.00 EUR, spent 0.00 EUR, "
        "remaining 250,000.00 EUR",
        "bundling: LAPTOP-STD-14 is also wanted by PR-0002: 120 units together "
        "reaching 879.00 EUR a unit (saves 7,000.00 EUR)",
        "contract terms: none confirmed yet; open: warranty, sla, returns, erasure "
        "(to confirm by purchasing)",
    ):
        assert expected in out, expected
    (cheapest,) = [row for row in out.splitlines() if "← cheapest" in row]
    assert cheapest.split()[0] == "daas" and "120,600.00 EUR" in cheapest
    assert "3,350.00 EUR/month" in cheapest
    # Buying shows what its total subtracts: the devices' residual value at the end of the term,
    # positive as in --json (94,900.00 + 41,300.00 less 12,000.00 = 124,200.00).
    (buy,) = [row for row in out.splitlines() if row.split()[:1] == ["buy"] and "CAPEX" in row]
    assert "less residual value    12,000.00 EUR  total   124,200.00 EUR" in buy, buy
    assert "-12,000.00" not in out
    assert detail["tco"][0]["options"][0]["residual"] == "12000.00"
    assert len({row.index("total") for row in out.splitlines() if "CAPEX" in row}) == 1


# ------------------------------------------------------------------ purchasing in the joint review


def test_purchasing_quotes_re_sources_and_confirms_terms_before_the_final_approval(
    cli: Cli, tmp_path: Path
) -> None:
    path = laptops_file(
        tmp_path, "ten.yaml", 10, "2026-12-23", individually="A local dealer was asked first"
    )
    (ref,) = cli.json("request", "submit", path)["ids"]
    quote = cli.json(
        "quote", "add", ref, "--line", "1", "--supplier", "Dealer A", "--price", "920.00", "--as", PAUL
    )  # fmt: skip
    assert quote == {
        "id": quote["id"],
        "request": ref,
        "line": 1,
        "supplier": "Dealer A",
        "unit_price": "920.00",
    }
    out = cli.ok(
        "quote", "add", ref, "--line", "1", "--supplier", "Dealer B", "--price", "935.00",
        "--valid-until", "2026-12-09", "--as", PETRA,
    )  # fmt: skip
    assert "recorded for line 1: Dealer B at 935.00" in out
    quotes = cli.json("request", "show", ref)["sourcing"][0]["quotes"]
    assert [(q["supplier"], q["total"], q["valid_until"]) for q in quotes] == [
        ("Dealer A", "9200.00", None),
        ("Dealer B", "9350.00", "2026-12-09"),
    ]

    out = cli.ok("sourcing", ref, "--line", "1", "--agreement", "FA-2026-NORDIC", "--as", PAUL)
    assert f"{ref} line 1: framework at 899.00 EUR a unit, 8,990.00 EUR in total" in out
    assert cli.json("request", "show", ref)["total"] == "8990.00"
    code, _, err = cli("sourcing", ref, "--line", "1", "--quote", str(quote["id"]), "--as", PAUL)
    assert code == 2 and "--justification: " in err and "lines[" not in err
    chosen = cli.json(
        "sourcing", ref, "--line", "1", "--quote", str(quote["id"]),
        "--justification", "Dealer A delivers in two days.", "--as", PAUL,
    )  # fmt: skip
    assert chosen == {
        "id": ref,
        "line": 1,
        "sourcing": "individual",
        "unit_price": "920.00",
        "total": "9200.00",
        "status": "in_review",
        "request_total": "9200.00",
        "decide_again": [],
        "terms_open": ["warranty", "sla", "returns", "erasure"],  # no agreement settles them
    }
    code, _, err = cli("sourcing", ref, "--line", "1", "--individual", "--as", IDA)
    assert code == 1 and "needs the role purchasing" in err

    out = cli.ok("terms", ref, "--as", PAUL, "--confirm", "warranty", "--confirm", "sla")
    assert f"{ref}: confirmed warranty, sla; still open: returns, erasure" in out
    code, _, err = cli("terms", ref, "--all", "--as", IDA)
    assert code == 1 and "needs the role purchasing" in err
    # Without --confirm or --all it shows the checklist and confirms nothing.
    code, out, _ = cli("terms", ref)
    assert code == 0 and out.splitlines()[1:4] == [
        f"  warranty  confirmed by {PAUL} on 25 Nov 2026 at 10:00 CET",
        f"  sla       confirmed by {PAUL} on 25 Nov 2026 at 10:00 CET",
        "  returns   open",
    ], out
    assert (
        f"  to confirm by purchasing ({PAUL}, {PETRA}): procure terms {ref} --confirm TERM "
        "--as EMAIL, or --all for every open term"
    ) in out
    shown = cli.json("terms", ref)
    assert (shown["missing"], shown["confirm_by"]["people"]) == (
        ["returns", "erasure"],
        [PAUL, PETRA],
    )

    cli.json("decide", ref, "--as", IDA, "--approve")
    decided = cli.json("decide", ref, "--as", PETRA, "--approve", "--confirm-terms")
    assert decided["stage"] == "joint_review" and decided["stage_status"] == "approved"
    terms = cli.json("request", "show", ref)["terms"]
    assert terms["missing"] == []
    assert {name: v["by"] for name, v in terms["confirmed"].items()} == {
        "warranty": PAUL,
        "sla": PAUL,
        "returns": PETRA,
        "erasure": PETRA,
    }
    assert cli.json("decide", ref, "--as", BOB, "--approve")["status"] == "approved"

    # Another request: the budget owner's final approval waits while terms are open.
    path = laptops_file(tmp_path, "two.yaml", 2, "2026-12-23", individually="Special keyboard")
    (two,) = cli.json("request", "submit", path)["ids"]
    first = cli.ok("terms", two, "--as", PAUL, "--confirm", "warranty", "--note", "36 months")
    cli.json("decide", two, "--as", IDA, "--approve")
    cli.json("decide", two, "--as", PAUL, "--approve")  # without --confirm-terms
    code, out, err = cli("decide", two, "--as", BOB, "--approve")
    assert (code, out) == (1, "")
    assert "still open: sla, returns, erasure" in err
    assert cli.json("request", "show", two)["status"] == "in_review"
    # `terms` without --confirm confirms every term still open
    rest = cli.ok("terms", two, "--all", "--as", PAUL, "--note", "Dealer's standard terms")
    again = cli.ok("terms", two, "--all", "--as", PAUL)
    assert cli.json("decide", two, "--as", BOB, "--approve")["status"] == "approved"
    # and each time says which terms it confirmed just now
    assert f"{two}: confirmed warranty; still open: sla, returns, erasure" in first
    assert f"{two}: confirmed sla, returns, erasure; the checklist is complete" in rest
    assert f"{two}: confirmed nothing new; the checklist is complete" in again


def test_an_approved_request_the_agreement_ran_out_for_is_re_sourced_and_ordered(
    cli: Cli, tmp_path: Path
) -> None:
    """The outside tester's case: two approved requests of 1,200 laptops each under
    FA-2026-NORDIC (2,000 units committed). The second cannot be ordered as sourced; what the
    refusal advises works: purchasing buys it individually, the higher total sends it back to
    review, the stages it concerns decide again, and then it orders."""
    approvers = (IDA, PAUL, BOB, FIONA, MAX)
    refs = []
    for team in ("A", "B"):
        path = laptops_file(
            tmp_path, f"r{team}.yaml", 1200, "2027-02-26", justification=f"Team {team}"
        )
        (ref,) = cli.json("request", "submit", path)["ids"]
        approve(cli, ref, *approvers)
        assert cli.json("request", "show", ref)["status"] == "approved"
        refs.append(ref)
    first, second = refs
    assert cli.json("order", first, "--as", PAUL)["status"] == "ordered"

    code, out, err = cli("order", second, "--as", PAUL)
    assert (code, out) == (1, "")
    assert "FA-2026-NORDIC has 800 units left, the order calls off 1200" in err
    advice = f"procure sourcing {second} --line 1 --as PURCHASER with --agreement CODE"
    assert advice in err and "--individual" in err
    assert cli.json("request", "show", second)["status"] == "approved"

    out = cli.ok(
        "sourcing", second, "--line", "1", "--individual", "--justification", "x", "--as", PAUL
    )
    assert f"{second} line 1: individual at 949.00 EUR a unit" in out
    assert (
        f"{second} is back in review (1,030,800.00 EUR before, 1,138,800.00 EUR now): "
        "Joint review (IT and purchasing), Budget owner approval, Finance approval, "
        "Management approval decide again"
    ) in out
    assert (
        "contract terms to confirm again (no longer settled, or a new supplier): warranty, sla, "
        f"returns, erasure; procure terms {second} --as PURCHASER"
    ) in out
    detail = cli.json("request", "show", second)
    assert (detail["status"], detail["total"]) == ("in_review", "1138800.00")
    assert [(s["stage"], s["status"], s["round"]) for s in detail["stages"]] == [
        ("joint_review", "open", 2),
        ("budget_owner", "waiting", 2),
        ("finance", "waiting", 2),
        ("management", "waiting", 2),
    ]
    # Audited: the re-sourcing by Paul, then the request reopened for it, with the figures.
    changes = [e for e in detail["timeline"] if e["action"] in ("sourcing", "reopen")]
    assert [(e["action"], e["actor"], e["to"]) for e in changes] == [
        ("sourcing", PAUL, None),
        ("reopen", PAUL, "in_review"),
    ]
    assert changes[1]["details"]["total"] == ["1030800.00", "1138800.00"]
    # Only the stages that opened ask: the joint review's approvers (IT, and purchasing, which
    # confirms the contract terms the agreement no longer settles).
    assert detail["pending"][0]["stage"] == "joint_review"
    assert detail["terms"]["missing"] == ["warranty", "sla", "returns", "erasure"]

    approve(cli, second, *approvers)
    assert cli.json("request", "show", second)["status"] == "approved"
    ordered = cli.json("order", second, "--as", PAUL)
    assert ordered["status"] == "ordered"
    (po,) = ordered["purchase_orders"]
    assert [(ln["quantity"], ln["agreement"]) for ln in po["lines"]] == [(1200, None)]

    # Ordered: its sourcing no longer changes, and nothing is written.
    engine = make_engine(cli.url)
    try:
        before = row_counts(engine)
        code, out, err = cli("sourcing", second, "--line", "1", "--individual", "--as", PAUL)
        assert (code, out) == (1, "")
        assert f"{second} is ordered: its purchase orders are placed" in err
        assert row_counts(engine) == before
    finally:
        engine.dispose()


def test_terms_are_confirmed_by_whoever_may_decide_purchasing_s_part_of_the_review(
    cli: Cli, tmp_path: Path
) -> None:
    # Paul asks for laptops ordered individually: every term is open, and not his to confirm.
    own = laptops_file(
        tmp_path, "own.yaml", 2, "2026-12-23", individually="Paul's own", requester=PAUL
    )
    (own,) = cli.json("request", "submit", own)["ids"]
    engine = make_engine(cli.url)
    try:
        before = row_counts(engine)
        for args, message in (
            (["terms", own, "--all"], "nobody confirms the contract terms of their own request"),
            (["decide", own, "--approve", "--confirm-terms"], "nobody approves their own request"),
        ):
            code, out, err = cli(*args, "--as", PAUL)
            assert (code, out) == (1, ""), err
            assert f"{own}: {message} ({PAUL} asked for it)" in err
            assert row_counts(engine) == before, args
    finally:
        engine.dispose()
    assert "open: warranty, sla, returns, erasure (to confirm by purchasing)" in cli.ok(
        "request", "show", own
    )

    # Paul asks for Petra's: nobody in purchasing may decide its part, management does, terms too.
    path = laptops_file(
        tmp_path, "petra.yaml", 2, "2026-12-23", individually="Petra's", requester=PAUL,
        on_behalf_of=PETRA,
    )  # fmt: skip
    (ref,) = cli.json("request", "submit", path)["ids"]
    reason = (
        f"nobody may decide purchasing ({PAUL} is excluded: nobody approves their own request; "
        f"{PETRA} is excluded: nobody approves devices for themselves)"
    )
    assert (
        f"open: warranty, sla, returns, erasure (to confirm by management in place of purchasing, "
        f"as {reason})"
    ) in cli.ok("request", "show", ref)
    code, _, err = cli("terms", ref, "--all", "--as", PETRA)
    assert code == 1 and "nobody confirms the contract terms of devices for themselves" in err
    cli.json("decide", ref, "--as", IDA, "--approve")
    decided = cli.json("decide", ref, "--as", MAX, "--approve", "--confirm-terms")
    assert (decided["stage"], decided["role"], decided["stage_status"]) == (
        "joint_review",
        "management",
        "approved",
    )
    terms = cli.json("request", "show", ref)["terms"]
    assert (terms["missing"], terms["confirm_by"]) == ([], None)
    assert {v["by"] for v in terms["confirmed"].values()} == {MAX}
    assert cli.json("decide", ref, "--as", BOB, "--approve")["status"] == "approved"

    # The same with procure terms, after management decided the part without them.
    path = laptops_file(
        tmp_path, "later.yaml", 3, "2026-12-23", individually="Petra's, later", requester=PAUL,
        on_behalf_of=PETRA,
    )  # fmt: skip
    (later,) = cli.json("request", "submit", path)["ids"]
    cli.json("decide", later, "--as", IDA, "--approve")
    cli.json("decide", later, "--as", MAX, "--approve")
    code, out, err = cli("decide", later, "--as", BOB, "--approve")
    assert (code, out) == (1, "")
    assert "before the final approval management (in place of purchasing" in err
    assert f"{later}: confirmed warranty, sla, returns, erasure; the checklist is complete" in (
        cli.ok("terms", later, "--all", "--as", MAX)
    )
    assert cli.json("decide", later, "--as", BOB, "--approve")["status"] == "approved"


# ------------------------------------------------------------------ reports


def test_report_risk_as_json_csv_and_chart_after_the_articles_two_requests(
    cli: Cli, tmp_path: Path
) -> None:
    late = submit_late(cli, tmp_path)
    path = laptops_file(
        tmp_path, "early.yaml", 100, "2027-01-24", justification="Planned together."
    )
    (early,) = cli.json("request", "submit", path)["ids"]
    for ref in (late, early):  # 94,900.00 and 87,900.00: finance and management decide too
        approve(cli, ref, IDA, PAUL, BOB, FIONA, MAX)
        assert cli.json("order", ref, "--as", PAUL)["status"] == "ordered"

    report = cli.json("report", "risk")
    assert report["report"] == "risk"
    assert [
        (r["kind"], r["requests"], r["devices_incurred"], r["incurred"], r["devices_avoided"], r["avoided"])
        for r in report["tables"]["by_kind"]
    ] == [
        ("unclear_terms", 2, 100, "9000.00", 100, "9000.00"),
        ("individual_order", 2, 100, "7000.00", 100, "7000.00"),
        ("missed_delivery_planning", 2, 100, "8000.00", 100, "8000.00"),
    ]  # fmt: skip
    assert report["totals"] == {"incurred": "24000.00", "avoided": "24000.00", "requests": 2}
    # both were ordered on 2026-11-25
    before = cli.json("report", "risk", "--to", "2026-11-24")
    assert before["totals"] == {"incurred": "0.00", "avoided": "0.00", "requests": 0}
    assert before["period"] == {"from": None, "to": "2026-11-24"}

    table = tmp_path / "risk.csv"
    chart = tmp_path / "risk.png"
    out = cli.ok("report", "risk", "--csv", str(table), "--chart", str(chart))
    assert "24,000.00 EUR" in out
    assert f"written: {table}" in out and f"written: {chart}" in out
    with table.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["table"], r["kind"], r["incurred"], r["avoided"]) for r in rows] == [
        ("by_kind", "unclear_terms", "9000.00", "9000.00"),
        ("by_kind", "individual_order", "7000.00", "7000.00"),
        ("by_kind", "missed_delivery_planning", "8000.00", "8000.00"),
    ]
    assert chart.read_bytes().startswith(PNG)


# ------------------------------------------------------------------ bad arguments


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def reviewed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per backend with PR-0001 in review, shared by the tests that write nothing."""
    folder = tmp_path_factory.mktemp("cli-economics")
    dbs = Databases(request.param, request, folder)
    try:
        url = dbs.url("blank")
        path = laptops_file(folder, "late.yaml", 100, "2026-12-05", individually=WEB_SHOP)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PROCURE_NOW", NOW.isoformat())
            assert main(["--db", url, "init", "--sample", "--json"]) == 0
            assert main(["--db", url, "request", "submit", path, "--json"]) == 0
        yield url
    finally:
        dbs.close()


BAD_ARGUMENTS = {
    "an unknown report": (["report", "quarterly"], "unknown report 'quarterly'"),
    "--to before --from": (
        ["report", "costs", "--from", "2026-12-01", "--to", "2026-11-01"],
        "--to (2026-11-01) is before --from (2026-12-01)",
    ),
    "--from after today": (
        ["report", "risk", "--from", "2026-11-26"],
        "--from: 2026-11-26 is after today (2026-11-25): nothing to report yet",
    ),
    "a chart that is not a .png": (
        ["report", "risk", "--chart", "{tmp}/risk.jpg"],
        "--chart: a chart is written as PNG: name the file .png",
    ),
    "an unknown term": (
        ["terms", "PR-0001", "--as", PAUL, "--confirm", "colour"],
        "unknown term(s) colour",
    ),
    "a quote of nothing": (
        ["quote", "add", "PR-0001", "--line", "1", "--supplier", "Dealer Z", "--price", "0.00", "--as", PAUL],
        "price: must be more than 0.00: a quote is a price",
    ),
    "sourcing with --agreement and --individual": (
        ["sourcing", "PR-0001", "--line", "1", "--as", PAUL, "--agreement", "FA-2026-NORDIC", "--individual"],
        "give exactly one of --agreement CODE, --individual, --quote ID",
    ),
    "sourcing with --individual and --quote": (
        ["sourcing", "PR-0001", "--line", "1", "--as", PAUL, "--individual", "--quote", "1"],
        "give exactly one of --agreement CODE, --individual, --quote ID",
    ),
    "sourcing with --agreement and --quote": (
        ["sourcing", "PR-0001", "--line", "1", "--as", PAUL, "--agreement", "FA-2026-NORDIC", "--quote", "1"],
        "give exactly one of --agreement CODE, --individual, --quote ID",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS), ids=list(BAD_ARGUMENTS))
def test_bad_arguments_exit_2_with_a_clear_message_and_write_nothing(
    reviewed: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: str,
) -> None:
    monkeypatch.setenv("PROCURE_NOW", NOW.isoformat())
    args, message = BAD_ARGUMENTS[case]
    engine = make_engine(reviewed)
    try:
        before = row_counts(engine)
        capsys.readouterr()
        code = main(["--db", reviewed, *(a.format(tmp=tmp_path) for a in args)])
        out, err = capsys.readouterr()
        assert (code, out) == (2, ""), err
        assert message in err and err.startswith("procure: bad input"), err
        assert row_counts(engine) == before
    finally:
        engine.dispose()
    assert list(tmp_path.iterdir()) == []  # no CSV, no chart
