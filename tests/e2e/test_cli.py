"""The documented CLI end to end: the JSON contract, exit codes, the whole lifecycle, the demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from procure.cli import main
from tests.conftest import Databases
from tests.factories import BOB, CARL, FIONA, IDA, NINA, NOW, PAUL, RITA, SARA

ROOT = Path(__file__).resolve().parents[2]


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

    def json(self, *args: str, code: int = 0) -> Any:
        got, out, err = self(*args, "--json")
        assert got == code, err
        return json.loads(out)


@pytest.fixture
def cli(
    databases: Databases, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    monkeypatch.setenv("PROCURE_NOW", NOW.isoformat())
    return Cli(databases.url("blank"), capsys)


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return str(path)


def request_file(tmp_path: Path, name: str = "request.yaml", **extra: str) -> str:
    lines = "\n".join(f"{k}: {v}" for k, v in extra.items())
    return write(
        tmp_path / name,
        f"""
        kind: onboarding
        requester: {RITA}
        on_behalf_of: {NINA}
        cost_centre: CC-ENG
        needed_by: 2026-12-20
        justification: Nina joins the platform team.
        lines:
          - {{sku: LAPTOP-STD-14, quantity: 1}}
          - {{sku: MON-27, quantity: 2}}
        """
        + lines,
    )


def test_init_creates_the_schema_then_reports_it_up_to_date(cli: Cli, tmp_path: Path) -> None:
    first = cli.json("init", "--sample")
    assert first["schema"]["from"] is None and first["schema"]["to"]
    assert first["sample"]["org"]["person"]["created"] == 12
    # The organisation changes: a budget lowered, someone set inactive.
    org = write(
        tmp_path / "org.yaml",
        f"""
        people:
          - {{email: {SARA}, name: Sara Sales, department: Sales, roles: [requester], active: false}}
        cost_centres:
          - {{code: CC-ENG, name: Engineering, budget_owner: {BOB}, budgets: {{2026: 100000.00}}}}
        """,
    )
    cli.json("org", "load", org)
    again = cli.json("init", "--sample")
    assert again["schema"]["from"] == again["schema"]["to"]
    # The sample is not loaded over it: nothing it changed is undone.
    assert "already holds an organisation (12 people)" in again["sample"]["skipped"]
    code, out, _ = cli("init", "--sample")
    assert code == 0 and "sample organisation and catalog: not loaded, the database" in out
    detail = cli.json("request", "submit", request_file(tmp_path))
    budget = cli.json("request", "economics", detail["ids"][0])["budget"]
    assert (budget["cost_centre"], budget["amount"]) == ("CC-ENG", "100000.00")
    assert cli("inbox", "--as", SARA)[1] == f"nothing waits for you ({SARA} is not active)\n"


def test_submit_prints_ids_and_show_has_the_documented_fields(cli: Cli, tmp_path: Path) -> None:
    cli.json("init", "--sample")
    submitted = cli.json("request", "submit", request_file(tmp_path))
    assert submitted["ids"] == ["PR-0001"] and submitted["created"] == ["PR-0001"]
    detail = cli.json("request", "show", "PR-0001")
    for key in (
        "id",
        "status",
        "kind",
        "total",
        "currency",
        "lines",
        "stages",
        "pending",
        "timeline",
    ):
        assert key in detail, key
    assert detail["id"] == "PR-0001" and detail["status"] == "in_review"
    # under the sample framework agreement: 899.00 + 2 x 269.00 = 1,437.00, as a decimal string
    assert detail["total"] == "1437.00" and detail["currency"] == "EUR"
    assert [ln["sku"] for ln in detail["lines"]] == ["LAPTOP-STD-14", "MON-27"]
    assert all({"stage", "decisions", "status"} <= set(s) for s in detail["stages"])
    assert detail["pending"][0]["stage"] == "joint_review"
    assert IDA in detail["pending"][0]["approvers"]
    assert detail["timeline"][0]["action"] == "submit"
    # the short and the long id both work
    assert cli.json("request", "show", "1")["id"] == "PR-0001"


def test_the_same_file_twice_creates_one_request(cli: Cli, tmp_path: Path) -> None:
    cli.json("init", "--sample")
    path = request_file(tmp_path, idempotency_key="hr-4711")
    assert cli.json("request", "submit", path)["created"] == ["PR-0001"]
    again = cli.json("request", "submit", path)
    assert (
        again["ids"] == ["PR-0001"] and again["created"] == [] and again["existing"] == ["PR-0001"]
    )
    assert len(cli.json("request", "list")["requests"]) == 1


def test_the_original_file_edited_resubmits_a_request_sent_back(cli: Cli, tmp_path: Path) -> None:
    cli.json("init", "--sample")
    path = request_file(tmp_path, idempotency_key="hr-4712")
    (ref,) = cli.json("request", "submit", path)["ids"]
    cli.json("decide", ref, "--as", IDA, "--send-back", "--comment", "one monitor is enough")
    # The requester edits the file they submitted: what cannot change is named as it was.
    edited = Path(path).read_text(encoding="utf-8").replace("quantity: 2", "quantity: 1")
    Path(path).write_text(edited.replace(RITA, RITA.upper()), encoding="utf-8")
    result = cli.json("request", "resubmit", ref, path, "--as", RITA)
    assert (result["status"], result["round"]) == ("in_review", 2)
    assert [ln["quantity"] for ln in cli.json("request", "show", ref)["lines"]] == [1, 1]
    # A value it names otherwise is still refused, by line, and nothing changes.
    cli.json("decide", ref, "--as", IDA, "--send-back", "--comment", "the laptop is enough")
    Path(path).write_text(edited.replace(RITA, BOB), encoding="utf-8")
    code, _, err = cli("request", "resubmit", ref, path, "--as", RITA)
    assert code == 2 and "request.yaml:2: requester: is fixed once the request is submitted" in err
    assert cli.json("request", "show", ref)["status"] == "changes_requested"


def test_a_list_file_submits_every_request(cli: Cli, tmp_path: Path) -> None:
    cli.json("init", "--sample")
    path = write(
        tmp_path / "many.json",
        json.dumps(
            [
                {
                    "kind": "refresh",
                    "requester": RITA,
                    "cost_centre": "CC-ENG",
                    "needed_by": "2026-12-20",
                    "lines": [{"sku": "MON-27", "quantity": 1}],
                },
                {
                    "kind": "replacement",
                    "requester": NINA,
                    "cost_centre": "CC-ENG",
                    "needed_by": "2026-12-21",
                    "lines": [{"sku": "DOCK-USB4", "quantity": 1}],
                },
            ]
        ),
    )
    assert cli.json("request", "submit", path)["ids"] == ["PR-0001", "PR-0002"]
    assert [r["id"] for r in cli.json("request", "list", "--status", "in_review")["requests"]] == [
        "PR-0002",
        "PR-0001",
    ]


def test_a_csv_of_lines_groups_rows_by_ref(cli: Cli, tmp_path: Path) -> None:
    cli.json("init", "--sample")
    path = write(
        tmp_path / "rollout.csv",
        f"""
        ref,kind,requester,cost_centre,needed_by,sku,quantity
        a,rollout,{RITA},CC-ENG,2026-12-20,LAPTOP-STD-14,20
        a,rollout,{RITA},CC-ENG,2026-12-20,DOCK-USB4,20
        b,refresh,{NINA},CC-SALES,2026-12-22,PHONE-STD,3
        """,
    )
    ids = cli.json("request", "submit", path)["ids"]
    assert ids == ["PR-0001", "PR-0002"]
    first = cli.json("request", "show", "PR-0001")
    # under the framework agreement: 20 x 899.00 + 20 x 199.00 = 21,960.00: finance joins
    assert first["total"] == "21960.00"
    assert {s["stage"]: s["status"] for s in first["stages"]}["finance"] == "waiting"


def test_the_whole_lifecycle_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    cli.json("init", "--sample")
    cli.json("request", "submit", request_file(tmp_path))
    assert cli.json("inbox", "--as", IDA)["items"][0]["stage"] == "joint_review"
    code, _, err = cli("decide", "PR-0001", "--as", RITA, "--approve")
    assert code == 1 and "own request" in err
    assert cli.json("decide", "PR-0001", "--as", IDA, "--approve")["changed"] is True
    assert cli.json("decide", "PR-0001", "--as", IDA, "--approve")["changed"] is False
    decided = cli.json(
        "decide", "PR-0001", "--as", PAUL, "--approve", "--comment", "terms confirmed"
    )
    assert decided["stage_status"] == "approved"
    # Carl is Bob's delegate only from 2026-12-21: today he may not decide
    code, _, err = cli("decide", "PR-0001", "--as", CARL, "--approve")
    assert code == 1 and "delegation is not in force" in err
    assert cli.json("decide", "PR-0001", "--as", BOB, "--approve")["status"] == "approved"
    code, _, err = cli("decide", "PR-0001", "--as", BOB, "--reject", "--comment", "too late")
    # When, in the organisation's time zone (NOW is 09:00 UTC), not in UTC.
    assert code == 1 and err.strip().endswith(
        "PR-0001 budget_owner: you already decided approve on 25 Nov 2026 at "
        "10:00 CET; a decision cannot be changed"
    ), err
    order = cli.json("order", "PR-0001", "--as", PAUL)
    assert order["status"] == "ordered" and order["purchase_orders"][0]["supplier"] == "NORDIC-IT"
    # Needed by 2026-12-20: a date after it is recorded, with a warning (the supplier's date
    # is what it is); the date agreed is then moved back in time.
    code, out, err = cli("schedule", "PR-0001", "--date", "2026-12-23")
    assert code == 0 and out == "PR-0001  delivery_scheduled for 2026-12-23\n", out
    assert err == (
        "procure: warning: 2026-12-23 is 3 days after PR-0001 is needed (2026-12-20): "
        "tell the requester\n"
    )
    on_time = cli.json("schedule", "PR-0001", "--date", "2026-12-10")
    assert (on_time["status"], on_time["days_late"]) == ("delivery_scheduled", 0)
    assert on_time["lead_time"] == {
        "supplier": "NORDIC-IT",
        "days": 10,
        "ordered_on": "2026-11-25",
        "usual_delivery": "2026-12-05",
        "days_early": 0,
    }
    # Sooner than the supplier's lead time from the order: recorded (the supplier may have
    # agreed to it), with a warning to check it.
    code, out, err = cli("schedule", "PR-0001", "--date", "2026-12-01")
    assert code == 0 and out == "PR-0001  delivery_scheduled for 2026-12-01\n", out
    assert err == (
        "procure: warning: 2026-12-01 is 4 days sooner than Nordic IT Distribution usually delivers "
        "(10 days from the order on 2026-11-25: 2026-12-05): check the date with the supplier\n"
    )
    assert cli.json("schedule", "PR-0001", "--date", "2026-12-10")["delivery_on"] == "2026-12-10"
    serials = write(
        tmp_path / "serials.csv", "serial,sku\nSN-1,LAPTOP-STD-14\nSN-2,MON-27\nSN-3,MON-27\n"
    )
    assert cli.json("deliver", "PR-0001", "--serials", serials)["remaining"] == 0
    assign = write(
        tmp_path / "assign.csv", f"serial,email\nSN-1,{NINA}\nSN-2,{NINA}\nSN-3,{NINA}\n"
    )
    assert cli.json("rollout", "PR-0001", "--assign", assign)["status"] == "rolled_out"
    # The timeline says a delivery's or a rollout's devices on one line each, counted.
    code, out, _ = cli("request", "show", "PR-0001")
    timeline = out.split("  timeline\n")[1].splitlines()
    grouped = [t for t in timeline if "3 devices SN-1 … SN-3" in t]
    assert [t.split()[7:10] for t in grouped] == [
        ["deliver", "ordered", "→"],
        ["deploy", "delivered", "→"],
    ], timeline
    assert not any(" SN-2 " in t for t in timeline)
    assert cli.json("asset", "ack", "SN-1", "--as", NINA)["acknowledged_at"] is not None
    # A return asked by mistake is taken back (IT or HR); the holder keeps the device.
    asked = cli.json("asset", "request-return", "SN-1", "--reason", "Refresh", "--as", IDA)
    assert asked["status"] == "return_requested"
    code, _, err = cli("asset", "cancel-return", "SN-1", "--as", NINA)
    assert code == 1 and "cannot take return requests back: needs the role hr or it" in err
    kept = cli.json("asset", "cancel-return", "SN-1", "--reason", "Postponed", "--as", IDA)
    assert (kept["status"], kept["assigned_to"]) == ("deployed", NINA)
    code, _, err = cli("asset", "cancel-return", "SN-1", "--as", IDA)
    assert code == 1 and "asset SN-1 is deployed: cannot cancel_return" in err
    for serial in ("SN-1", "SN-2", "SN-3"):
        assert cli.json("asset", "return", serial)["status"] == "returned"
        erased = cli.json(
            "asset",
            "erase",
            serial,
            "--certificate",
            f"C-{serial}",
            "--method",
            "NIST 800-88 purge",
            "--provider",
            "DaaS Company",
        )
        assert erased["status"] == "erased" and erased["erasure"]["certificate"] == f"C-{serial}"
    assert cli.json("request", "show", "PR-0001")["status"] == "closed"
    assert cli.json("asset", "dispose", "SN-1", "--to", "recycler")["status"] == "disposed"
    verified = cli.json("audit", "verify")
    assert verified["ok"] is True and verified["checked"] > 40


def test_human_output_shows_the_request_and_its_timeline(cli: Cli, tmp_path: Path) -> None:
    cli.json("init", "--sample")
    cli.json("request", "submit", request_file(tmp_path))
    code, out, _ = cli("request", "show", "PR-0001")
    assert code == 0
    assert "PR-0001  in_review" in out
    assert "1,437.00 EUR" in out
    assert "pending joint_review:" in out and IDA in out
    assert "draft → submitted" in out
    code, out, _ = cli("request", "list")
    assert code == 0 and "waiting for joint_review" in out


def test_a_part_delivered_without_a_date_shows_what_arrived_and_no_made_up_date(
    cli: Cli, tmp_path: Path
) -> None:
    """Delivered in part before `procure schedule`: the request stays ordered with no delivery
    date, `deliver` and `request show` say how many arrived and that the rest has no date (and
    how purchasing records it), and nobody is told a delivery date."""
    cli.json("init", "--sample")
    (ref,) = cli.json("request", "submit", request_file(tmp_path))["ids"]
    for who in (IDA, PAUL, BOB):
        cli.json("decide", ref, "--as", who, "--approve")
    cli.json("order", ref, "--as", PAUL)
    part = write(tmp_path / "part.csv", "serial,sku\nSN-P1,LAPTOP-STD-14\n")
    code, out, _ = cli("deliver", ref, "--serials", part, "--as", IDA)
    assert (code, out) == (
        0,
        f"{ref}  ordered: 1 delivered, 2 still to come; no delivery date is agreed for them: "
        f"procure schedule {ref} --date YYYY-MM-DD\n",
    ), out
    code, out, _ = cli("request", "show", ref)
    assert code == 0 and f"{ref}  ordered" in out and "delivery 2026" not in out
    assert (
        "  arrived       1 of 3 units; no delivery date is agreed for the other 2: purchasing "
        f"records it with procure schedule {ref} --date YYYY-MM-DD\n"
    ) in out
    assert cli.json("request", "show", ref)["delivery_on"] is None
    told = cli.json("notify", "status", "--request", ref)
    events = [n["event"] for n in told["items"]]
    assert "delivery_scheduled" not in events and events.count("delivered") == 3
    # The date agreed for the rest: show says when the rest comes.
    cli.json("schedule", ref, "--date", "2026-12-10", "--as", PAUL)
    code, out, _ = cli("request", "show", ref)
    assert "delivery 2026-12-10" in out
    assert "  arrived       1 of 3 units; the other 2 are due 2026-12-10\n" in out


def test_a_rollout_s_devices_are_counted_in_show_and_listed_by_asset_list(
    cli: Cli, tmp_path: Path
) -> None:
    """Eight laptops and eight docks for Nina: `request show` counts them by item (sixteen
    lines would bury the request), `asset list` lists them, and finds those whose holder has not
    confirmed receipt."""
    cli.json("init", "--sample")
    source = request_file(tmp_path, "kit.yaml")
    text = Path(source).read_text(encoding="utf-8")
    text = text.replace("{sku: LAPTOP-STD-14, quantity: 1}", "{sku: LAPTOP-STD-14, quantity: 8}")
    text = text.replace("{sku: MON-27, quantity: 2}", "{sku: DOCK-USB4, quantity: 8}")
    Path(source).write_text(text, encoding="utf-8")
    (ref,) = cli.json("request", "submit", source)["ids"]
    assert cli("asset", "list") == (0, "no devices\n", "")
    for who in (IDA, PAUL, BOB):
        cli.json("decide", ref, "--as", who, "--approve")
    cli.json("order", ref, "--as", PAUL)
    serials = [f"SN-L{i}" for i in range(8)] + [f"SN-D{i}" for i in range(8)]
    skus = ["LAPTOP-STD-14"] * 8 + ["DOCK-USB4"] * 8
    rows = "".join(f"{s},{k}\n" for s, k in zip(serials, skus, strict=True))
    cli.json("deliver", ref, "--serials", write(tmp_path / "serials.csv", "serial,sku\n" + rows))
    cli.json("rollout", ref)
    for serial in ("SN-L0", "SN-L1"):
        cli.json("asset", "ack", serial, "--as", NINA)

    code, out, _ = cli("request", "show", ref)
    assert code == 0
    devices = out.split("  devices")[1].split("  timeline")[0].splitlines()
    assert devices == [
        f" (16; procure asset list --request {ref} lists them)",
        "        8 × LAPTOP-STD-14    deployed, 6 not yet confirmed by their holder",
        "        8 × DOCK-USB4        deployed, 8 not yet confirmed by their holder",
    ], devices
    assert len(cli.json("request", "show", ref)["assets"]) == 16  # --json keeps every device

    listed = cli.json("asset", "list", "--request", ref)["devices"]
    assert [d["serial"] for d in listed] == serials
    assert {(d["assigned_to"], d["status"], d["request"]) for d in listed} == {
        (NINA, "deployed", ref)
    }
    waiting = cli.json("asset", "list", "--request", ref, "--unacknowledged")["devices"]
    assert [d["serial"] for d in waiting] == serials[2:]
    assert [d["serial"] for d in cli.json("asset", "list", "--holder", NINA)["devices"]] == serials
    assert cli.json("asset", "list", "--status", "returned")["devices"] == []
    assert len(cli.json("asset", "list", "--limit", "3")["devices"]) == 3
    code, out, _ = cli("asset", "list", "--unacknowledged", "--limit", "2")
    assert code == 0
    assert out.splitlines() == [
        "SERIAL               REQUEST   SKU              STATUS               CONFIRMED  "
        "WARRANTY   HOLDER",
        f"SN-L2                {ref}   LAPTOP-STD-14    deployed             -          "
        f"{listed[2]['warranty_end']} {NINA}",
        f"SN-L3                {ref}   LAPTOP-STD-14    deployed             -          "
        f"{listed[3]['warranty_end']} {NINA}",
        "2 devices",
    ]


def test_procure_user_stands_for_as_and_is_named_when_it_is_wrong(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator sets PROCURE_USER once instead of --as on every command; --as still wins,
    and a wrong PROCURE_USER is named as such (not as --as, which nobody typed)."""
    cli.json("init", "--sample")
    cli.json("request", "submit", request_file(tmp_path))
    monkeypatch.setenv("PROCURE_USER", IDA)
    assert [i["id"] for i in cli.json("inbox")["items"]] == ["PR-0001"]
    code, out, err = cli("decide", "PR-0001", "--approve")
    assert code == 0, err
    assert out.startswith(f"PR-0001 joint_review: approve by {IDA}"), out
    code, out, err = cli("decide", "PR-0001", "--approve", "--confirm-terms", "--as", PAUL)
    assert code == 0 and f"approve by {PAUL}" in out, err
    code, _, err = cli("order", "PR-0001")  # Ida is IT, not purchasing: checked, not 'system'
    assert code == 1 and f"{IDA} cannot place orders: needs the role purchasing" in err
    monkeypatch.setenv("PROCURE_USER", "ghost@example.com")
    code, out, err = cli("inbox")
    assert (code, out) == (2, "")
    assert err == "procure: bad input: PROCURE_USER: no person with email ghost@example.com\n"
    code, _, err = cli("inbox", "--as", "ghost@example.com")
    assert err == "procure: bad input: --as: no person with email ghost@example.com\n"
    monkeypatch.delenv("PROCURE_USER")
    code, _, err = cli("inbox")
    assert code == 2 and "Missing option '--as'" in err


