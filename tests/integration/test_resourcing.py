"""Re-sourcing an approved request that is not ordered yet (an agreement's volume ran out).

The approvals were given for an amount, on settled contract terms: a change that keeps the
total and the terms leaves the request approved and orderable; a higher total (or terms left
open) sends it back to review for the stages the change concerns, whose approvers are asked
again. An ordered request's sourcing no longer changes.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from models import actions
from models.db import transaction
from models.errors import InputError, RuleViolation, TransitionNotAllowed
from models.outbox import Notification
from notifications.context import ContextBuilder, Links
from notifications.render import Renderer
from tests.factories import (
    BOB,
    HEADSETS,
    IDA,
    NOW,
    PAUL,
    RITA,
    TODAY,
    audit_rows,
    decide,
    load_catalog_path,
    row_counts,
    show,
    stage_rounds,
    submit,
)

LATER = NOW + timedelta(days=2)

# Ten headsets under FA-HEADSET at 99.00; from tomorrow FA-HEADSET-B sells them at 95.00.
TWO_AGREEMENTS = (
    HEADSETS
    + f"""\
  - code: FA-HEADSET-B
    name: Headsets from next week
    supplier: NORDIC-IT
    valid_from: {TODAY + timedelta(days=1)}
    valid_to: 2027-12-31
    terms: {{sla: Next business day, warranty_months: 24, returns: 30 days, erasure: Not applicable}}
    prices:
      - sku: HEADSET-BT
        tiers: [{{from: 1, unit_price: 95.00}}]
"""
)


@pytest.fixture
def stuck(engine: Engine, tmp_path: Path) -> tuple[Engine, str, str]:
    """Two approved requests of 6 headsets each under FA-HEADSET (10 units): the first is
    ordered, the second cannot be (4 units left)."""
    path = tmp_path / "headsets.yaml"
    path.write_text(textwrap.dedent(TWO_AGREEMENTS), encoding="utf-8")
    load_catalog_path(engine, path)
    refs = []
    for team in ("A", "B"):
        ref = submit(
            engine,
            kind="rollout",
            justification=f"6 headsets for team {team}",
            lines=[{"sku": "HEADSET-BT", "quantity": 6}],
        )
        for who in (IDA, PAUL, BOB):
            decide(engine, ref, who)
        assert show(engine, ref)["status"] == "approved"
        refs.append(ref)
    first, second = refs
    order(engine, first)
    return engine, first, second


def order(engine: Engine, ref: str) -> dict[str, Any]:
    with transaction(engine) as session:
        return actions.place_order(session, ref=ref, actor_email=PAUL, now=LATER)


def source(engine: Engine, ref: str, who: str = PAUL, **how: Any) -> None:
    with transaction(engine) as session:
        actions.set_sourcing(session, ref=ref, line_no=1, actor_email=who, now=LATER, **how)


def notices(engine: Engine, ref: str, event: str) -> list[Notification]:
    with transaction(engine, readonly=True) as session:
        return list(
            session.exec(
                select(Notification)
                .where(Notification.request_id == int(ref[3:]), Notification.event == event)
                .order_by(col(Notification.id))
            ).all()
        )


def rendered(engine: Engine, row: Notification) -> str:
    """The message's subject and text, as the dispatcher would send them."""
    with Session(engine) as session:
        links = Links("https://procure.example.com", b"k" * 32, LATER)
        message = Renderer().render(row.event, ContextBuilder(session, links).build(row))
    assert message.warnings == ()
    return f"{message.subject}\n{message.text}"


def test_the_order_refusal_names_the_re_sourcing_that_works(
    stuck: tuple[Engine, str, str],
) -> None:
    engine, _, second = stuck
    before = row_counts(engine)
    with pytest.raises(RuleViolation) as caught:
        order(engine, second)
    assert row_counts(engine) == before
    message = str(caught.value)
    assert "FA-HEADSET has 4 units left, the order calls off 6" in message
    assert f"procure sourcing {second} --line 1 --as PURCHASER" in message
    for option in ("--agreement CODE", "--individual", "--quote ID", "--offer lease|daas"):
        assert option in message


