"""A request from submission to closure, and the pipeline's stages by amount (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from models import actions, audit, digest, pipeline, sla, views
from models.assets import Asset, Assignment, SerialIn
from models.audit import AuditEvent
from models.db import transaction
from models.errors import RuleViolation, TransitionNotAllowed
from models.org import Person, person_by_email
from models.outbox import Notification
from tests.factories import (
    BOB,
    FIONA,
    IDA,
    IVAN,
    MAX,
    NINA,
    NOW,
    PAUL,
    PETRA,
    RITA,
    TODAY,
    approve_all,
    audit_rows,
    decide,
    load_org_data,
    row_counts,
    show,
    stale_notices,
    status,
    submit,
)


def stage_statuses(detail: dict) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in detail["stages"]}


def test_submission_opens_the_joint_review_and_skips_stages_below_their_thresholds(
    engine: Engine,
) -> None:
    ref = submit(engine)
    detail = show(engine, ref)
    assert detail["status"] == "in_review"
    assert detail["total"] == "949.00"
    assert stage_statuses(detail) == {
        "joint_review": "open",
        "budget_owner": "waiting",
        "finance": "skipped",
        "management": "skipped",
    }
    (pending,) = detail["pending"]
    assert pending["stage"] == "joint_review"
    assert set(pending["approvers"]) == {
        "ida.it@example.com",
        "ivan.it@example.com",
        "paul.purchasing@example.com",
        "petra.purchasing@example.com",
    }


def test_joint_review_needs_it_and_purchasing_before_the_budget_owner(engine: Engine) -> None:
    ref = submit(engine)
    decide(engine, ref, IDA)
    assert stage_statuses(show(engine, ref))["joint_review"] == "open"
    (pending,) = show(engine, ref)["pending"]
    assert pending["roles"] == ["purchasing"]
    decide(engine, ref, PAUL)
    detail = show(engine, ref)
    assert stage_statuses(detail)["joint_review"] == "approved"
    assert [p["stage"] for p in detail["pending"]] == ["budget_owner"]
    assert detail["pending"][0]["approvers"] == [BOB]
    decide(engine, ref, BOB)
    assert show(engine, ref)["status"] == "approved"


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        # 10 x 949.00 = 9,490.00: below the finance threshold
        (10, {"finance": "skipped", "management": "skipped"}),
        # 11 x 949.00 = 10,439.00: finance from 10,000
        (11, {"finance": "waiting", "management": "skipped"}),
        # 53 x 949.00 = 50,297.00: management from 50,000
        (53, {"finance": "waiting", "management": "waiting"}),
    ],
)
def test_finance_and_management_join_by_amount(
    engine: Engine, quantity: int, expected: dict
) -> None:
    ref = submit(engine, kind="rollout", lines=[{"sku": "LAPTOP-STD-14", "quantity": quantity}])
    statuses = stage_statuses(show(engine, ref))
    assert {k: statuses[k] for k in expected} == expected


def test_a_large_request_passes_every_stage_in_order(engine: Engine) -> None:
    ref = submit(engine, kind="rollout", lines=[{"sku": "LAPTOP-STD-14", "quantity": 60}])
    detail = approve_all(engine, ref)
    assert detail["status"] == "approved"
    deciders = [(s["stage"], d["by"]) for s in detail["stages"] for d in s["decisions"]]
    assert [stage for stage, _ in deciders] == [
        "joint_review",
        "joint_review",
        "budget_owner",
        "finance",
        "management",
    ]
    assert ("finance", FIONA) in deciders and ("management", MAX) in deciders


def _notices(engine: Engine, ref: str, *events: str) -> list[tuple[str, str, dict[str, Any]]]:
    """A request's queued notifications of these events: (event, audience, context), in order."""
    with transaction(engine, readonly=True) as session:
        request = actions.get_request(session, ref)
        rows = session.exec(
            select(Notification)
            .where(Notification.request_id == request.id, col(Notification.event).in_(events))
            .order_by(col(Notification.id))
        ).all()
        return [(r.event, r.audience, dict(r.context)) for r in rows]


def test_a_part_delivered_before_any_date_is_agreed_announces_no_date(engine: Engine) -> None:
    """Units that arrive while no delivery date is agreed are recorded as they are: the request
    stays ordered with no date, nobody gets a delivery date or a calendar invitation for the
    units still to come, and the requester, IT and purchasing are told what arrived and that the
    rest has no date yet."""
    ref = submit(
        engine, justification="delivered in parts", lines=[{"sku": "MON-27", "quantity": 3}]
    )
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    with transaction(engine) as session:
        part = actions.deliver(
            session, ref=ref, units=[SerialIn("SN-U-1", "MON-27")], actor_email=IVAN, now=NOW
        )
    assert (part.done, part.remaining, part.status) == (1, 2, "ordered")
    detail = show(engine, ref)
    assert (detail["status"], detail["delivery_on"]) == ("ordered", None)
    assert [a["status"] for a in detail["assets"]] == ["delivered", "ordered", "ordered"]
    assert not audit_rows(engine, ref, "schedule_delivery")  # no date made up
    told = _notices(engine, ref, "delivery_scheduled", "delivered")
    context = {"arrived": 1, "units": 3, "remaining": 2, "on": TODAY.isoformat()}
    assert told == [
        ("delivered", f"person:{RITA}", context),
        ("delivered", "team:it", context),
        ("delivered", "team:purchasing", context),
    ]
    # A second part: told again, counting all so far; the first notice, not sent yet, is
    # superseded by it (news made stale before it went).
    with transaction(engine) as session:
        actions.deliver(session, ref=ref, units=[SerialIn("SN-U-2", "MON-27")], now=NOW)
    second = _notices(engine, ref, "delivered")[3:]
    assert [c["arrived"] for _, _, c in second] == [2, 2, 2]
    ids = _ids(engine, ref, "delivered")
    assert set(ids[:3]) <= stale_notices(engine) and not set(ids[3:]) & stale_notices(engine)
    # Purchasing agrees a date for the last unit: scheduled as always, then delivered.
    with transaction(engine) as session:
        actions.schedule_delivery(
            session, ref=ref, on=TODAY + timedelta(days=5), actor_email=PAUL, now=NOW
        )
    assert status(engine, ref) == "delivery_scheduled"
    with transaction(engine) as session:
        rest = actions.deliver(session, ref=ref, units=[SerialIn("SN-U-3", "MON-27")], now=NOW)
    assert (rest.remaining, rest.status) == (0, "delivered")
    (done,) = audit_rows(engine, ref, "deliver")
    assert (done.from_status, done.to_status, done.details["unplanned"]) == (
        "delivery_scheduled",
        "delivered",
        False,
    )


def test_a_delivery_without_any_agreed_date_is_delivered_by_whoever_records_it(
    engine: Engine,
) -> None:
    ref = submit(
        engine, justification="delivered unplanned", lines=[{"sku": "MON-27", "quantity": 2}]
    )
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    with transaction(engine) as session:
        done = actions.deliver(
            session,
            ref=ref,
            units=[SerialIn("SN-W-1", "MON-27"), SerialIn("SN-W-2", "MON-27")],
            actor_email=IVAN,
            now=NOW,
        )
    assert (done.remaining, done.status) == (0, "delivered")
    assert show(engine, ref)["delivery_on"] is None
    assert not audit_rows(engine, ref, "schedule_delivery")
    (delivered,) = audit_rows(engine, ref, "deliver")
    # IT recorded the delivery, so it is in IT's name: not "system"; and it says it came unplanned.
    assert (delivered.actor, delivered.from_status, delivered.to_status) == (
        IVAN,
        "ordered",
        "delivered",
    )
    assert delivered.details["unplanned"] is True
    # Told once that it arrived; no delivery date, no calendar invitation.
    told = _notices(engine, ref, "delivery_scheduled", "delivered")
    assert told == [("delivered", f"person:{RITA}", {}), ("delivered", "team:it", {})]