def test_the_inbox_lists_the_contract_terms_that_hold_up_the_final_approval(
    cli: Cli, tmp_path: Path
) -> None:
    """Purchasing approves its part of a developer workplace without the contract terms the
    agreement leaves open: the final approval is refused, naming who confirms them and how; they
    find them in their inbox (text and JSON) and are notified; once confirmed, they are gone."""
    cli.json("init", "--sample")
    path = write(
        tmp_path / "dev.yaml",
        f"""
        kind: onboarding
        requester: {RITA}
        on_behalf_of: {NINA}
        cost_centre: CC-ENG
        needed_by: 2027-01-15
        justification: Nina's developer workplace.
        bundle: developer
        """,
    )
    cli.json("request", "submit", path)
    cli.json("decide", "PR-0001", "--as", IDA, "--approve")
    cli.json("decide", "PR-0001", "--as", PAUL, "--approve")  # without --confirm-terms
    code, _, err = cli("decide", "PR-0001", "--as", BOB, "--approve")
    assert code == 1 and "they confirm them from their inbox or with procure terms PR-0001" in err
    terms = ["warranty", "sla", "returns", "erasure"]
    (item,) = cli.json("inbox", "--as", PAUL)["items"]
    assert (item["id"], item["what"], item["stage"], item["terms"], item["role"]) == (
        "PR-0001",
        "terms",
        None,
        terms,
        "purchasing",
    )
    assert item["total"] == cli.json("request", "show", "PR-0001")["total"]
    code, out, _ = cli("inbox", "--as", PAUL)
    assert code == 0
    assert out.startswith("PR-0001   terms          as purchasing "), out
    assert (
        "contract terms to confirm: warranty, sla, returns, erasure; "
        f"procure terms PR-0001 --all --as {PAUL}\n"
    ) in out
    assert [i["what"] for i in cli.json("inbox", "--as", BOB)["items"]] == ["decision"]
    code, out, _ = cli("notify", "status", "--request", "PR-0001")
    told = sorted(re.findall(r"terms_open +(\S+)", out))
    assert told == [f"person:{PAUL}", "person:petra.purchasing@example.com"], out

    code, out, err = cli("terms", "PR-0001", "--all", "--as", PAUL)
    assert code == 0, err
    assert cli.json("inbox", "--as", PAUL)["items"] == []
    assert cli.json("decide", "PR-0001", "--as", BOB, "--approve")["status"] == "approved"


