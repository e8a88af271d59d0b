"""The flows under a real (temporary) Prefect server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import func, select

from models import actions
from models.audit import AuditEvent
from models.db import transaction
from models.outbox import Notification
from models.requests import DecisionCreate
from tests.factories import (
    IDA,
    IVAN,
    NINA,
    NOW,
    PAUL,
    PETRA,
    RITA,
    TODAY,
    approve_all,
    show,
    submit,
)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def artifact(key: str) -> Any:
    from prefect.artifacts import Artifact

    found = Artifact.get(key)
    assert found is not None, f"no artifact {key}"
    return found


def table(key: str) -> list[dict[str, Any]]:
    """The rows of the latest table artifact of that key."""
    data = artifact(key).data
    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list), rows
    return rows


def logged(since: datetime) -> list[str]:
    """The messages of the runs' log lines at the Prefect server since then, oldest first (the
    server is shared by the tests of a session)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    after = LogFilter(timestamp=LogFilterTimestamp(after_=since))

    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(log_filter=after, sort=LogSort.TIMESTAMP_ASC)
            return [log.message for log in logs]

    return list(run(read()))


def count(engine: Engine, model: Any, *where: Any) -> int:
    with transaction(engine, readonly=True) as session:
        return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return str(path)


def test_intake_submits_a_file_in_batches_and_shows_its_progress(
    flow_db: Engine, tmp_path: Path
) -> None:
    from flows.intake import intake

    entries = "\n".join(
        f"""  - {{kind: refresh, requester: {RITA}, cost_centre: CC-ENG, needed_by: {TODAY + timedelta(days=30 + i)}, lines: [{{sku: MON-27, quantity: 1}}]}}"""
        for i in range(5)
    )
    source = write(tmp_path / "batch.yaml", "requests:\n" + entries + "\n")
    started = datetime.now(UTC)
    ids = run(intake(source, batch_size=2))
    assert ids == ["PR-0001", "PR-0002", "PR-0003", "PR-0004", "PR-0005"]
    assert all(show(flow_db, ref)["status"] == "in_review" for ref in ids)
    assert artifact("intake").type == "table"
    # The same file again: every request is recognised, nothing new.
    assert run(intake(source, batch_size=2)) == ids
    assert count(flow_db, actions.Request) == 5
    # The log says what each batch did in one line, not a line per request.
    lines = [m for m in logged(started) if "submitted" in m]
    assert lines == [
        "2 submitted: PR-0001, PR-0002",
        "2 submitted: PR-0003, PR-0004",
        "1 submitted: PR-0005",
        "2 already submitted, nothing new: PR-0001, PR-0002",
        "2 already submitted, nothing new: PR-0003, PR-0004",
        "1 already submitted, nothing new: PR-0005",
    ]


def test_intake_refuses_a_file_with_one_bad_request_before_writing_any(
    flow_db: Engine, tmp_path: Path
) -> None:
    from flows.intake import intake
    from models.errors import InputError

    source = write(
        tmp_path / "bad.yaml",
        f"""
        requests:
          - {{kind: refresh, requester: {RITA}, cost_centre: CC-ENG, needed_by: {TODAY + timedelta(days=30)}, lines: [{{sku: MON-27, quantity: 1}}]}}
          - {{kind: refresh, requester: {RITA}, cost_centre: CC-ENG, needed_by: {TODAY + timedelta(days=30)}, lines: [{{sku: NO-SUCH-SKU, quantity: 1}}]}}
        """,
    )
    with pytest.raises(
        InputError, match=r"bad.yaml:3: requests\[1\].lines\[0\].sku: unknown SKU NO-SUCH-SKU"
    ):
        run(intake(source, batch_size=1))
    assert count(flow_db, actions.Request) == 0


def test_intake_names_one_request_s_bad_field_and_another_s_unknown_sku_in_one_run(
    flow_db: Engine, tmp_path: Path
) -> None:
    from flows.intake import intake
    from models.errors import InputError

    source = write(
        tmp_path / "bad.yaml",
        f"""
        requests:
          - {{kind: refresh, requester: {RITA}, cost_centre: CC-ENG, needed_by: {TODAY + timedelta(days=30)}, lines: [{{sku: MON-27, quantity: 0}}]}}
          - {{kind: refresh, requester: {RITA}, cost_centre: CC-ENG, needed_by: {TODAY + timedelta(days=30)}, lines: [{{sku: NO-SUCH-SKU, quantity: 1}}]}}
        """,
    )
    with pytest.raises(InputError) as caught:
        run(intake(source, batch_size=1))
    assert [str(p).split(": ", 1)[1] for p in caught.value.problems] == [
        "requests[0].lines[0].quantity: must be at least 1 (got 0)",
        "requests[1].lines[0].sku: unknown SKU NO-SUCH-SKU",
    ]
    assert count(flow_db, actions.Request) == 0