def _ids(engine: Engine, ref: str, event: str) -> list[int]:
    """A request's notification ids of one event, oldest first."""
    with transaction(engine, readonly=True) as session:
        request = actions.get_request(session, ref)
        return [
            i
            for i in session.exec(
                select(Notification.id)
                .where(Notification.request_id == request.id, Notification.event == event)
                .order_by(col(Notification.id))
            ).all()
            if i is not None
        ]


def test_a_request_walks_from_order_to_closure(engine: Engine) -> None:
    ref = submit(
        engine, lines=[{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "MON-27", "quantity": 2}]
    )
    approve_all(engine, ref)
    with transaction(engine) as session:
        order = actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    assert order["status"] == "ordered"
    (po,) = order["purchase_orders"]
    assert po["supplier"] == "NORDIC-IT" and po["total"] == Decimal("1527.00")
    with transaction(engine) as session:
        actions.schedule_delivery(
            session, ref=ref, on=TODAY + timedelta(days=10), actor_email=PAUL, now=NOW
        )
    with transaction(engine) as session:
        first = actions.deliver(
            session, ref=ref, units=[SerialIn("SN-1", "LAPTOP-STD-14")], now=NOW
        )
    assert (first.done, first.remaining, first.status) == (1, 2, "delivery_scheduled")
    with transaction(engine) as session:
        rest = actions.deliver(
            session,
            ref=ref,
            units=[SerialIn("SN-2", "MON-27"), SerialIn("SN-3", "MON-27")],
            now=NOW,
        )
    assert (rest.remaining, rest.status) == (0, "delivered")
    with transaction(engine) as session:
        actions.roll_out(
            session,
            ref=ref,
            assignments=[
                Assignment("SN-1", NINA),
                Assignment("SN-2", NINA),
                Assignment("SN-3", RITA),
            ],
            actor_email=IDA,
            now=NOW,
        )
    detail = show(engine, ref)
    assert detail["status"] == "rolled_out"
    assert {a["serial"]: a["assigned_to"] for a in detail["assets"]} == {
        "SN-1": NINA,
        "SN-2": NINA,
        "SN-3": RITA,
    }
    laptop = next(a for a in detail["assets"] if a["serial"] == "SN-1")
    assert laptop["warranty_end"] == "2029-11-25"  # delivered 2026-11-25 + 36 months
    for serial in ("SN-1", "SN-2", "SN-3"):
        with transaction(engine) as session:
            actions.request_return(session, serial=serial, reason="Leaver", now=NOW)
            actions.receive_return(session, serial=serial, now=NOW)
            actions.erase(
                session,
                serial=serial,
                certificate=f"C-{serial}",
                method="NIST 800-88 purge",
                provider="DaaS Company",
                now=NOW,
            )
        assert show(engine, ref)["status"] == ("closed" if serial == "SN-3" else "rolled_out")
    detail = show(engine, ref)
    assert all(
        a["status"] == "erased" and a["erasure"]["certificate"] == f"C-{a['serial']}"
        for a in detail["assets"]
    )
    actions_seen = [e["action"] for e in detail["timeline"] if e["entity"] == "request"]
    assert actions_seen == [
        "submit",
        "start_review",
        "terms_confirmed",  # purchasing confirmed the contract terms in the joint review
        "approve",
        "order",
        "schedule_delivery",
        "deliver",
        "roll_out",
        "close",
    ]


def test_a_rollout_tells_each_person_once_listing_their_devices(engine: Engine) -> None:
    """100 laptops and 100 docks handed to the requester queued 200 device_assigned messages
    to her; Nina, given a laptop and a dock, got two."""
    ref = submit(
        engine,
        kind="rollout",
        on_behalf_of=None,
        justification="The sales team's desks.",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 100}, {"sku": "DOCK-USB4", "quantity": 100}],
    )
    approve_all(engine, ref)
    units = [SerialIn(f"L-{n:03}", "LAPTOP-STD-14") for n in range(100)]
    units += [SerialIn(f"D-{n:03}", "DOCK-USB4") for n in range(100)]
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
        actions.deliver(session, ref=ref, units=units, actor_email=IDA, now=NOW)
        actions.roll_out(session, ref=ref, actor_email=IDA, now=NOW)  # all to the requester
    with transaction(engine, readonly=True) as session:
        rows = session.exec(
            select(Notification).where(
                col(Notification.event).in_(["device_assigned", "rolled_out"])
            )
        ).all()
    assert sorted((r.event, r.audience) for r in rows) == [
        ("device_assigned", f"person:{RITA}"),
        ("rolled_out", f"person:{RITA}"),
    ]
    (assigned,) = [r for r in rows if r.event == "device_assigned"]
    assert assigned.context["count"] == 200 and assigned.asset_id is None
    devices = assigned.context["devices"]
    assert [d["serial"] for d in devices] == [u.serial for u in units]
    assert devices[0] == {"serial": "L-000", "sku": "LAPTOP-STD-14", "name": 'Standard laptop 14"'}
    assert devices[-1] == {"serial": "D-099", "sku": "DOCK-USB4", "name": "USB4 docking station"}
    # Rolled out: the same command again is refused and queues nothing.
    before = row_counts(engine)
    with pytest.raises(TransitionNotAllowed), transaction(engine) as session:
        actions.roll_out(session, ref=ref, actor_email=IDA, now=NOW)
    assert row_counts(engine) == before


def test_a_rollout_to_named_people_tells_each_once_and_a_second_batch_again(
    engine: Engine,
) -> None:
    ref = submit(
        engine,
        kind="rollout",
        on_behalf_of=None,
        justification="Desks for the platform team.",
        lines=[{"sku": "LAPTOP-STD-14", "quantity": 3}, {"sku": "DOCK-USB4", "quantity": 2}],
    )
    approve_all(engine, ref)
    kit = [("L-1", "LAPTOP-STD-14"), ("D-1", "DOCK-USB4"), ("L-2", "LAPTOP-STD-14")]
    kit += [("L-3", "LAPTOP-STD-14"), ("D-2", "DOCK-USB4")]
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
        actions.deliver(session, ref=ref, units=[SerialIn(s, sku) for s, sku in kit], now=NOW)
        actions.roll_out(
            session,
            ref=ref,
            assignments=[Assignment("L-1", NINA), Assignment("D-1", NINA), Assignment("L-2", BOB)],
            actor_email=IDA,
            now=NOW,
        )
    # Later, Nina's second desk: a second message for her, of that batch's devices.
    with transaction(engine) as session:
        actions.roll_out(
            session,
            ref=ref,
            assignments=[Assignment("L-3", NINA), Assignment("D-2", NINA)],
            actor_email=IDA,
            now=NOW + timedelta(days=1),
        )
    told = notices(engine, "device_assigned")
    assert [(a, [d["serial"] for d in c["devices"]]) for a, c in told] == [
        (f"person:{NINA}", ["L-1", "D-1"]),
        (f"person:{BOB}", ["L-2"]),
        (f"person:{NINA}", ["L-3", "D-2"]),
    ]
    with transaction(engine, readonly=True) as session:
        rows = session.exec(
            select(Notification).where(Notification.event == "device_assigned")
        ).all()
        bob_laptop = session.exec(select(Asset).where(Asset.serial == "L-2")).one()
    # One device: the notice is that device's (its asset view); several: the list only.
    assert [r.asset_id for r in rows] == [None, bob_laptop.id, None]