def own_budget_at_its_owner(cli: Cli, tmp_path: Path) -> None:
    """PR-0001: Bob asks from the budget he owns; its joint review is approved."""
    cli.json("init", "--sample")
    own = Path(request_file(tmp_path))
    own.write_text(own.read_text().replace(f"requester: {RITA}", f"requester: {BOB}"))
    cli.json("request", "submit", str(own))
    cli.json("decide", "PR-0001", "--as", IDA, "--approve")
    cli.json("decide", "PR-0001", "--as", PAUL, "--approve")


def test_the_cli_shows_and_decides_a_budget_escalated_to_finance(cli: Cli, tmp_path: Path) -> None:
    # Bob asks from the budget he owns: nobody may approve it, so finance decides it at once.
    own_budget_at_its_owner(cli, tmp_path)
    reason = (
        f"nobody may decide budget_owner ({BOB} is excluded: nobody approves their own request)"
    )
    code, out, _ = cli("request", "show", "PR-0001")
    assert code == 0
    assert f"pending budget_owner: {FIONA}; escalated to finance: {reason}" in out
    code, out, _ = cli("inbox", "--as", FIONA)
    assert code == 0 and "budget_owner   as finance (escalated)" in out
    code, _, err = cli("decide", "PR-0001", "--as", SARA, "--approve")
    assert code == 1 and f"finance in place of budget_owner, as {reason}" in err
    code, out, _ = cli("decide", "PR-0001", "--as", FIONA, "--approve")
    assert code == 0
    assert out.strip() == (
        f"PR-0001 budget_owner: approve by {FIONA} as finance → stage approved, request approved"
        f"  (escalated to finance: {reason})"
    )