def test_a_decision_from_the_prefect_ui_is_applied_advanced_and_published(flow_db: Engine) -> None:
    from flows.record_decision import record_decision

    ref = submit(flow_db)
    result = run(
        record_decision(
            DecisionCreate(request=ref, approver=IDA, decision="approve", comment="fits")
        )
    )
    assert result["changed"] is True and result["request_status"] == "in_review"
    # the same form again changes nothing
    again = run(record_decision(DecisionCreate(request=ref, approver=IDA, decision="approve")))
    assert again["changed"] is False
    decisions = [d for s in show(flow_db, ref)["stages"] for d in s["decisions"]]
    assert [(d["by"], d["outcome"]) for d in decisions] == [(IDA, "approve")]
    summary = artifact(f"request-{ref.lower()}")
    assert "in_review" in summary.data
    assert "approve" in artifact(f"timeline-{ref.lower()}").data
    assert artifact(f"costs-{ref.lower()}").type == "table"


def test_runs_are_named_by_the_request_as_procure_writes_it(flow_db: Engine) -> None:
    """A decision given for "pr-1" runs as decide-PR-0001 and advance-PR-0001, the names
    people search the Prefect UI for."""
    from prefect.client.orchestration import get_client

    from flows.record_decision import record_decision

    ref = submit(flow_db)
    short = f"pr-{int(ref[3:])}"
    run(record_decision(DecisionCreate(request=short, approver=IDA, decision="approve")))

    async def names() -> set[str]:
        async with get_client() as client:
            return {r.name for r in await client.read_flow_runs()}

    assert {f"decide-{ref}", f"advance-{ref}"} <= run(names())


def test_a_form_that_skipped_the_schema_check_is_still_refused_by_the_rules(
    flow_db: Engine,
) -> None:
    """The UI can send a form unchecked ("Validate parameters" off), and code can start the
    flow directly: decide() itself refuses a send-back without a comment, writing nothing."""
    from flows.record_decision import record_decision
    from models.errors import InputError

    ref = submit(flow_db)
    silent = DecisionCreate(request=ref, approver=IDA, decision="send_back", comment="  ")
    with pytest.raises(InputError, match="comment: is needed to send a request back"):
        run(record_decision(silent))
    assert [d for s in show(flow_db, ref)["stages"] for d in s["decisions"]] == []


def test_an_unknown_approver_in_the_form_is_named_as_the_forms_field(flow_db: Engine) -> None:
    from flows.record_decision import record_decision
    from models.errors import NotFound

    ref = submit(flow_db)
    stranger = DecisionCreate(request=ref, approver="nobody@example.com", decision="approve")
    with pytest.raises(NotFound, match=r"^approver: no person with email nobody@example.com"):
        run(record_decision(stranger))


def test_the_form_refuses_what_is_not_a_decision() -> None:
    from pydantic import ValidationError

    for bad in (
        {"request": "PR-x1", "approver": IDA, "decision": "approve"},
        {"request": "PR-0001", "approver": "not-an-email", "decision": "approve"},
        {"request": "PR-0001", "approver": IDA, "decision": "maybe"},
        {"request": "PR-0001", "approver": IDA, "decision": "approve", "surprise": 1},
    ):
        with pytest.raises(ValidationError):
            DecisionCreate.model_validate(bad)