def test_a_returned_dock_or_headset_needs_no_erasure_a_laptop_does(engine: Engine) -> None:
    """The catalog says the dock and the headset hold no data: back in IT's hands they are done
    (or go to the recycler at once); the laptop still needs its certificate, and the request
    closes with it."""
    kit = [("SN-L", "LAPTOP-STD-14"), ("SN-D", "DOCK-USB4"), ("SN-H", "HEADSET-BT")]
    ref = submit(
        engine,
        justification="A workplace kit, returned in parts.",
        lines=[{"sku": sku, "quantity": 1} for _, sku in kit],
    )
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
        actions.deliver(
            session, ref=ref, units=[SerialIn(serial, sku) for serial, sku in kit], now=NOW
        )
        actions.roll_out(
            session,
            ref=ref,
            assignments=[Assignment(serial, NINA) for serial, _ in kit],
            actor_email=IDA,
            now=NOW,
        )
    for serial, _ in kit:
        with transaction(engine) as session:
            actions.receive_return(session, serial=serial, actor_email=IDA, now=NOW)
    assert show(engine, ref)["status"] == "rolled_out"  # the laptop is not erased yet
    # IT's digest asks for the laptop's erasure only.
    with transaction(engine, readonly=True) as session:
        _, spec = pipeline.active(session)
        sections = digest.team_digest(session, "it", spec=spec, now=NOW)["sections"]
    waiting = sections["awaiting_erasure"]
    assert (waiting["count"], [a["serial"] for a in waiting["items"]]) == (1, ["SN-L"])

    # The headset goes to the recycler straight away; the laptop cannot, not yet erased.
    with transaction(engine) as session:
        actions.dispose(session, serial="SN-H", to="recycler", actor_email=IDA, now=NOW)
    before = row_counts(engine)
    refused = r"SN-L \(LAPTOP-STD-14\) holds data: record its certified erasure first \(procure asset erase SN-L"
    with pytest.raises(RuleViolation, match=refused), transaction(engine) as session:
        actions.dispose(session, serial="SN-L", to="recycler", actor_email=IDA, now=NOW)
    assert row_counts(engine) == before
    with transaction(engine) as session:
        actions.erase(
            session,
            serial="SN-L",
            certificate="C-SN-L",
            method="NIST 800-88 purge",
            provider="Nordic IT Distribution",
            actor_email=IDA,
            now=NOW,
        )
    detail = show(engine, ref)
    assert detail["status"] == "closed"
    assert {a["serial"]: a["status"] for a in detail["assets"]} == {
        "SN-L": "erased",
        "SN-D": "returned",  # in IT's stock, nothing to erase
        "SN-H": "disposed",
    }
    with transaction(engine, readonly=True) as session:
        result = audit.verify(session)
    assert result.ok, result.problem


def test_the_last_device_back_closes_the_request_when_it_holds_no_data(engine: Engine) -> None:
    ref = submit(
        engine,
        justification="Two docks, returned after the project.",
        lines=[{"sku": "DOCK-USB4", "quantity": 2}],
    )
    approve_all(engine, ref)
    docks = ["SN-D1", "SN-D2"]
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
        actions.deliver(session, ref=ref, units=[SerialIn(s, "DOCK-USB4") for s in docks], now=NOW)
        actions.roll_out(session, ref=ref, actor_email=IDA, now=NOW)
    statuses = []
    for serial in docks:
        with transaction(engine) as session:
            actions.receive_return(session, serial=serial, actor_email=IDA, now=NOW)
        statuses.append(show(engine, ref)["status"])
    assert statuses == ["rolled_out", "closed"]
    (closed,) = [e for e in show(engine, ref)["timeline"] if e["action"] == "close"]
    assert closed["details"]["reason"] == "every device is returned, and erased if it holds data"


def test_every_transition_queues_its_notifications_in_the_same_transaction(engine: Engine) -> None:
    ref = submit(engine)
    with transaction(engine, readonly=True) as session:
        rows = session.exec(select(Notification.event, Notification.audience)).all()
        request_ids = set(session.exec(select(Notification.request_id)).all())
    assert request_ids == {int(ref.removeprefix("PR-"))}
    assert ("request_submitted", f"person:{RITA}") in rows
    assert ("approval_needed", f"person:{IDA}") in rows
    assert ("review_needed", "team:purchasing") in rows
    assert ("informed", "team:hr") in rows  # HR is told about onboarding requests
    assert ("approval_needed", f"person:{BOB}") not in rows  # the budget stage is not open yet


@pytest.mark.parametrize(
    ("outcome", "event"), [("reject", "rejected"), ("send_back", "changes_requested")]
)
def test_the_requester_hears_of_a_rejection_or_a_send_back_once(
    engine: Engine, outcome: str, event: str
) -> None:
    ref = submit(engine)
    decide(engine, ref, IDA, "approve")
    decide(engine, ref, PAUL, outcome)
    with transaction(engine, readonly=True) as session:
        told = session.exec(
            select(Notification.event)
            .where(Notification.audience == f"person:{RITA}")
            .order_by(col(Notification.id))
        ).all()
    # IT's approval, then one message for purchasing's decision, with its own wording.
    assert told == ["request_submitted", "decision_made", event]


# ------------------------------------------------------------------ HR joiners


def test_a_joiners_moved_start_date_is_flagged_on_their_request_not_filed_twice(
    engine: Engine,
) -> None:
    from models import hr
    from models.audit import AuditEvent

    joiner = {
        "email": "jan.joiner@example.com",
        "name": "Jan Joiner",
        "department": "Engineering",
        "role": "developer",
        "cost_centre": "CC-ENG",
        "manager": RITA,
    }

    def sync(start: timedelta) -> hr.SyncResult:
        row = hr.HrRow.model_validate({**joiner, "start_date": TODAY + start})
        with transaction(engine) as session:
            return hr.apply(session, rows=[row], now=NOW, spec=pipeline.active(session)[1])

    (ref,) = sync(timedelta(days=40)).joiners
    moved = sync(timedelta(days=47))  # HR moves the start by a week: one kit, not two
    assert (moved.joiners, moved.moved, moved.unchanged) == ([], [ref], 0)
    # request show says so beside the plan that still counts from the old date, and its
    # timeline gives both dates.
    import contextlib
    import io
    import re

    from procure.text import print_detail

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        print_detail(show(engine, ref))
    old, new = TODAY + timedelta(days=40), TODAY + timedelta(days=47)
    assert f"  start moved   HR moved the start to {new}: needed-by and order-by still" in (
        printed.getvalue()
    )
    assert re.search(rf"start_moved\s+{old} → {new}\s+hr sync", printed.getvalue())
    again = sync(timedelta(days=47))  # the same export again: told once
    assert (again.joiners, again.moved, again.unchanged) == ([], [], 1)
    assert sync(timedelta(days=40)).moved == [ref]  # and back: that is news again
    detail = show(engine, ref)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        print_detail(detail)
    assert "start moved" not in printed.getvalue()  # back on the date the plan counts from
    assert detail["needed_by"] == str(TODAY + timedelta(days=40))
    with transaction(engine, readonly=True) as session:
        moves = session.exec(
            select(AuditEvent.details).where(AuditEvent.action == "start_moved")
        ).all()
        told = session.exec(
            select(Notification.audience).where(Notification.event == "start_moved")
        ).all()
    assert [(m["from"], m["to"]) for m in moves] == [
        (str(TODAY + timedelta(days=40)), str(TODAY + timedelta(days=47))),
        (str(TODAY + timedelta(days=47)), str(TODAY + timedelta(days=40))),
    ]
    assert sorted(told) == sorted(2 * [f"person:{RITA}", "team:it", "team:purchasing"])
    # Cancelled by the manager: the next sync files the onboarding for the new date.
    with transaction(engine) as session:
        actions.cancel(session, ref=ref, actor_email=RITA, reason="Start moved", now=NOW)
    (new,) = sync(timedelta(days=47)).joiners
    assert new != ref and show(engine, new)["needed_by"] == str(TODAY + timedelta(days=47))