def test_a_cheaper_agreement_keeps_the_approval_and_the_request_orders(
    stuck: tuple[Engine, str, str],
) -> None:
    engine, _, second = stuck
    source(engine, second, agreement="FA-HEADSET-B")  # 6 x 95.00 = 570.00, was 594.00

    detail = show(engine, second)
    assert (detail["status"], detail["total"], detail["round"]) == ("approved", "570.00", 1)
    assert detail["terms"]["missing"] == []  # FA-HEADSET-B settles them too
    assert stage_rounds(engine, second) == {
        "joint_review": ("approved", 1),
        "budget_owner": ("approved", 1),
        "finance": ("skipped", 1),
        "management": ("skipped", 1),
    }
    (change,) = audit_rows(engine, second, "sourcing")
    assert (change.actor, change.details["to"]["agreement"], change.details["total"]) == (
        PAUL,
        "FA-HEADSET-B",
        "570.00",
    )
    assert audit_rows(engine, second, "reopen") == []
    # The requester and the approvers are told; the purchaser who made the change is not.
    told = notices(engine, second, "re_sourced")
    assert sorted(n.audience for n in told) == [f"person:{BOB}", f"person:{IDA}", f"person:{RITA}"]
    assert {(n.context["status"], n.context["total_before"], n.context["total"]) for n in told} == {
        ("approved", "594.00", "570.00")
    }
    text = rendered(engine, told[0])
    assert "still approved: line 1 re-sourced" in text
    assert "under FA-HEADSET at €99.00 a unit before, under FA-HEADSET-B at €95.00 now" in text
    assert "stays approved and purchasing orders it" in text

    result = order(engine, second)
    assert result["status"] == "ordered"
    (po,) = result["purchase_orders"]
    assert [(ln["agreement"], ln["quantity"]) for ln in po["lines"]] == [("FA-HEADSET-B", 6)]


def test_a_higher_total_goes_back_to_review_and_the_changed_stages_decide_again(
    stuck: tuple[Engine, str, str],
) -> None:
    engine, _, second = stuck
    # Individually at the list price: 6 x 129.00 = 774.00; FA-HEADSET-B is not valid yet then.
    with transaction(engine) as session:
        actions.set_sourcing(
            session, ref=second, line_no=1, actor_email=PAUL, individual=True, now=NOW
        )

    detail = show(engine, second)
    assert (detail["status"], detail["total"], detail["round"]) == ("in_review", "774.00", 2)
    assert detail["decided_at"] is None
    # The joint review (its inputs are the lines) and the budget owner (the total) decide
    # again, in order; the contract terms, no longer settled by an agreement, are open.
    assert stage_rounds(engine, second) == {
        "joint_review": ("open", 2),
        "budget_owner": ("waiting", 2),
        "finance": ("skipped", 1),
        "management": ("skipped", 1),
    }
    assert detail["terms"]["missing"] == ["warranty", "sla", "returns", "erasure"]
    (reopen,) = audit_rows(engine, second, "reopen")
    assert (reopen.actor, reopen.from_status, reopen.to_status) == (PAUL, "approved", "in_review")
    assert reopen.details["total"] == ["594.00", "774.00"]
    assert reopen.details["decide_again"] == {
        "joint_review": "inputs changed",
        "budget_owner": "inputs changed",
    }
    # The joint review's approvers are asked again, as when a stage opens.
    asked = {n.audience for n in notices(engine, second, "approval_needed")}
    assert {f"person:{IDA}", f"person:{PAUL}"} <= asked
    assert any(
        n.dedup_key.endswith(f"{second}/joint_review/r2|person:{IDA}")
        for n in notices(engine, second, "approval_needed")
    )
    told = notices(engine, second, "re_sourced")
    assert {n.context["status"] for n in told} == {"in_review"}
    text = rendered(engine, told[0])
    assert "back in review: line 1 re-sourced, €594.00 now €774.00" in text
    assert "Joint review (IT and purchasing), Budget owner approval decide again" in text

    # Not orderable while in review.
    with pytest.raises(TransitionNotAllowed, match="is in_review: cannot order"):
        order(engine, second)

    # The final approval waits for the terms, as the first one did.
    decide(engine, second, IDA)
    decide(engine, second, PAUL, confirm_terms=False)
    before = row_counts(engine)
    with pytest.raises(RuleViolation, match="still open: warranty, sla, returns, erasure"):
        decide(engine, second, BOB)
    assert row_counts(engine) == before
    with transaction(engine) as session:
        actions.confirm_terms(session, ref=second, actor_email=PAUL, now=NOW)
    assert decide(engine, second, BOB).request_status == "approved"
    # The requester hears of the new approval (a second "approved", for round 2).
    assert [n.dedup_key.split("|")[1] for n in notices(engine, second, "approved")] == [
        f"{second}/r1",
        f"{second}/r1",
        f"{second}/r2",
        f"{second}/r2",
    ]
    assert order(engine, second)["status"] == "ordered"