def test_the_forms_schema_refuses_a_reject_or_send_back_without_a_comment() -> None:
    """What the Prefect server (and its UI, before it submits) checks a run's form against is
    the schema alone: it carries the rule too."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import ValidationError as SchemaError
    from prefect.utilities.schema_tools.validation import validate

    from flows.record_decision import record_decision

    schema = parameter_schema(record_decision).model_dump_for_openapi()

    def check(decision: dict[str, Any]) -> None:
        form = {"decision": {"request": "PR-0001", "approver": IDA, **decision}}
        validate(form, schema, raise_on_error=True, preprocess=True, ignore_required=False)

    for fine in (
        {"decision": "approve"},
        {"decision": "approve", "comment": ""},
        {"decision": "reject", "comment": "Not this quarter."},
        {"decision": "send_back", "comment": " Add a dock. "},
    ):
        check(fine)
    for bad in (
        {"decision": "reject"},
        {"decision": "send_back", "comment": ""},
        {"decision": "reject", "comment": " \n"},
    ):
        with pytest.raises(SchemaError, match="comment"):
            check(bad)


def test_advance_orders_an_approved_request_when_its_pipeline_orders_automatically(
    flow_db: Engine,
) -> None:
    from flows.advance import advance

    ref = submit(flow_db)
    approve_all(flow_db, ref)
    assert show(flow_db, ref)["status"] == "approved"
    assert run(advance(ref)) == "ordered"
    assert run(advance(ref)) == "ordered"  # again: nothing more
    assert count(flow_db, actions.Asset) == 1


def test_the_order_flow_orders_every_approved_request_once(flow_db: Engine) -> None:
    from flows.order import order

    refs = [submit(flow_db, justification=f"order {i}") for i in range(3)]
    for ref in refs[:2]:
        approve_all(flow_db, ref)
    placed = run(order(batch_size=1))
    assert sorted(p["request"] for p in placed) == refs[:2]
    assert run(order()) == []  # nothing left to order
    assert [show(flow_db, r)["status"] for r in refs] == ["ordered", "ordered", "in_review"]
    assert artifact("purchase-orders").type == "table"


def test_delivery_records_serials_and_hands_devices_out(flow_db: Engine, tmp_path: Path) -> None:
    from flows.delivery import delivery

    ref = submit(
        flow_db, lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "MON-27", "quantity": 1}]
    )
    approve_all(flow_db, ref)
    with transaction(flow_db) as session:
        actions.place_order(session, ref=ref, now=NOW)
    serials = write(tmp_path / "serials.csv", "serial,sku\nL-1,LAPTOP-STD-14\nM-1,MON-27\n")
    (result,) = run(delivery(serials, request=ref))
    assert result["status"] == "delivered" and result["rollout"]["status"] == "rolled_out"
    assert {(a["serial"], a["assigned_to"]) for a in show(flow_db, ref)["assets"]} == {
        ("L-1", NINA),
        ("M-1", NINA),
    }
    (again,) = run(delivery(serials, request=ref))  # the supplier's file twice: nothing twice
    assert again["delivered"] == 0


def test_returns_asks_devices_back_and_records_erasure_certificates(
    flow_db: Engine, tmp_path: Path
) -> None:
    from flows.returns import returns

    ref = submit(flow_db)
    approve_all(flow_db, ref)
    with transaction(flow_db) as session:
        actions.place_order(session, ref=ref, now=NOW)
    with transaction(flow_db) as session:
        actions.deliver(session, ref=ref, units=[actions.SerialIn("R-1")], now=NOW)
        actions.roll_out(session, ref=ref, now=NOW)
    asked = run(returns(serials=["R-1"], reason="leaver"))
    assert asked["asked"] == ["R-1"]
    certificates = write(
        tmp_path / "certs.csv",
        "serial,certificate,method,provider\nR-1,C-77,NIST 800-88 purge,DaaS Company\n",
    )
    done = run(returns(certificates_file=certificates))
    assert done["erased"] == ["R-1"]
    detail = show(flow_db, ref)
    assert detail["status"] == "closed" and detail["assets"][0]["erasure"]["certificate"] == "C-77"
    assert run(returns(serials=["R-1"], certificates_file=certificates)) == {
        "asked": [],
        "erased": [],
    }


def test_the_sla_watchdog_reminds_at_half_the_sla_then_escalates_once_each(
    flow_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.sla_watchdog import sla_watchdog

    # Submitted Wednesday 25 Nov 2026 10:00 Berlin; the joint review's SLA is 16 business hours
    # (08:00-17:00): half is 8 h -> Thursday 09:00 Berlin; the deadline is Thursday 17:00 Berlin
    # (the next working moment: Friday 08:00).
    ref = submit(flow_db)
    assert run(sla_watchdog()) == {"checked": 1, "reminders": 0, "escalations": 0}
    monkeypatch.setenv("PROCURE_NOW", "2026-11-26T08:30:00+01:00")  # Thursday 08:30: not yet
    assert run(sla_watchdog())["reminders"] == 0
    monkeypatch.setenv("PROCURE_NOW", "2026-11-26T09:00:00+01:00")
    started = datetime.now(UTC)
    assert run(sla_watchdog())["reminders"] == 1
    assert "1 stage checked: 1 reminder, 0 escalations" in logged(started)
    assert run(sla_watchdog())["reminders"] == 0  # never twice for one deadline
    # The artifact lists what was sent about which request and stage, and to whom.
    (reminded,) = table("sla-watchdog")
    assert reminded == {
        "request": ref,
        "stage": "Joint review (IT and purchasing)",
        "sent": "reminder",
        "due": "26 Nov 2026 at 17:00 CET",
        "told": f"{IDA}, {IVAN}, {PAUL}, {PETRA}",
        "escalated to": "",
    }
    monkeypatch.setenv("PROCURE_NOW", "2026-11-27T09:00:00+01:00")
    assert run(sla_watchdog())["escalations"] == 1
    (escalated,) = table("sla-watchdog")
    assert (escalated["request"], escalated["sent"], escalated["escalated to"]) == (
        ref,
        "escalation (the approvers told it is overdue)",
        "management",
    )
    assert artifact("sla-watchdog").description == (
        "0 reminders and 1 escalation of this run (1 stage with an SLA checked)"
    )
    assert run(sla_watchdog())["escalations"] == 0
    events = {n.event for n in _notifications(flow_db, ref)}
    assert {"reminder", "escalation"} <= events
    audited = [e.action for e in _audit(flow_db, ref) if e.entity == "stage"]
    assert audited.count("reminded") == 1 and audited.count("escalated") == 1


def test_the_lifecycle_watch_alerts_drafts_a_refresh_and_asks_a_daas_device_back(
    flow_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.lifecycle_watch import lifecycle_watch

    ref = submit(flow_db, lines=[{"sku": "LAPTOP-STD-14", "quantity": 1, "ownership": "daas"}])
    approve_all(flow_db, ref)
    with transaction(flow_db) as session:
        actions.place_order(session, ref=ref, now=NOW)
        actions.deliver(session, ref=ref, units=[actions.SerialIn("D-1")], now=NOW)
        actions.roll_out(session, ref=ref, now=NOW)
    assert show(flow_db, ref)["assets"][0]["contract_end"] == "2029-11-25"  # 36 months of DaaS
    assert run(lifecycle_watch())["alerts"] == 0  # years to go
    monkeypatch.setenv("PROCURE_NOW", "2029-09-20T09:00:00+02:00")  # 66 days left: the 90-day alert
    first = run(lifecycle_watch())
    assert (first["alerts"], first["drafts"], first["returns"]) == (2, [], [])
    monkeypatch.setenv("PROCURE_NOW", "2029-10-01T09:00:00+02:00")  # 55 days: alert and a draft
    second = run(lifecycle_watch())
    assert second["alerts"] == 2 and len(second["drafts"]) == 1
    assert artifact("lifecycle-watch").description == (
        "2 alerts, 1 refresh drafted, 0 devices asked back at the contract's end, 0 from leavers"
    )
    draft = show(flow_db, second["drafts"][0])
    assert (draft["status"], draft["kind"], draft["requester"]) == ("draft", "refresh", NINA)
    monkeypatch.setenv("PROCURE_NOW", "2029-10-30T09:00:00+01:00")  # 26 days: asked back
    third = run(lifecycle_watch())
    assert third["returns"] == ["D-1"] and third["drafts"] == []
    assert run(lifecycle_watch()) == {
        "checked": 0,
        "alerts": 0,
        "drafts": [],
        "returns": [],
        "leaver_returns": [],
        "left": [],
    }


def test_hr_sync_onboards_joiners_with_their_kit_and_takes_devices_back_from_leavers(
    flow_db: Engine, tmp_path: Path
) -> None:
    from flows.hr_sync import hr_sync

    ref = submit(flow_db)
    approve_all(flow_db, ref)
    with transaction(flow_db) as session:
        actions.place_order(session, ref=ref, now=NOW)
        actions.deliver(session, ref=ref, units=[actions.SerialIn("N-1")], now=NOW)
        actions.roll_out(session, ref=ref, now=NOW)
    export = write(
        tmp_path / "hr.csv",
        f"""
        email,name,department,role,cost_centre,manager,start_date,end_date
        zoe.joiner@example.com,Zoë Joiner,Engineering,developer,CC-ENG,{RITA},{TODAY + timedelta(days=30)},
        {NINA},Nina Newhire,Engineering,,,,,{TODAY + timedelta(days=10)}
        """,
    )
    started = datetime.now(UTC)
    result = run(hr_sync(export, batch_size=1))
    (joiner,) = result["joiners"]
    detail = show(flow_db, joiner)
    assert detail["kind"] == "onboarding" and detail["on_behalf_of"] == "zoe.joiner@example.com"
    assert sorted(ln["sku"] for ln in detail["lines"]) == [
        "DOCK-USB4",
        "HEADSET-BT",
        "LAPTOP-DEV-16",
        "MON-27",
    ]
    assert result["returns"] == ["N-1"]
    # Nina, whose laptop was asked back at once, is counted among the leavers, with it.
    (leaver,) = result["leavers"]
    assert (leaver["email"], leaver["asked_back"], leaver["announced"]) == (NINA, ["N-1"], False)
    # Counts agree with their nouns, in the log and in the artifact.
    lines = logged(started)
    assert "1 device asked back: its holder leaves" in lines
    last_day = TODAY + timedelta(days=10)
    said = f"{NINA}: last day {last_day}; 1 device asked back (N-1)"
    assert f"leaver {said}" in lines
    assert artifact("hr-sync").description == (
        "1 joiner, 0 start dates moved, 1 leaver (1 asked for their devices now), "
        "1 device asked back, 0 leaves withdrawn"
    )
    assert {"leaver": said} in table("hr-sync")
    again = run(hr_sync(export))
    assert again["joiners"] == [] and again["returns"] == [] and again["unchanged"] == 2


def test_a_leaver_named_once_months_ahead_is_asked_by_the_lifecycle_watch_when_due(
    flow_db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.hr_sync import hr_sync
    from flows.lifecycle_watch import lifecycle_watch

    ref = submit(flow_db)
    approve_all(flow_db, ref)
    with transaction(flow_db) as session:
        actions.place_order(session, ref=ref, now=NOW)
        actions.deliver(session, ref=ref, units=[actions.SerialIn("N-1")], now=NOW)
        actions.roll_out(session, ref=ref, now=NOW)
    export = write(
        tmp_path / "hr.csv",
        f"""
        email,name,department,role,cost_centre,manager,start_date,end_date
        {NINA},Nina Newhire,Engineering,,,,,2027-03-12
        """,
    )
    started = datetime.now(UTC)
    synced = run(hr_sync(export))
    assert [e["email"] for e in synced["leavers"]] == [NINA] and synced["returns"] == []
    said = f"{NINA}: last day 2027-03-12; IT told to plan, devices asked back on 2027-02-26"
    assert f"leaver {said}" in logged(started)
    assert {"leaver": said} in table("hr-sync")
    assert artifact("hr-sync").description == (
        "0 joiners, 0 start dates moved, 1 leaver (1 announced to IT), 0 devices asked back, "
        "0 leaves withdrawn"
    )
    assert count(flow_db, Notification, Notification.event == "leaver_announced") == 1
    assert run(lifecycle_watch())["leaver_returns"] == []
    # The next exports do not name her; ten working days before her last day the watch asks.
    monkeypatch.setenv("PROCURE_NOW", "2027-02-26T06:00:00+01:00")
    due = run(lifecycle_watch())
    assert (due["leaver_returns"], due["left"]) == (["N-1"], [])
    assert "asked back from a leaver" in str(artifact("lifecycle-watch").data)
    assert run(lifecycle_watch())["leaver_returns"] == []
    monkeypatch.setenv("PROCURE_NOW", "2027-03-13T06:00:00+01:00")
    assert run(lifecycle_watch())["left"] == [NINA]


def test_procure_run_hr_sync_prints_what_it_did_as_text_and_json_with_json(
    flow_db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`procure run hr-sync FILE` prints the summary and a line for each joiner and leaver (it
    printed the result's raw JSON); --json prints the JSON."""
    from procure.cli import main

    ref = submit(flow_db)
    approve_all(flow_db, ref)
    with transaction(flow_db) as session:
        actions.place_order(session, ref=ref, now=NOW)
        actions.deliver(session, ref=ref, units=[actions.SerialIn("N-1")], now=NOW)
        actions.roll_out(session, ref=ref, now=NOW)
    last_day = TODAY - timedelta(days=1)
    export = write(
        tmp_path / "hr.csv",
        f"""
        email,name,department,role,cost_centre,manager,start_date,end_date
        {NINA},Nina Newhire,Engineering,,,,,{last_day}
        {PETRA},Petra Purchasing,Purchasing,,,,,2027-06-30
        """,
    )
    url = flow_db.url.render_as_string(hide_password=False)
    capsys.readouterr()
    assert main(["--db", url, "run", "hr-sync", export]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-4:] == [
        "hr-sync: 0 joiners, 0 start dates moved, 2 leavers (1 asked for their devices now, "
        "1 deactivated, 1 with no device in use), 1 device asked back, 0 leaves withdrawn",
        f"  leaver {NINA}: last day {last_day}; 1 device asked back (N-1); deactivated (past "
        "their last day)",
        f"  leaver {PETRA}: last day 2027-06-30; recorded, no device in use to ask back",
        "  0 rows changed nothing",
    ], out
    assert "{" not in out
    # The same export again: nothing to do; --json prints the result as JSON.
    assert main(["--db", url, "run", "hr-sync", export, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["leavers"], again["returns"], again["unchanged"]) == ([], [], 2)


def test_hr_sync_deployed_without_an_export_names_the_setting(flow_db: Engine) -> None:
    from flows.hr_sync import hr_sync
    from models.errors import InputError

    # prefect.yaml fills `export` from PROCURE_HR_EXPORT: unset, the parameter is empty.
    with pytest.raises(InputError, match=r"export: no HR export file named: .*PROCURE_HR_EXPORT"):
        run(hr_sync(""))


def test_the_delivery_slip_check_and_the_digest_tell_each_team_once(
    flow_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.delivery_slip_check import delivery_slip_check
    from flows.digest import digest

    ref = submit(flow_db, needed_by=(TODAY + timedelta(days=20)).isoformat())  # order by: +5 days
    assert run(delivery_slip_check())["late_orders"] == []
    monkeypatch.setenv("PROCURE_NOW", "2026-12-02T09:00:00+01:00")  # past the order-by date
    assert run(delivery_slip_check())["late_orders"] == [ref]
    assert run(delivery_slip_check())["late_orders"] == []
    teams = run(digest())
    assert set(teams) == {"it", "purchasing", "hr", "finance", "management"}
    assert run(digest()) == []  # once a week
    digests = [
        n for n in _notifications(flow_db, None) if n.event == "digest" and n.audience == "team:it"
    ]
    assert digests[0].context["sections"]["waiting_for_you"]["count"] == 1
    # Its joint review was due Thursday 26 Nov, 17:00: late, escalated to management.
    (management,) = [n for n in _notifications(flow_db, None) if n.audience == "team:management"]
    (late,) = management.context["sections"]["escalated_late"]["items"]
    assert (late["id"], late["stage"], late["waiting_on"]) == (
        ref,
        "joint_review",
        ["it", "purchasing"],
    )


def _notifications(engine: Engine, ref: str | None) -> list[Notification]:
    with transaction(engine, readonly=True) as session:
        query = select(Notification)
        if ref is not None:
            query = query.where(Notification.request_id == int(ref[3:]))
        return list(session.exec(query).all())


def test_a_notice_with_several_bad_rows_names_each_by_line_delivering_nothing(
    flow_db: Engine, tmp_path: Path
) -> None:
    from flows.delivery import delivery
    from models.errors import InputError

    done, first, second = (submit(flow_db, justification=f"notice {i}") for i in range(3))
    for ref in (done, first, second):
        approve_all(flow_db, ref)
        with transaction(flow_db) as session:
            actions.place_order(session, ref=ref, now=NOW)
    with transaction(flow_db) as session:
        actions.deliver(session, ref=done, units=[actions.SerialIn("D-1")], now=NOW)
    # The first request's unit is fine; the delivered request gets one more; the second
    # request's serial is the delivered one's, and one unit too many follows it; the delivered
    # one's serial comes again at the end.
    notice = write(
        tmp_path / "asn.csv",
        f"""
        request,serial,sku
        {first},F-1,LAPTOP-STD-14
        {done},D-2,LAPTOP-STD-14
        {second},D-1,LAPTOP-STD-14
        {second},S-1,LAPTOP-STD-14
        {second},S-2,LAPTOP-STD-14
        {done},D-1,LAPTOP-STD-14
        """,
    )
    with pytest.raises(InputError) as refused:
        run(delivery(notice, batch_size=1))
    assert str(refused.value).splitlines() == [
        f"{notice}:3: request: {done} is delivered: cannot deliver; possible now: roll_out",
        f"{notice}:4: serial: serial D-1 is already recorded for another device",
        f"{notice}:6: sku: all 1 ordered LAPTOP-STD-14 units are already delivered or listed above",
        f"{notice}:7: serial: serial D-1 appears twice (first on line 4)",
    ]
    # Checked whole before any is delivered: the first request's good row is not recorded.
    assert [show(flow_db, r)["status"] for r in (done, first, second)] == [
        "delivered",
        "ordered",
        "ordered",
    ]
    # The delivered request's own serial again is the notice sent twice: not a problem.
    again = write(tmp_path / "again.csv", f"request,serial\n{done},D-1\n{first},F-1\n")
    assert [(r["id"], r["delivered"]) for r in run(delivery(again, hand_out=False))] == [
        (done, 0),
        (first, 1),
    ]


def _audit(engine: Engine, ref: str) -> list[AuditEvent]:
    with transaction(engine, readonly=True) as session:
        return list(
            session.exec(select(AuditEvent).where(AuditEvent.request_id == int(ref[3:]))).all()
        )


def test_one_shipping_notice_delivers_many_requests_in_batches(
    flow_db: Engine, tmp_path: Path
) -> None:
    from flows.delivery import delivery

    refs = [submit(flow_db, justification=f"shipment {i}") for i in range(3)]
    for ref in refs:
        approve_all(flow_db, ref)
        with transaction(flow_db) as session:
            actions.place_order(session, ref=ref, now=NOW)
    notice = write(
        tmp_path / "asn.csv",
        "request,serial\n" + "".join(f"{r},S-{i}\n" for i, r in enumerate(refs)),
    )
    results = run(delivery(notice, batch_size=2))
    assert [(r["id"], r["status"], r["rollout"]["status"]) for r in results] == [
        (r, "delivered", "rolled_out") for r in refs
    ]
    assert all(show(flow_db, r)["status"] == "rolled_out" for r in refs)


class RunLogs(logging.Handler):
    """The records of Prefect's task and flow run loggers, as they reach a handler."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> RunLogs:
        for name in ("prefect.task_runs", "prefect.flow_runs"):
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *_: Any) -> None:
        for name in ("prefect.task_runs", "prefect.flow_runs"):
            logging.getLogger(name).removeHandler(self)


def test_a_notice_naming_an_unknown_request_fails_at_once_by_file_and_line_delivering_nothing(
    flow_db: Engine, tmp_path: Path
) -> None:
    from flows.delivery import delivery
    from models.errors import InputError

    ref = submit(flow_db, justification="notice with a stranger")
    approve_all(flow_db, ref)
    with transaction(flow_db) as session:
        actions.place_order(session, ref=ref, now=NOW)
    notice = write(tmp_path / "asn.csv", f"request,serial\n{ref},S-OK-1\nPR-9999,S-NO-1\n")
    with RunLogs() as logs, pytest.raises(InputError) as refused:
        run(delivery(notice))
    assert str(refused.value) == f"{notice}:3: request: no request PR-9999"
    assert show(flow_db, ref)["status"] == "ordered"  # checked whole before any is delivered
    # A refusal is not retried (it would be refused again) and is logged without a traceback.
    messages = [r.getMessage() for r in logs.records]
    assert any("no request PR-9999" in m for m in messages), messages
    assert not any("Retry" in m for m in messages), messages
    assert all(r.exc_info is None for r in logs.records)


def test_the_dispatcher_flow_sends_the_requests_named_as_procure_writes_them(
    flow_db: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The flow's parameter takes requests as people know them (PR-0042), not internal ids;
    an unknown one fails the run by name, is not retried, and nothing is sent."""
    from flows.dispatch_notifications import dispatch_notifications
    from models.errors import NotFound
    from notifications.sink import MailSink

    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "home"))
    mine = submit(flow_db, justification="dispatch by reference: mine")
    other = submit(flow_db, justification="dispatch by reference: other")
    with MailSink() as sink:
        routes = write(
            tmp_path / "apprise.yml",
            f"""
            urls:
              - "{sink.url}":
                  - tag: people, it, purchasing, hr
            """,
        )
        monkeypatch.setenv("PROCURE_APPRISE_CONFIG", routes)
        with RunLogs() as logs, pytest.raises(NotFound, match=r"^no request PR-9999$"):
            run(dispatch_notifications(requests=[mine, "PR-9999"]))
        assert not sink.received
        messages = [r.getMessage() for r in logs.records]
        assert not any("Retry" in m for m in messages), messages
        report = run(dispatch_notifications(requests=[mine.lower()]))
    assert report["sent"] == len(_notifications(flow_db, mine)) == len(sink.received) > 0
    assert {n.status for n in _notifications(flow_db, mine)} == {"sent"}
    assert {n.status for n in _notifications(flow_db, other)} == {"pending"}