def test_a_joiner_whose_email_holds_an_underscore_is_not_taken_for_another(
    engine: Engine,
) -> None:
    from models import hr

    def sync(email: str) -> hr.SyncResult:
        row = hr.HrRow.model_validate(
            {
                "email": email,
                "name": "A Joiner",
                "role": "office",
                "cost_centre": "CC-ENG",
                "manager": RITA,
                "start_date": TODAY + timedelta(days=40),
            }
        )
        with transaction(engine) as session:
            return hr.apply(session, rows=[row], now=NOW, spec=pipeline.active(session)[1])

    (first,) = sync("annxlee@example.com").joiners
    # In a LIKE pattern _ matches any character: ann_lee's would find annxlee's request.
    (second,) = sync("ann_lee@example.com").joiners
    assert first != second


# ------------------------------------------------------------------ HR leavers

# Nina's last day is Friday 12 March 2027; ten working days (the default lead) before it is
# Friday 26 February: the day the lifecycle watch asks her devices back.
LAST_DAY = date(2027, 3, 12)
RETURN_DAY = date(2027, 2, 26)


def at(day: date) -> datetime:
    """08:00 UTC (09:00 in Berlin) on a day: the lifecycle watch's run."""
    return datetime.combine(day, time(8, 0), UTC)


def hand_out(engine: Engine, serial: str, on: datetime, why: str) -> None:
    """A laptop for Nina, ordered now, delivered and handed to her on `on`."""
    ref = submit(engine, justification=why)
    approve_all(engine, ref)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, now=NOW)
    with transaction(engine) as session:
        actions.deliver(session, ref=ref, units=[SerialIn(serial)], now=on)
        actions.roll_out(session, ref=ref, now=on)


def hr_leaves(engine: Engine, last_day: date, now: datetime = NOW) -> Any:
    """The HR sync of one export row: Nina leaves on `last_day`."""
    from models import hr

    row = hr.HrRow.model_validate({"email": NINA, "name": "Nina Newhire", "end_date": last_day})
    with transaction(engine) as session:
        return hr.apply(session, rows=[row], now=now, spec=pipeline.active(session)[1])


def leaver(
    engine: Engine,
    last_day: date,
    *,
    announced: bool = False,
    asked_back: list[str] | None = None,
    left: bool = False,
) -> dict[str, Any]:
    """The sync's entry for Nina leaving on `last_day`: what it did for her."""
    from models import hr

    with transaction(engine, readonly=True) as session:
        with_lead = hr.return_day(last_day, pipeline.active(session)[1])
    return {
        "email": NINA,
        "leaves_on": last_day.isoformat(),
        "return_on": with_lead.isoformat(),
        "announced": announced,
        "asked_back": asked_back or [],
        "left": left,
    }


def test_an_hr_row_without_a_department_keeps_the_one_on_record(engine: Engine) -> None:
    """A delta export's leaver row often names only the person and the last day: it does not
    blank their department; a row that names one changes it."""
    from models import hr

    def department() -> str:
        with transaction(engine, readonly=True) as session:
            return session.exec(select(Person.department).where(Person.email == NINA)).one()

    assert department() == "Engineering"
    hr_leaves(engine, date(2027, 3, 12))
    assert department() == "Engineering"
    row = hr.HrRow.model_validate(
        {"email": NINA, "name": "Nina Newhire", "department": "Platform", "end_date": "2027-03-12"}
    )
    with transaction(engine) as session:
        hr.apply(session, rows=[row], now=NOW, spec=pipeline.active(session)[1])
    assert department() == "Platform"


def lifecycle_watch_of_leavers(engine: Engine, now: datetime) -> Any:
    """What the lifecycle-watch flow's leaver tasks do at `now`."""
    from models import hr

    with transaction(engine) as session:
        spec = pipeline.active(session)[1]
        ids = hr.leavers_to_watch(session, spec=spec, now=now)
        return hr.leaver_watch(session, person_ids=ids, spec=spec, now=now)


def statuses(engine: Engine) -> dict[str, str]:
    with transaction(engine, readonly=True) as session:
        return {a.serial or "": a.status for a in session.exec(select(Asset)).all()}


def nina(engine: Engine) -> tuple[date | None, bool]:
    with transaction(engine, readonly=True) as session:
        person = session.exec(select(Person).where(Person.email == NINA)).one()
        return person.leaves_on, person.active


def notices(engine: Engine, event: str) -> list[tuple[str, dict[str, Any]]]:
    with transaction(engine, readonly=True) as session:
        rows = session.exec(
            select(Notification).where(Notification.event == event).order_by(col(Notification.id))
        ).all()
        return [(n.audience, n.context) for n in rows]


def test_a_leaver_months_ahead_keeps_their_devices_until_shortly_before_their_last_day(
    engine: Engine,
) -> None:
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    first = hr_leaves(engine, LAST_DAY)
    # Recorded, not asked: IT is told once, to plan; Nina keeps working with her laptop.
    assert first.leavers == [leaver(engine, LAST_DAY, announced=True)]
    assert (first.returns, first.deactivated) == ([], [])
    assert nina(engine) == (LAST_DAY, True)
    assert statuses(engine) == {"N-1": "deployed"}
    assert notices(engine, "return_requested") == []
    ((audience, told),) = notices(engine, "leaver_announced")
    assert audience == "team:it"
    assert (told["leaves_on"], told["return_on"], told["previous"]) == (
        "2027-03-12",
        "2027-02-26",
        None,
    )
    assert [(d["serial"], d["status"]) for d in told["devices"]] == [("N-1", "deployed")]
    again = hr_leaves(engine, LAST_DAY)  # a full export names her again: nothing new
    assert (again.leavers, again.returns, again.unchanged) == ([], [], 1)
    assert len(notices(engine, "leaver_announced")) == 1

    # A laptop handed to her after the sync; the export (a delta) does not name her again.
    hand_out(engine, "N-2", NOW + timedelta(days=7), "A second laptop for Nina's lab.")
    before = lifecycle_watch_of_leavers(engine, at(RETURN_DAY - timedelta(days=1)))
    assert (before.returns, before.deactivated) == ([], [])
    assert statuses(engine) == {"N-1": "deployed", "N-2": "deployed"}

    due = lifecycle_watch_of_leavers(engine, at(RETURN_DAY))
    assert (due.returns, due.deactivated) == (["N-1", "N-2"], [])
    assert statuses(engine) == {"N-1": "return_requested", "N-2": "return_requested"}
    asked = notices(engine, "return_requested")
    assert sorted(audience for audience, _ in asked) == sorted(2 * ["team:it", f"person:{NINA}"])
    assert {c["reason"] for _, c in asked} == {"Nina Newhire leaves on 2027-03-12"}
    twice = lifecycle_watch_of_leavers(engine, at(RETURN_DAY))  # the same day again: once
    assert (twice.returns, twice.deactivated) == ([], [])
    assert len(notices(engine, "return_requested")) == 4

    # One more handed out in her last weeks is asked back at the next run.
    hand_out(engine, "N-3", at(date(2027, 3, 2)), "A loan laptop while Nina's is away.")
    late = lifecycle_watch_of_leavers(engine, at(date(2027, 3, 3)))
    assert (late.returns, late.deactivated) == (["N-3"], [])
    assert nina(engine) == (LAST_DAY, True)  # she works until her last day
    gone = lifecycle_watch_of_leavers(engine, at(LAST_DAY + timedelta(days=1)))
    assert (gone.returns, gone.deactivated) == ([], [NINA])
    assert nina(engine) == (LAST_DAY, False)
    assert lifecycle_watch_of_leavers(engine, at(LAST_DAY + timedelta(days=2))).deactivated == []