def test_the_cli_shows_a_part_nobody_may_decide_with_why_and_what_to_do(
    cli: Cli, tmp_path: Path
) -> None:
    # Bob asks from the budget he owns, then an organisation file takes finance from Fiona:
    # the budget owner's part has nobody, nor finance, its escalation role, in its place.
    own_budget_at_its_owner(cli, tmp_path)
    org = tmp_path / "org.yaml"
    fiona = f"{{email: {FIONA}, name: Fiona Finance, department: Finance, roles: [%s]}}"
    org.write_text(f"people:\n  - {fiona % 'requester'}\n")
    assert cli("org", "load", str(org))[0] == 0
    nobody = (
        f"nobody may decide budget_owner ({BOB} is excluded: nobody approves their own request),"
        " nor finance in its place (nobody holds the role finance); what to do: make someone who"
        " may decide it the owner of the request's cost centre or give the role finance to"
        " someone who may decide it (procure org load)"
    )
    code, out, _ = cli("request", "show", "PR-0001")
    assert code == 0 and f"pending budget_owner: {nobody}" in " ".join(out.split())
    code, out, _ = cli("inbox", "--as", BOB)
    assert code == 0 and "budget_owner   as budget_owner" in out and nobody in out
    assert cli.json("inbox", "--as", FIONA)["items"] == []

    # Fiona is given finance again: the part goes to her.
    org.write_text(f"people:\n  - {fiona % 'requester, finance'}\n")
    assert cli("org", "load", str(org))[0] == 0
    code, out, _ = cli("inbox", "--as", FIONA)
    assert code == 0 and "budget_owner   as finance (escalated)" in out
    assert cli.json("decide", "PR-0001", "--as", FIONA, "--approve")["role"] == "finance"