def test_the_dispatcher_flow_logs_every_outcome_as_notify_send_prints_them(
    flow_db: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ida approves before the dispatcher's minute: her, Ivan's and the IT team's requests for
    that decision are dropped. The run's line counts them, so its numbers add up."""
    from flows.dispatch_notifications import dispatch_notifications
    from notifications.sink import MailSink

    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "home"))
    ref = submit(flow_db)
    with transaction(flow_db) as session:
        actions.decide(session, ref=ref, actor_email=IDA, outcome="approve", now=NOW)
    with MailSink() as sink:
        routes = write(
            tmp_path / "apprise.yml",
            f"""
            urls:
              - "{sink.url}":
                  - tag: people, it, purchasing, hr
            """,
        )
        monkeypatch.setenv("PROCURE_APPRISE_CONFIG", routes)
        started = datetime.now(UTC)
        report = run(dispatch_notifications())
    assert report["dropped"] == 3 and report["failures"] == []
    (line,) = [m for m in logged(started) if " due: " in m]
    assert line == (
        f"{report['claimed']} due: {report['sent']} sent, 0 to retry, 0 given up, "
        f"3 dropped (out of date before they went) ({report['deliveries']} deliveries)"
    )
    assert report["claimed"] == report["sent"] + 3 == len(_notifications(flow_db, ref))