@pytest.mark.parametrize(
    ("last_day", "deactivated"),
    [
        pytest.param(TODAY + timedelta(days=14), [], id="within-the-lead"),
        pytest.param(TODAY, [], id="today"),
        pytest.param(TODAY - timedelta(days=3), [NINA], id="past"),
    ],
)
def test_a_leaver_whose_last_day_is_near_or_past_is_asked_at_once(
    engine: Engine, last_day: date, deactivated: list[str]
) -> None:
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    result = hr_leaves(engine, last_day)
    # Counted among the leavers, with what the sync did: her laptop asked back (and, past her
    # last day, her deactivation).
    assert result.leavers == [leaver(engine, last_day, asked_back=["N-1"], left=bool(deactivated))]
    assert (result.returns, result.deactivated) == (["N-1"], deactivated)
    assert statuses(engine) == {"N-1": "return_requested"}
    assert notices(engine, "leaver_announced") == []  # IT hears of it through the return
    assert hr_leaves(engine, last_day).returns == []


def test_an_older_export_applied_again_counts_the_leaver_whose_device_it_asks_back(
    engine: Engine,
) -> None:
    """The export that asked Nina's laptop back, applied again after IT took the return back:
    her last day is the one on record, yet the laptop is asked back again; the sync counts her
    among the leavers with it (it read leavers: [] while it asked a device back)."""
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    last_day = TODAY + timedelta(days=7)
    first = hr_leaves(engine, last_day)
    assert first.leavers == [leaver(engine, last_day, asked_back=["N-1"])]
    with transaction(engine) as session:
        actions.cancel_return(session, serial="N-1", actor_email=IVAN, now=NOW)
    again = hr_leaves(engine, last_day, now=NOW + timedelta(hours=1))
    assert again.leavers == [leaver(engine, last_day, asked_back=["N-1"])]
    assert (again.returns, again.unchanged) == (["N-1"], 0)
    # Nothing to do: not counted as a leaver, counted unchanged.
    assert hr_leaves(engine, last_day, now=NOW + timedelta(hours=2)).leavers == []


def test_a_leavers_moved_last_day_moves_the_return_and_is_told_to_it(engine: Engine) -> None:
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    hr_leaves(engine, LAST_DAY)
    later = date(2027, 4, 30)  # HR extends her contract: asked back on Fri 16 April
    moved = hr_leaves(engine, later, now=NOW + timedelta(days=1))
    assert moved.leavers == [leaver(engine, later, announced=True)] and moved.returns == []
    assert nina(engine) == (later, True)
    told = [c for _, c in notices(engine, "leaver_announced")]
    assert [(c["leaves_on"], c["previous"], c["return_on"]) for c in told] == [
        ("2027-03-12", None, "2027-02-26"),
        ("2027-04-30", "2027-03-12", "2027-04-16"),
    ]
    assert lifecycle_watch_of_leavers(engine, at(RETURN_DAY)).returns == []  # the old day
    assert lifecycle_watch_of_leavers(engine, at(date(2027, 4, 15))).returns == []
    assert lifecycle_watch_of_leavers(engine, at(date(2027, 4, 16))).returns == ["N-1"]


def test_a_leavers_last_day_moved_near_asks_at_once(engine: Engine) -> None:
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    hr_leaves(engine, LAST_DAY)
    sooner = hr_leaves(engine, TODAY + timedelta(days=7))  # she leaves in a week instead
    soon = TODAY + timedelta(days=7)
    assert sooner.leavers == [leaver(engine, soon, asked_back=["N-1"])] and sooner.returns == [
        "N-1"
    ]
    assert len(notices(engine, "leaver_announced")) == 1


def test_the_lead_before_a_leavers_last_day_comes_from_the_pipeline_file(engine: Engine) -> None:
    text = pipeline.DEFAULT_PIPELINE.read_text(encoding="utf-8").replace("version: 1", "version: 2")
    text += "\noffboarding:\n  return_lead_workdays: 0\n"
    with transaction(engine) as session:
        pipeline.install(session, text=text, source="custom.yaml", actor="tests", at=NOW)
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    assert hr_leaves(engine, LAST_DAY).returns == []
    assert lifecycle_watch_of_leavers(engine, at(LAST_DAY - timedelta(days=1))).returns == []
    assert lifecycle_watch_of_leavers(engine, at(LAST_DAY)).returns == ["N-1"]


def test_a_leaver_hr_lists_again_with_a_later_start_is_no_longer_leaving(engine: Engine) -> None:
    from models import hr

    hr_leaves(engine, TODAY - timedelta(days=30))
    assert nina(engine) == (TODAY - timedelta(days=30), False)
    # Rehired from next summer (beyond the joiners' horizon: no onboarding request yet).
    row = hr.HrRow.model_validate(
        {"email": NINA, "name": "Nina Newhire", "start_date": TODAY + timedelta(days=200)}
    )
    with transaction(engine) as session:
        hr.apply(session, rows=[row], now=NOW, spec=pipeline.active(session)[1])
    assert nina(engine) == (None, False)
    # An organisation file silent about `active` does not bring her back before her start.
    load_org_data(engine, {"people": [{"email": NINA, "name": "Nina Newhire"}]})
    assert nina(engine) == (None, False)
    # Made active again by the organisation file: the watch leaves her so.
    load_org_data(engine, {"people": [{"email": NINA, "name": "Nina Newhire", "active": True}]})
    assert lifecycle_watch_of_leavers(engine, NOW + timedelta(days=1)).deactivated == []
    assert nina(engine) == (None, True)


def test_a_former_colleague_who_joins_again_is_onboarded_and_active_again(engine: Engine) -> None:
    """A rehire's joiner row made the sync file an onboarding request on behalf of a person who
    was no longer active: refused, and with it the whole batch."""
    from models import hr

    hr_leaves(engine, TODAY - timedelta(days=30))
    assert nina(engine) == (TODAY - timedelta(days=30), False)
    start = TODAY + timedelta(days=20)
    row = hr.HrRow.model_validate(
        {
            "email": NINA,
            "name": "Nina Newhire",
            "department": "Engineering",
            "role": "developer",
            "cost_centre": "CC-ENG",
            "manager": RITA,
            "start_date": start,
        }
    )
    with transaction(engine) as session:
        result = hr.apply(session, rows=[row], now=NOW, spec=pipeline.active(session)[1])
    (ref,) = result.joiners
    assert nina(engine) == (None, True)
    detail = show(engine, ref)
    assert (detail["kind"], detail["on_behalf_of"], detail["needed_by"]) == (
        "onboarding",
        NINA,
        str(start),
    )
    with transaction(engine, readonly=True) as session:
        changes = session.exec(
            select(AuditEvent.details)
            .where(
                AuditEvent.entity == "person",
                AuditEvent.entity_id == NINA,
                AuditEvent.action == "update",
            )
            .order_by(col(AuditEvent.seq))
        ).all()
    # The audit trail says who made her active again: the HR sync, with her return.
    assert changes[-1]["changed"]["active"] == [False, True]