def test_a_delegate_the_rules_exclude_is_not_queued_an_approval_needed(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # During Carl's delegation for Bob: one request is for Carl's own laptop, one for Nina's.
    monkeypatch.setenv("PROCURE_NOW", "2026-12-22T10:00:00+01:00")
    cli.json("init", "--sample")
    for who in (CARL, NINA):
        path = write(
            tmp_path / f"{who}.yaml",
            f"""
            kind: onboarding
            requester: {RITA}
            on_behalf_of: {who}
            cost_centre: CC-ENG
            needed_by: 2027-02-01
            justification: A laptop for {who}.
            lines: [{{sku: LAPTOP-STD-14, quantity: 1}}]
            """,
        )
        (ref,) = cli.json("request", "submit", path)["ids"]
        cli.json("decide", ref, "--as", IDA, "--approve")
        cli.json("decide", ref, "--as", PAUL, "--approve", "--confirm-terms")
    asked = {
        (item["request"], item["audience"])
        for item in cli.json("notify", "status")["items"]
        if item["event"] == "approval_needed"
        and item["audience"] in (f"person:{BOB}", f"person:{CARL}")
    }
    # Carl is asked for Bob where he may decide, and not where he would decide for himself.
    assert asked == {
        ("PR-0001", f"person:{BOB}"),
        ("PR-0002", f"person:{BOB}"),
        ("PR-0002", f"person:{CARL}"),
    }
    assert cli.json("request", "show", "PR-0001")["pending"][0]["delegates"] == []
    assert cli.json("request", "show", "PR-0002")["pending"][0]["delegates"] == [
        f"{CARL} (for {BOB})"
    ]
    assert [i["id"] for i in cli.json("inbox", "--as", CARL)["items"]] == ["PR-0002"]
    code, _, err = cli("decide", "PR-0001", "--as", CARL, "--approve")
    assert code == 1 and "nobody approves devices for themselves" in err


@pytest.mark.parametrize(
    "command",
    [
        ["request", "list"],
        ["request", "show", "PR-0001"],
        ["inbox", "--as", IDA],
        ["audit", "verify"],
        ["asset", "list", "--unacknowledged"],
    ],
)
def test_read_only_commands_do_not_import_prefect(
    databases: Databases, tmp_path: Path, command: list[str]
) -> None:
    url = databases.url("sample")
    probe = textwrap.dedent(
        f"""
        import sys
        from procure.cli import main
        main(["--db", {url!r}, "request", "submit", {request_file(tmp_path)!r}])
        before = {{m for m in sys.modules if m == "prefect" or m.startswith("prefect.")}}
        code = main(["--db", {url!r}, *{command!r}])
        loaded = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
        print("RESULT", code, len(before), len(loaded))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PROCURE_NOW": NOW.isoformat(), "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "RESULT 0 0 0", result.stdout + result.stderr


def test_the_console_script_maps_errors_to_exit_codes(tmp_path: Path) -> None:
    procure = Path(sys.executable).with_name("procure")
    db = f"sqlite:///{tmp_path / 'p.db'}"
    env = {"PATH": "/usr/bin:/bin", "PROCURE_NOW": NOW.isoformat(), "HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(procure), "--db", db, *args], capture_output=True, text=True, timeout=60, env=env
        )

    missing = run("request", "list")
    assert missing.returncode == 2 and "procure init" in missing.stderr
    assert run("init", "--sample").returncode == 0
    assert run("request", "show", "PR-0099").returncode == 2
    bad = run("frobnicate")
    assert bad.returncode == 2 and "No such command" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr


# Recognisable fake secrets the demo runs with: none may appear in anything it leaves behind.
FAKE_KEY = "FAKE-SIGNING-KEY-3f9a1c7e5b2d4a6c8e0f1a3b5c7d9e1f"
FAKE_API_TOKEN = "FAKE-API-TOKEN-d41d8cd98f00b204e9800998ecf8427e"


def test_the_demo_walks_a_request_to_certified_erasure(tmp_path: Path) -> None:
    procure = Path(sys.executable).with_name("procure")
    result = subprocess.run(
        [str(procure), "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PROCURE_SECRET_KEY": FAKE_KEY,
            "PROCURE_API_TOKEN": FAKE_API_TOKEN,
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "rolled_out → closed" in out
    assert "on behalf of bob.budget@example.com" in out
    assert "audit trail intact" in out
    assert '"escalations": 2' in out  # the SLA watchdog, run with Prefect's temporary server
    assert '"status": "rolled_out"' in out  # the shipping notice of the early rollout
    assert "totals: incurred 24,000.00 EUR" in out  # the article's case, in the risk report
    assert "Traceback" not in out + result.stderr
    assert (tmp_path / "demo" / "procure.db").exists()
    # Every email it sent is kept, as .eml and .html, in the folder it names.
    mails = sorted((tmp_path / "demo" / "mail").glob("*.eml"))
    sent = re.search(r"Every email the demo sent \((\d+)\)", out)
    assert sent is not None and len(mails) == int(sent.group(1)) > 50, out[-2000:]
    assert len(list((tmp_path / "demo" / "mail").glob("*.html"))) == len(mails)
    assert f"is in {tmp_path / 'demo' / 'mail'}/" in out
    # No secret in the output, the databases (procure's and Prefect's: logs, artifacts,
    # parameters), the emails or any other file the run left.
    leaked = [
        str(path)
        for path in tmp_path.rglob("*")
        if path.is_file()
        and any(secret.encode() in path.read_bytes() for secret in (FAKE_KEY, FAKE_API_TOKEN))
    ]
    assert leaked == []
    assert FAKE_KEY not in out + result.stderr and FAKE_API_TOKEN not in out + result.stderr


def test_request_show_keeps_its_columns_for_large_amounts_and_cuts_names_with_an_ellipsis(
    cli: Cli, tmp_path: Path
) -> None:
    cli.json("init", "--sample")
    big = write(
        tmp_path / "big.yaml",
        f"""
        kind: refresh
        requester: {RITA}
        cost_centre: CC-ENG
        needed_by: 2027-01-15
        justification: The whole company at once.
        lines:
          - {{sku: LAPTOP-STD-14, quantity: 900, unit_price: 999999.99, sourcing: individual,
              sourcing_justification: a price agreed by the board}}
          - {{sku: MON-27, quantity: 2}}
        """,
    )
    (ref,) = cli.json("request", "submit", big)["ids"]
    code, shown, err = cli("request", "show", ref)
    assert code == 0, err
    out = shown.splitlines()
    start = out.index("  lines")
    first, second, total = out[start + 1 : start + 4]
    assert first.endswith(" 999,999.99 EUR 899,999,991.00 EUR"), first
    assert second.endswith("     538.00 EUR"), second
    assert total.endswith("total 900,000,529.00 EUR"), total
    assert len(first) == len(second) == len(total)  # every amount ends in the same column
    # The inbox too: a small request beside the big one.
    cli.json("request", "submit", request_file(tmp_path))
    code, shown, err = cli("inbox", "--as", PAUL)
    assert code == 0, err
    rows = [line for line in shown.splitlines() if line.startswith("PR-")]
    ends = {line.index(" EUR  due ") for line in rows}
    assert len(rows) == 2 and len(ends) == 1, shown
    # A provider's name longer than its column is cut with an ellipsis.
    from procure.text import clip

    assert clip("Manufacturer direct sales", 22) == "Manufacturer direct s…"
    assert clip("Nordic IT Distribution", 22) == "Nordic IT Distribution"
    # A long list in a sentence (the requests that want the same item) names five.
    from procure.text import listed

    refs = [f"PR-{n:04d}" for n in range(2, 102)]
    assert listed(refs) == "PR-0002, PR-0003, PR-0004, PR-0005, PR-0006 and 95 more"
    assert listed(refs[:5]) == "PR-0002, PR-0003, PR-0004, PR-0005, PR-0006"