def test_a_refused_task_is_not_retried_but_a_failing_one_is() -> None:
    from prefect.states import Failed

    from models.errors import ConcurrentUpdate, InputError, RuleViolation
    from tasks.requests import retry_unless_refused

    def retried(error: BaseException) -> bool:
        return retry_unless_refused(None, None, Failed(data=error))

    assert not retried(InputError("bad.csv:2: serial: unknown"))
    assert not retried(RuleViolation("needs the role purchasing"))
    assert retried(ConcurrentUpdate("changed by someone else meanwhile"))
    assert retried(OSError("database is locked"))


@pytest.mark.parametrize("databases", ["postgres"], indirect=True)
def test_no_secret_reaches_prefect_logs_parameters_or_artifacts(
    flow_db: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from flows.advance import advance
    from flows.intake import intake
    from flows.sla_watchdog import sla_watchdog

    secret = "S3cr3t-Pa55w0rd-do-not-log"
    # PostgreSQL here trusts loopback: the password is accepted and ignored, as a real one is used.
    url = flow_db.url.set(password=secret).render_as_string(hide_password=False)
    monkeypatch.setenv("PROCURE_DATABASE_URL", url)
    source = write(
        tmp_path / "one.yaml",
        f"{{kind: refresh, requester: {RITA}, cost_centre: CC-ENG, needed_by: {TODAY + timedelta(days=40)}, lines: [{{sku: MON-27, quantity: 1}}]}}\n",
    )
    (ref,) = run(intake(source))
    run(advance(ref))
    run(sla_watchdog())

    async def everything() -> str:
        async with get_client() as client:
            logs = await client.read_logs()
            artifacts = await client.read_artifacts()
            runs = await client.read_flow_runs()
        return "\n".join(
            [
                *(log.message for log in logs),
                *(str(a.data) for a in artifacts),
                *(str(r.parameters) for r in runs),
            ]
        )

    seen = run(everything())
    assert ref in seen  # the runs, logs and artifacts are there...
    assert secret not in seen  # ...and the password is not


def test_the_dispatcher_flow_sends_through_the_routes_and_reports_failures(
    flow_db: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flows.dispatch_notifications import dispatch_notifications
    from notifications.sink import MailSink

    monkeypatch.setenv("PROCURE_HOME", str(tmp_path / "home"))
    assert "PROCURE_APPRISE_CONFIG" not in __import__("os").environ
    ref = submit(flow_db)
    skipped = run(dispatch_notifications())
    assert "PROCURE_APPRISE_CONFIG" in skipped["skipped"]  # nothing sent, nothing lost
    with MailSink() as sink:
        routes = write(
            tmp_path / "apprise.yml",
            f"""
            urls:
              - "{sink.url}":
                  - tag: people
              - "{sink.url}&to=it@example.com":
                  - tag: it, purchasing
            """,
        )
        monkeypatch.setenv("PROCURE_APPRISE_CONFIG", routes)
        report = run(dispatch_notifications())
    # Everyone but HR (no route yet): their row waits and the run says so.
    assert report["sent"] == 7 and report["retried"] == 1
    assert len(sink.received) == 7
    assert any("no route for team:hr" in f for f in report["failures"])
    table = artifact("notification-failures")
    assert "team:hr" in str(table.data)
    assert all(n.status == "sent" for n in _notifications(flow_db, ref) if n.audience != "team:hr")