def test_a_joiner_whose_manager_left_is_refused_by_line_before_anything_is_written(
    engine: Engine, tmp_path: Path
) -> None:
    """The sync filed the joiner's request in the name of a manager who had left: refused
    halfway through its batches, after the batches before it were written."""
    from models import hr
    from models.errors import InputError

    load_org_data(
        engine,
        {"people": [{"email": RITA, "name": "Rita Requester", "active": False}]},
    )
    start = TODAY + timedelta(days=20)
    path = tmp_path / "hr.csv"
    path.write_text(
        "email,name,department,role,cost_centre,manager,start_date,end_date\n"
        f"ann.early@example.com,Ann Early,Engineering,developer,CC-ENG,{BOB},{start},\n"
        f"jan.joiner@example.com,Jan Joiner,Engineering,developer,CC-ENG,{RITA},{start},\n",
        encoding="utf-8",
    )
    before = row_counts(engine)
    with transaction(engine) as session, pytest.raises(InputError) as refused:
        hr.read_checked(session, path, now=NOW)
    assert str(refused.value) == f"{path}:3: manager: {RITA} is no longer active (left)"
    assert row_counts(engine) == before
    # Back with the file (a manager rejoining in the same export), the row is fine.
    path.write_text(
        path.read_text(encoding="utf-8")
        + f"{RITA},Rita Requester,Engineering,developer,CC-ENG,{BOB},{start},\n",
        encoding="utf-8",
    )
    with transaction(engine, readonly=True) as session:
        assert len(hr.read_checked(session, path, now=NOW).rows) == 3


# ------------------------------------------------------------------ HR withdraws a leave


def hr_withdraws(engine: Engine, now: datetime = NOW, **fields: Any) -> Any:
    """The HR sync of one export row: Nina's leave is withdrawn (status `withdrawn`)."""
    from models import hr

    data = {
        "email": NINA,
        "name": "Nina Newhire",
        "department": "Engineering",
        "status": "withdrawn",
        **fields,
    }
    row = hr.HrRow.model_validate(data)
    with transaction(engine) as session:
        return hr.apply(session, rows=[row], now=now, spec=pipeline.active(session)[1])


def told_it(engine: Engine, event: str, audience: str = "team:it") -> str:
    """The plain text of IT's (or `audience`'s) latest notice of `event`, rendered as it is
    sent."""
    from notifications.context import ContextBuilder, Links
    from notifications.render import Renderer

    with transaction(engine, readonly=True) as session:
        row = session.exec(
            select(Notification)
            .where(Notification.event == event, Notification.audience == audience)
            .order_by(col(Notification.id).desc())
        ).first()
        assert row is not None
        context = ContextBuilder(session, Links("https://procure.example.com", b"k" * 32, NOW))
        message = Renderer().render(event, context.build(row))
    return f"{message.subject}\n{message.text}"


def withdrawals(engine: Engine) -> list[dict[str, Any]]:
    with transaction(engine, readonly=True) as session:
        return list(
            session.exec(
                select(AuditEvent.details)
                .where(AuditEvent.entity_id == NINA, AuditEvent.action == "leave_withdrawn")
                .order_by(col(AuditEvent.seq))
            ).all()
        )


def test_a_leave_hr_withdraws_before_the_return_day_asks_nothing_back(engine: Engine) -> None:
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    hr_leaves(engine, LAST_DAY)
    result = hr_withdraws(engine, now=NOW + timedelta(days=7))
    assert (result.withdrawn, result.leavers, result.returns, result.unchanged) == (
        [NINA],
        [],
        [],
        0,
    )
    assert nina(engine) == (None, True)
    assert withdrawals(engine) == [
        {
            "end_date": "2027-03-12",
            "return_on": "2027-02-26",
            "asked_back": [],
            "reactivated": False,
        }
    ]
    ((audience, told),) = notices(engine, "leaver_cancelled")
    assert audience == "team:it"
    assert (told["leaves_on"], told["return_on"], told["returned_due"]) == (
        "2027-03-12",
        "2027-02-26",
        False,
    )
    assert [(d["serial"], d["status"]) for d in told["devices"]] == [("N-1", "deployed")]
    text = told_it(engine, "leaver_cancelled")
    assert text.startswith("Nina Newhire no longer leaves on Fri 12 Mar 2027\n")
    assert "procure does not ask for the device in use listed below (it would have on" in text
    assert "already asked back" not in text
    # The same export again: applied once.
    again = hr_withdraws(engine, now=NOW + timedelta(days=8))
    assert (again.withdrawn, again.unchanged) == ([], 1)
    assert len(notices(engine, "leaver_cancelled")) == 1
    # Her return day and her last day pass: she keeps her laptop and stays active.
    assert lifecycle_watch_of_leavers(engine, at(RETURN_DAY)).returns == []
    assert lifecycle_watch_of_leavers(engine, at(LAST_DAY + timedelta(days=1))).deactivated == []
    assert statuses(engine) == {"N-1": "deployed"}
    assert nina(engine) == (None, True)
    assert notices(engine, "return_requested") == []


def test_a_leave_withdrawn_after_the_return_day_leaves_the_devices_asked_back_and_says_so(
    engine: Engine,
) -> None:
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    hand_out(engine, "N-2", NOW, "Nina's lab laptop.")
    hr_leaves(engine, LAST_DAY)
    assert lifecycle_watch_of_leavers(engine, at(RETURN_DAY)).returns == ["N-1", "N-2"]
    hand_out(engine, "N-3", at(date(2027, 3, 1)), "A loan laptop for Nina.")
    result = hr_withdraws(engine, now=at(date(2027, 3, 1)), end_date=LAST_DAY)
    assert (result.withdrawn, result.returns) == ([NINA], [])
    # Asked back stays asked back (no move back to in use); the laptop in use is not asked.
    assert statuses(engine) == {
        "N-1": "return_requested",
        "N-2": "return_requested",
        "N-3": "deployed",
    }
    assert lifecycle_watch_of_leavers(engine, at(date(2027, 3, 2))).returns == []
    assert statuses(engine)["N-3"] == "deployed"
    assert withdrawals(engine)[-1]["asked_back"] == ["N-1", "N-2"]
    ((_, told),) = notices(engine, "leaver_cancelled")
    assert told["returned_due"] is True
    text = told_it(engine, "leaver_cancelled")
    assert text.startswith("Nina Newhire no longer leaves on Fri 12 Mar 2027: 2 devices already")
    assert "procure does not ask for the device in use listed below: stop planning" in text
    assert (
        "N-1, N-2 were already asked back (their return day was Fri 26 Feb 2027), and stay so "
        "until IT decides: if Nina Newhire keeps them, take the return back (procure asset "
        "cancel-return SERIAL --as YOUR-EMAIL; they are told)."
    ) in text

    # Nina keeps her laptop: IT takes its return back; she and IT are told. The lab laptop
    # still comes back.
    with transaction(engine) as session:
        actions.cancel_return(
            session, serial="N-1", actor_email=IDA, reason="Nina stays", now=at(date(2027, 3, 2))
        )
    assert statuses(engine) == {
        "N-1": "deployed",
        "N-2": "return_requested",
        "N-3": "deployed",
    }
    assert [(a, c["serial"], c["reason"]) for a, c in notices(engine, "return_cancelled")] == [
        ("team:it", "N-1", "Nina stays"),
        (f"person:{NINA}", "N-1", "Nina stays"),
    ]
    with transaction(engine, readonly=True) as session:
        (event,) = session.exec(
            select(AuditEvent).where(
                AuditEvent.entity_id == "N-1", AuditEvent.action == "cancel_return"
            )
        ).all()
    assert (event.actor, event.from_status, event.to_status) == (
        IDA,
        "return_requested",
        "deployed",
    )
    # Only a device asked back can be kept that way; nothing is written otherwise.
    before = row_counts(engine)
    not_asked = "asset N-3 is deployed: cannot cancel_return"
    with pytest.raises(TransitionNotAllowed, match=not_asked), transaction(engine) as session:
        actions.cancel_return(session, serial="N-3", actor_email=IDA, now=NOW)
    not_it = "cannot take return requests back: needs the role"
    with pytest.raises(RuleViolation, match=not_it), transaction(engine) as session:
        actions.cancel_return(session, serial="N-2", actor_email=NINA, now=NOW)
    assert row_counts(engine) == before