def test_terms_left_open_at_a_lower_total_send_back_only_the_joint_review(
    stuck: tuple[Engine, str, str],
) -> None:
    engine, _, second = stuck
    with transaction(engine) as session:
        quote = actions.record_quote(
            session, ref=second, line_no=1, supplier="Dealer A", unit_price=Decimal("90.00"),
            actor_email=PAUL, now=NOW,
        )  # fmt: skip
    # FA-HEADSET-B covers it from tomorrow: buying individually needs a reason.
    before = row_counts(engine)
    with pytest.raises(InputError) as caught:
        source(engine, second, quote_id=quote.id)
    assert [p.field for p in caught.value.problems] == ["--justification"]
    assert row_counts(engine) == before

    source(engine, second, quote_id=quote.id, justification="Dealer A delivers tomorrow.")
    detail = show(engine, second)
    assert (detail["status"], detail["total"]) == ("in_review", "540.00")
    # The budget owner approved more than this: that approval stands.
    assert stage_rounds(engine, second)["budget_owner"] == ("approved", 1)
    assert stage_rounds(engine, second)["joint_review"] == ("open", 2)
    (reopen,) = audit_rows(engine, second, "reopen")
    assert reopen.details["decide_again"] == {"joint_review": "contract terms open"}
    decide(engine, second, IDA)
    assert decide(engine, second, PAUL).request_status == "approved"  # confirms the terms
    assert order(engine, second)["status"] == "ordered"


def test_terms_confirmed_for_one_supplier_are_confirmed_again_for_a_new_one(
    stuck: tuple[Engine, str, str],
) -> None:
    """Purchasing confirmed the contract terms of Dealer A's quote. Another quote from Dealer A
    keeps them; a quote from Dealer B is another contract: its terms are open again and the
    joint review, where purchasing confirms them, decides again."""
    engine, _, second = stuck

    def quote(supplier: str, price: str) -> int:
        with transaction(engine) as session:
            row = actions.record_quote(
                session, ref=second, line_no=1, supplier=supplier, unit_price=Decimal(price),
                actor_email=PAUL, now=NOW,
            )  # fmt: skip
        assert row.id is not None
        return row.id

    why = "Dealer A delivers tomorrow."
    source(engine, second, quote_id=quote("Dealer A", "90.00"), justification=why)
    decide(engine, second, IDA)
    assert decide(engine, second, PAUL).request_status == "approved"  # confirms the terms
    assert show(engine, second)["terms"]["missing"] == []

    # The same supplier, a better price: the terms stand, the request stays approved.
    source(engine, second, quote_id=quote("Dealer A", "88.00"), justification=why)
    detail = show(engine, second)
    assert (detail["status"], detail["total"], detail["terms"]["missing"]) == (
        "approved",
        "528.00",
        [],
    )
    (_, same) = audit_rows(engine, second, "sourcing")
    assert (same.details["from"]["supplier"], same.details["to"]["supplier"]) == (
        "Dealer A",
        "Dealer A",
    )
    assert "terms_reopened" not in same.details

    # Another supplier: what was confirmed for Dealer A does not cover Dealer B's contract.
    source(engine, second, quote_id=quote("Dealer B", "85.00"), justification="Cheaper still.")
    detail = show(engine, second)
    assert (detail["status"], detail["total"]) == ("in_review", "510.00")
    assert detail["terms"]["missing"] == ["warranty", "sla", "returns", "erasure"]
    *_, moved = audit_rows(engine, second, "sourcing")
    assert (moved.details["from"]["supplier"], moved.details["to"]["supplier"]) == (
        "Dealer A",
        "Dealer B",
    )
    assert moved.details["terms_reopened"] == ["warranty", "sla", "returns", "erasure"]
    *_, reopen = audit_rows(engine, second, "reopen")
    assert reopen.details["decide_again"] == {"joint_review": "contract terms open"}
    assert stage_rounds(engine, second)["budget_owner"] == ("approved", 1)
    *_, told = notices(engine, second, "re_sourced")
    assert "(contract terms to confirm again: warranty, SLA, returns, erasure)" in rendered(
        engine, told
    )
    decide(engine, second, IDA)
    assert decide(engine, second, PAUL).request_status == "approved"  # confirms them again
    assert order(engine, second)["status"] == "ordered"


def test_an_ordered_request_or_another_role_cannot_re_source_and_nothing_is_written(
    stuck: tuple[Engine, str, str],
) -> None:
    engine, first, second = stuck
    before = row_counts(engine)
    ordered = f"{first} is ordered: its purchase orders are placed"
    with pytest.raises(TransitionNotAllowed, match=ordered):
        source(engine, first, individual=True)
    with pytest.raises(TransitionNotAllowed, match=ordered), transaction(engine) as session:
        actions.record_quote(
            session, ref=first, line_no=1, supplier="Dealer A", unit_price=Decimal("90.00"),
            actor_email=PAUL, now=NOW,
        )  # fmt: skip
    with pytest.raises(RuleViolation, match=f"{IDA} cannot choose sourcing: needs the role"):
        source(engine, second, who=IDA, individual=True)
    with pytest.raises(RuleViolation, match="needs the role purchasing"):
        source(engine, second, who=RITA, individual=True)
    assert row_counts(engine) == before
    assert show(engine, first)["status"] == "ordered"
    assert show(engine, second)["status"] == "approved"