def test_a_leave_withdrawn_after_the_last_day_makes_the_leaver_active_again(
    engine: Engine,
) -> None:
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    hr_leaves(engine, LAST_DAY)
    lifecycle_watch_of_leavers(engine, at(RETURN_DAY))
    assert lifecycle_watch_of_leavers(engine, at(LAST_DAY + timedelta(days=1))).deactivated == [
        NINA
    ]
    later = at(LAST_DAY + timedelta(days=3))
    assert hr_withdraws(engine, now=later).withdrawn == [NINA]
    assert nina(engine) == (None, True)
    assert withdrawals(engine)[-1]["reactivated"] is True
    assert "Nina Newhire had been deactivated after that day and is active again." in told_it(
        engine, "leaver_cancelled"
    )
    assert lifecycle_watch_of_leavers(engine, at(LAST_DAY + timedelta(days=4))).deactivated == []


def test_a_withdrawn_row_for_someone_not_leaving_or_unknown_changes_nothing(
    engine: Engine,
) -> None:
    before = row_counts(engine)
    assert hr_withdraws(engine).unchanged == 1  # Nina: no last day recorded
    from models import hr

    row = hr.HrRow.model_validate(
        {"email": "who.ever@example.com", "name": "Who Ever", "status": "Withdrawn"}
    )
    with transaction(engine) as session:
        result = hr.apply(session, rows=[row], now=NOW, spec=pipeline.active(session)[1])
    assert (result.withdrawn, result.unchanged) == ([], 1)
    assert row_counts(engine) == before  # nobody created, nothing audited


def test_a_leave_withdrawn_then_given_again_is_announced_and_withdrawn_again(
    engine: Engine,
) -> None:
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    hr_leaves(engine, LAST_DAY)
    hr_withdraws(engine)
    hr_leaves(engine, LAST_DAY, now=NOW + timedelta(days=1))
    assert nina(engine) == (LAST_DAY, True)
    # The same day given again after the withdrawal is news to IT, not the first notice again.
    assert len(notices(engine, "leaver_announced")) == 2
    assert hr_withdraws(engine, now=NOW + timedelta(days=2)).withdrawn == [NINA]
    assert len(notices(engine, "leaver_cancelled")) == 2  # each withdrawal is news
    assert len(withdrawals(engine)) == 2


def test_an_hr_export_withdrawing_a_leave_is_checked_whole(engine: Engine, tmp_path: Path) -> None:
    from models import hr
    from models.errors import InputError

    hr_leaves(engine, LAST_DAY)
    path = tmp_path / "hr.csv"
    header = "email,name,department,role,cost_centre,manager,start_date,end_date,status\n"
    path.write_text(
        header
        + f"{NINA},Nina Newhire,,,,,,2027-03-19,withdrawn\n"
        + f"{RITA},Rita Requester,,,,,2027-01-04,,withdrawn\n"
        + f"{BOB},Bob Budget,,,,,,2027-05-31,resigned\n",
        encoding="utf-8",
    )
    before = row_counts(engine)
    with transaction(engine) as session, pytest.raises(InputError) as refused:
        hr.read_checked(session, path, now=NOW)
    assert str(refused.value).splitlines() == [
        f"{path}:2: end_date: withdraws the last day 2027-03-19, but the one HR gave last "
        f"for {NINA} is 2027-03-12: give that day, or leave end_date empty",
        f"{path}:3: start_date: a withdrawn row cancels a leave and gives no start_date "
        "(a joiner who no longer comes: cancel their onboarding request)",
        f"{path}:4: status: unknown status 'resigned': leave it empty, or write 'withdrawn' "
        "to cancel the person's leave",
    ]
    assert row_counts(engine) == before
    # The day HR gave, or none: accepted, and the export without the column reads as before.
    path.write_text(
        header
        + f"{NINA},Nina Newhire,,,,,,2027-03-12,Withdrawn\n"
        + f"{BOB},Bob Budget,,,,,,,withdrawn\n",
        encoding="utf-8",
    )
    with transaction(engine, readonly=True) as session:
        rows = hr.read_checked(session, path, now=NOW).rows
    assert [r.withdrawn for r in rows] == [True, True]


def test_a_last_day_moved_after_its_devices_were_asked_back_says_they_were(
    engine: Engine,
) -> None:
    """IT's notice said the devices 'will be asked' back on the new return day when they had
    been already, on the old one."""
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    hr_leaves(engine, LAST_DAY)
    assert "procure asks them on Fri 26 Feb 2027 to return the device in use listed below" in (
        told_it(engine, "leaver_announced")
    )
    assert lifecycle_watch_of_leavers(engine, at(RETURN_DAY)).returns == ["N-1"]
    hand_out(engine, "N-2", at(date(2027, 3, 1)), "A loan laptop for Nina.")
    # HR extends her contract after the return day: told again, with what already happened.
    moved = hr_leaves(engine, date(2027, 4, 30), now=at(date(2027, 3, 1)))
    assert moved.leavers == [leaver(engine, date(2027, 4, 30), announced=True)]
    assert moved.returns == []
    text = told_it(engine, "leaver_announced")
    assert "Nina Newhire leaves on Fri 30 Apr 2027 (until now: Fri 12 Mar 2027)." in text
    assert (
        "procure asks them on Fri 16 Apr 2027 to return the device in use listed below, and any "
        "handed to them until then. N-1 was already asked back and stays so: collect it now, or "
        "agree with Nina Newhire to keep it until then."
    ) in text
    assert "N-1 · LAPTOP-STD-14 · return requested · Nina Newhire" in text


# ------------------------------------------------------------------ org loads and leavers


def org_load(engine: Engine, path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`procure org load FILE` on the test's database: its output."""
    from procure.cli import main

    capsys.readouterr()
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--db", url, "org", "load", str(path), *args]) == 0
    return capsys.readouterr().out


def test_an_older_org_file_keeps_a_leaver_inactive_until_it_says_active_true(
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading an organisation file made everyone it named active unless it said otherwise:
    last month's file revived a leaver the lifecycle watch had deactivated, with her approvals."""
    monkeypatch.setenv("PROCURE_NOW", NOW.isoformat())
    hand_out(engine, "N-1", NOW, "Nina's laptop.")
    hr_leaves(engine, LAST_DAY)
    lifecycle_watch_of_leavers(engine, at(RETURN_DAY))
    gone = lifecycle_watch_of_leavers(engine, at(LAST_DAY + timedelta(days=1)))
    assert gone.deactivated == [NINA]
    # Rita was made inactive by an organisation file, not by leaving: a file silent about it
    # makes her active again, as before.
    load_org_data(engine, {"people": [{"email": RITA, "name": "Rita Requester", "active": False}]})

    older = tmp_path / "org-october.yaml"
    older.write_text(
        "people:\n"
        f"  - {{email: {NINA}, name: Nina Newhire, department: Engineering}}\n"
        f"  - {{email: {RITA}, name: Rita Requester, department: Engineering}}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PROCURE_NOW", at(LAST_DAY + timedelta(days=2)).isoformat())
    out = org_load(engine, older, capsys)
    assert "(1 who left kept inactive: `active: true` brings one back)" in out
    assert nina(engine) == (LAST_DAY, False)
    with transaction(engine, readonly=True) as session:
        rita = session.exec(select(Person).where(Person.email == RITA)).one()
        assert rita.active
    # The same file as a CSV with an empty `active` cell, and as JSON with null: the same.
    for name, text in (
        ("org.csv", f"email,name,department,active\n{NINA},Nina Newhire,Engineering,\n"),
        (
            "org.json",
            f'{{"people": [{{"email": "{NINA}", "name": "Nina Newhire", "active": null}}]}}',
        ),
    ):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert '"kept_inactive": 1' in org_load(engine, tmp_path / name, capsys, "--json")
        assert nina(engine) == (LAST_DAY, False)

    # Said explicitly: back, audited as such, and her past last day cleared (the watch would
    # deactivate her again the next morning).
    back = tmp_path / "org-back.csv"
    back.write_text(
        f"email,name,department,active\n{NINA},Nina Newhire,Engineering,yes\n", encoding="utf-8"
    )
    assert "person: 0 new, 1 changed, 0 unchanged; " in org_load(engine, back, capsys)
    assert nina(engine) == (None, True)
    with transaction(engine, readonly=True) as session:
        (why,) = session.exec(
            select(AuditEvent.details).where(
                AuditEvent.entity_id == NINA, AuditEvent.action == "reactivated"
            )
        ).all()
        assert why["changed"] == {"active": [False, True], "leaves_on": ["2027-03-12", None]}
    assert lifecycle_watch_of_leavers(engine, at(LAST_DAY + timedelta(days=3))).deactivated == []
    # Active again, she stays so with the older file.
    assert "kept inactive" not in org_load(engine, older, capsys)
    assert nina(engine) == (None, True)


def test_a_team_s_digest_waits_only_for_the_parts_it_still_has_to_decide(engine: Engine) -> None:
    """Purchasing approved its part of one request and IT its part of another: each team's
    digest lists only the request whose part it still decides, as its members' inboxes do (which
    list the contract terms they may confirm besides)."""
    it_open, purchasing_open, untouched = (
        submit(engine, idempotency_key=f"digest-{i}") for i in range(3)
    )
    decide(engine, it_open, PETRA)  # purchasing's part of the joint review
    decide(engine, purchasing_open, IDA)  # IT's part
    with transaction(engine) as session:
        _, spec = pipeline.active(session)
        assert set(digest.send_digests(session, spec=spec, now=NOW)) >= {"it", "purchasing"}
    with transaction(engine, readonly=True) as session:
        waiting = {
            n.audience: [i["id"] for i in n.context["sections"]["waiting_for_you"]["items"]]
            for n in session.exec(select(Notification).where(Notification.event == "digest"))
        }
        inbox = {
            who: [i["id"] for i in views.inbox(session, person, now=NOW) if i["what"] == "decision"]
            for who in (IVAN, PAUL)
            if (person := person_by_email(session, who)) is not None
        }
    assert waiting["team:it"] == [it_open, untouched] == inbox[IVAN]
    assert waiting["team:purchasing"] == [purchasing_open, untouched] == inbox[PAUL]
    assert waiting["team:finance"] == []


def digests_of(engine: Engine, week: str) -> dict[str, dict[str, Any]]:
    """Each team's digest of a week: its sections, by audience."""
    with transaction(engine, readonly=True) as session:
        return {
            n.audience: n.context["sections"]
            for n in session.exec(select(Notification).where(Notification.event == "digest"))
            if n.context["week"] == week
        }


def send_digests(engine: Engine, at: datetime) -> list[str]:
    with transaction(engine) as session:
        _, spec = pipeline.active(session)
        return digest.send_digests(session, spec=spec, now=at)


def test_a_team_s_digest_lists_the_late_stages_escalated_to_it(engine: Engine) -> None:
    """Past their SLA the SLA watchdog escalates a joint review to management and a budget
    owner's approval to finance (the pipeline's escalate_to). Each team's weekly digest lists
    what was escalated to it and is still open: the request, the stage, how late, and who still
    has to decide; once a week, and no longer once decided."""
    berlin = ZoneInfo("Europe/Berlin")
    tuesday = datetime(2026, 12, 1, 9, 0, tzinfo=berlin)  # both stages due Wed 2 Dec, 16:00
    review = submit(engine, tuesday, justification="Digest: waits for its joint review.")
    owner = submit(engine, tuesday, justification="Digest: waits for its budget owner.")
    decide(engine, owner, IDA, now=tuesday)
    decide(engine, owner, PAUL, now=tuesday)
    escalated = datetime(2026, 12, 8, 16, 0, tzinfo=berlin)
    with transaction(engine) as session:
        swept = sla.sweep(
            session, stage_ids=sla.watched_stages(session, now=escalated), now=escalated
        )
    assert swept.escalations == 2
    monday = datetime(2026, 12, 14, 7, 0, tzinfo=berlin)  # 7 working days of 9 hours since
    assert set(send_digests(engine, monday)) == {"it", "purchasing", "hr", "finance", "management"}
    sections = digests_of(engine, "2026-W51")
    late = {team: s["escalated_late"] for team, s in sections.items() if "escalated_late" in s}
    # Management and finance are the default pipeline's escalation roles; IT, purchasing and HR
    # have nothing escalated to them and no such section.
    assert set(late) == {"team:management", "team:finance"}
    assert late["team:management"] == {
        "count": 1,
        "items": [
            {
                "id": review,
                "stage": "joint_review",
                "name": "Joint review (IT and purchasing)",
                "due_at": "2026-12-02T15:00:00+00:00",
                "late_hours": 64,
                "late_workdays": 7,
                "waiting_on": ["it", "purchasing"],
                "approvers": sorted([IDA, IVAN, PAUL, PETRA]),
            }
        ],
    }
    ((finance,),) = [late["team:finance"]["items"]]
    assert (finance["id"], finance["stage"], finance["late_workdays"]) == (owner, "budget_owner", 7)
    assert (finance["waiting_on"], finance["approvers"]) == (["budget_owner"], [BOB])
    # The joint review still waits for IT and purchasing, overdue: their own section says so.
    assert sections["team:it"]["waiting_for_you"]["overdue"] == 1
    text = told_it(engine, "digest", "team:management")
    assert (
        "Your week 2026-W51 (Management): 0 decisions waiting, 1 late stage escalated to you"
        in text
    )
    assert (
        "Past their deadline, escalated to you: 1\n"
        f"  {review} · Joint review (IT and purchasing) · due Wed 2 Dec 2026, 16:00 CET, "
        "7 working days late · waiting for IT, purchasing: Ida Infrastructure, Ivan Install, "
        "Paul Purchasing, Petra Price\n"
    ) in text
    assert f"  {owner} · Budget owner approval · " in told_it(engine, "digest", "team:finance")
    assert "escalated to you" not in told_it(engine, "digest", "team:it")
    # Once a week: the same week again queues nothing.
    before = row_counts(engine)
    assert send_digests(engine, monday + timedelta(days=4)) == []
    assert row_counts(engine) == before
    # Decided, a stage is no longer late for anyone: next week's digests have nothing escalated.
    decide(engine, review, IDA, now=monday + timedelta(days=1))
    decide(engine, review, PAUL, now=monday + timedelta(days=1))
    decide(engine, review, BOB, now=monday + timedelta(days=1))  # its next stage, in time
    decide(engine, owner, BOB, now=monday + timedelta(days=1))
    send_digests(engine, monday + timedelta(days=7))
    after = digests_of(engine, "2026-W52")
    assert after["team:management"]["escalated_late"] == {"count": 0, "items": []}
    assert after["team:finance"]["escalated_late"] == {"count": 0, "items": []}
