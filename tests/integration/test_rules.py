"""Who may decide: separation of duties, delegation, repeated decisions, send-back, reject, cancel.

Every test runs on SQLite and PostgreSQL. A refused action must leave no trace: no decision,
no audit row, no notification. Tables of cases run one request each inside one database
(a fresh database per case would cost more than the case itself).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import func, select

from models import actions, hr, pipeline, sla
from models.audit import AuditEvent
from models.db import transaction
from models.errors import AlreadyDecided, InputError, RuleViolation, TransitionNotAllowed
from models.org import Person
from models.outbox import Notification
from models.requests import Decision, RequestUpdate
from models.views import inbox
from notifications.context import ContextBuilder, Links
from notifications.render import Message, Renderer
from tests.factories import (
    BOB,
    CARL,
    FIONA,
    HANNA,
    IDA,
    IVAN,
    MAX,
    NINA,
    NOW,
    PAUL,
    PETRA,
    RITA,
    SARA,
    TODAY,
    decide,
    give_roles,
    install_edited_pipeline,
    load_org_data,
    show,
    stale_notices,
    submit,
)

# 11 x 949.00 = 10,439.00: joint review, budget owner and finance.
ROLLOUT_11 = {"kind": "rollout", "lines": [{"sku": "LAPTOP-STD-14", "quantity": 11}]}


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def stages(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in detail["stages"]}


def statuses(detail: dict[str, Any]) -> dict[str, str]:
    return {key: s["status"] for key, s in stages(detail).items()}


def decided_by(detail: dict[str, Any], stage: str) -> list[tuple[str, str | None]]:
    """(by, on_behalf_of) of the stage's decisions in its current round."""
    s = stages(detail)[stage]
    return [(d["by"], d["on_behalf_of"]) for d in s["decisions"] if d["round"] == s["round"]]


def written(engine: Engine) -> tuple[int, ...]:
    """(audit rows, decision rows, notification rows) in the whole database."""
    with transaction(engine, readonly=True) as session:
        return tuple(
            session.exec(select(func.count()).select_from(model)).one()
            for model in (AuditEvent, Decision, Notification)
        )


@contextmanager
def writes_nothing(engine: Engine, case: str = "") -> Iterator[None]:
    before = written(engine)
    yield
    after = written(engine)
    assert after == before, f"{case}: wrote (audit, decisions, notifications) {before} -> {after}"


@contextmanager
def refusal(engine: Engine, error: type[Exception], match: str, case: str) -> Iterator[None]:
    """The block must raise `error` with a message matching `match`, and write nothing."""
    with writes_nothing(engine, case):
        try:
            yield
        except Exception as exc:
            assert isinstance(exc, error) and re.search(match, str(exc)), (
                f"{case}: expected {error.__name__} matching {match!r}, "
                f"got {type(exc).__name__}: {exc}"
            )
        else:
            pytest.fail(f"{case}: not refused (expected {error.__name__}: {match})")


def refused(
    engine: Engine,
    ref: str,
    who: str,
    error: type[Exception],
    match: str,
    outcome: str = "approve",
    now: datetime = NOW,
    **kw: Any,
) -> None:
    """`who` deciding `outcome` must raise `error` (its message matching) and write nothing."""
    with refusal(engine, error, match, f"{ref}: {who} {outcome} {kw}".rstrip(" {}")):
        decide(engine, ref, who, outcome, now, **kw)


def resubmit(
    engine: Engine, ref: str, who: str = RITA, now: datetime = NOW, **changes: Any
) -> None:
    with transaction(engine) as session:
        actions.resubmit(
            session,
            ref=ref,
            actor_email=who,
            update=RequestUpdate.model_validate(changes),
            now=now,
        )


def cancel(engine: Engine, ref: str, who: str, now: datetime = NOW) -> None:
    with transaction(engine) as session:
        actions.cancel(session, ref=ref, actor_email=who, reason="not needed", now=now)


def inbox_of(engine: Engine, email: str, now: datetime) -> list[dict[str, Any]]:
    with transaction(engine, readonly=True) as session:
        me = session.exec(select(Person).where(Person.email == email)).one()
        return inbox(session, me, now=now)


def notified(engine: Engine, ref: str, event: str) -> list[str]:
    with transaction(engine, readonly=True) as session:
        return list(
            session.exec(
                select(Notification.audience).where(
                    Notification.event == event, Notification.request_id == int(ref[3:])
                )
            ).all()
        )


# ------------------------------------------------------------------ separation of duties


def test_requester_cannot_approve_own_request_nor_recipient_devices_for_themselves(
    engine: Engine,
) -> None:
    # Rita asks for Nina's laptop; both hold both roles of the joint review.
    give_roles(engine, RITA, "it", "purchasing")
    give_roles(engine, NINA, "it", "purchasing")
    ref = submit(engine)
    (pending,) = show(engine, ref)["pending"]
    assert pending["approvers"] == [IDA, IVAN, PAUL, PETRA]
    for who, message in [
        (RITA, "nobody approves their own request"),
        (NINA, "nobody approves devices for themselves"),
    ]:
        for outcome in ("approve", "reject", "send_back"):
            refused(engine, ref, who, RuleViolation, message, outcome)
        refused(engine, ref, who, RuleViolation, message, stage_key="joint_review")
        assert inbox_of(engine, who, NOW) == []


def test_budget_owner_cannot_approve_own_request_nor_devices_for_themselves(
    engine: Engine,
) -> None:
    for overrides, message in [
        ({"requester": BOB}, "nobody approves their own request"),
        ({"on_behalf_of": BOB}, "nobody approves devices for themselves"),
    ]:
        ref = submit(engine, **overrides)
        decide(engine, ref, IDA)
        decide(engine, ref, PAUL)
        (pending,) = show(engine, ref)["pending"]
        # Nobody else may decide the budget: it went to finance, the stage's escalate_to.
        assert (pending["stage"], pending["approvers"]) == ("budget_owner", [FIONA]), overrides
        assert pending["escalated"] == [
            {
                "roles": ["budget_owner"],
                "to": "finance",
                "reason": f"nobody may decide budget_owner ({BOB} is excluded: {message})",
            }
        ], overrides
        refused(engine, ref, BOB, RuleViolation, message)
        # Nor can Bob's delegate approve in his place while the delegation is in force.
        refused(engine, ref, CARL, RuleViolation, message, now=at(2026, 12, 22, 9))
        assert notified(engine, ref, "no_approver") == ["team:finance"]  # its escalate_to


def test_nobody_approves_two_stages_of_the_same_request(engine: Engine) -> None:
    # Ida is in IT and owns the Engineering budget.
    load_org_data(
        engine, {"cost_centres": [{"code": "CC-ENG", "name": "Engineering", "budget_owner": IDA}]}
    )
    decided_by_ida = submit(engine, justification="Ida reviews")
    decided_by_ivan = submit(engine, justification="Ivan reviews")
    for ref, it_person in [(decided_by_ida, IDA), (decided_by_ivan, IVAN)]:
        decide(engine, ref, it_person)
        decide(engine, ref, PAUL)

    (pending,) = show(engine, decided_by_ida)["pending"]
    # The budget's only owner decided the joint review: finance decides it in her place.
    assert (pending["stage"], pending["approvers"]) == ("budget_owner", [FIONA])
    match = "already decided stage joint_review of this request"
    for outcome in ("approve", "reject"):
        refused(
            engine, decided_by_ida, IDA, RuleViolation, match, outcome, stage_key="budget_owner"
        )
    # Without naming the stage, her approval is the one she gave the joint review: a no-op.
    with writes_nothing(engine, "repeated approval"):
        again = decide(engine, decided_by_ida, IDA)
    assert (again.noop, again.stage) == (True, "joint_review")
    assert show(engine, decided_by_ida)["status"] == "in_review"

    # Where Ivan did the IT review, Ida decides the budget and sees it in her inbox.
    assert [(i["id"], i["stage"]) for i in inbox_of(engine, IDA, NOW)] == [
        (decided_by_ivan, "budget_owner")
    ]
    (pending,) = show(engine, decided_by_ivan)["pending"]
    assert pending["approvers"] == [IDA]
    assert decide(engine, decided_by_ivan, IDA).stage == "budget_owner"
    assert show(engine, decided_by_ivan)["status"] == "approved"


@pytest.mark.parametrize("how", ["holds-both-roles", "delegate-of-purchasing"])
def test_one_person_cannot_fill_both_roles_of_an_all_of_stage(engine: Engine, how: str) -> None:
    if how == "holds-both-roles":
        give_roles(engine, IDA, "purchasing")
    else:
        delegation = {"delegator": PAUL, "delegate": IDA, "from": TODAY, "to": TODAY + timedelta(7)}
        load_org_data(engine, {"delegations": [delegation]})
    ref = submit(engine)
    first = decide(engine, ref, IDA)
    assert (first.stage, first.role, first.noop) == ("joint_review", "it", False)

    # Again, with or without naming the stage: her part is recorded, the other is not hers.
    with writes_nothing(engine, "again"):
        assert decide(engine, ref, IDA).noop is True
        assert decide(engine, ref, IDA, stage_key="joint_review").noop is True
    (pending,) = show(engine, ref)["pending"]
    assert (pending["stage"], pending["roles"]) == ("joint_review", ["purchasing"])
    assert pending["approvers"] == [PAUL, PETRA]
    assert inbox_of(engine, IDA, NOW) == []

    decide(engine, ref, PETRA)
    assert decided_by(show(engine, ref), "joint_review") == [(IDA, None), (PETRA, None)]


# ------------------------------------------------------------------ escalation: nobody may decide

# An HR joiner whose manager owns the cost centre: the HR sync files the onboarding with the
# manager as requester, so the budget owner's approval has nobody who may give it.
JOINER = {
    "email": "jan.joiner@example.com",
    "name": "Jan Joiner",
    "department": "Engineering",
    "role": "developer",
    "cost_centre": "CC-ENG",
    "manager": BOB,
    "start_date": TODAY + timedelta(days=40),
}


def hr_sync(engine: Engine, **row: Any) -> hr.SyncResult:
    with transaction(engine) as session:
        spec = pipeline.active(session)[1]
        return hr.apply(session, rows=[hr.HrRow.model_validate(row)], now=NOW, spec=spec)


def notices(engine: Engine, ref: str, event: str, stage: str) -> dict[str, dict[str, Any]]:
    """The notifications of one event about one stage of a request: {audience: context}."""
    with transaction(engine, readonly=True) as session:
        rows = session.exec(
            select(Notification).where(
                Notification.event == event, Notification.request_id == int(ref[3:])
            )
        ).all()
        return {n.audience: n.context for n in rows if n.context.get("stage") == stage}


def trail(engine: Engine, ref: str, stage: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, actor, details) of a stage's audit rows, oldest first."""
    return [
        (e["action"], e["actor"], e["details"])
        for e in show(engine, ref)["timeline"]
        if e["entity_id"] == f"{ref}/{stage}"
    ]


def test_an_hr_joiners_onboarding_whose_manager_owns_the_budget_is_decided_by_finance_at_once(
    engine: Engine,
) -> None:
    (ref,) = hr_sync(engine, **JOINER).joiners
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL)
    reason = (
        f"nobody may decide budget_owner ({BOB} is excluded: nobody approves their own request)"
    )
    escalation = {"to": "finance", "reason": reason}

    # Finance (the stage's escalate_to) is asked at once: the team, and each member in person
    # with their decision links, as any approver; it waits in Fiona's inbox.
    (pending,) = show(engine, ref)["pending"]
    assert (pending["stage"], pending["approvers"]) == ("budget_owner", [FIONA])
    assert pending["escalated"] == [{"roles": ["budget_owner"], **escalation}]
    assert list(notices(engine, ref, "no_approver", "budget_owner")) == ["team:finance"]
    asked = notices(engine, ref, "approval_needed", "budget_owner")
    assert list(asked) == [f"person:{FIONA}"]
    assert asked[f"person:{FIONA}"]["escalation"] == escalation
    assert [
        (i["id"], i["stage"], i["role"], i["escalated"]) for i in inbox_of(engine, FIONA, NOW)
    ] == [(ref, "budget_owner", "finance", reason)]

    # Nobody outside finance may decide it, and the refusal says who may and why.
    needs = re.escape(f"open stages need: finance in place of budget_owner, as {reason}")
    for outsider in (SARA, MAX, HANNA):
        refused(engine, ref, outsider, RuleViolation, f"{outsider} is not an approver.*{needs}")
    refused(engine, ref, BOB, RuleViolation, "nobody approves their own request")

    # Fiona approves at once, without waiting for the stage's SLA to run out.
    result = decide(engine, ref, FIONA, comment="Bob's own budget, checked by finance")
    assert (result.stage, result.role, result.stage_status, result.request_status) == (
        "budget_owner",
        "finance",
        "approved",
        "approved",
    )
    assert result.message == f"escalated to finance: {reason}"
    assert decided_by(show(engine, ref), "budget_owner") == [(FIONA, None)]

    # The audit trail says the stage was escalated when it opened, to whom and why, and that
    # finance's decision filled the budget owner's part for that reason.
    rows = trail(engine, ref, "budget_owner")
    assert [(action, actor) for action, actor, _ in rows] == [
        ("open", "system"),
        ("escalated", "system"),
        ("decision.approve", FIONA),
        ("approve", FIONA),
    ]
    assert {k: rows[1][2][k] for k in ("escalated_to", "approvers", "reason")} == {
        "escalated_to": "finance",
        "approvers": [FIONA],
        "reason": reason,
    }
    assert rows[2][2] == {
        "role": "finance",
        "slot": "any",
        "round": 1,
        "comment": "Bob's own budget, checked by finance",
        "escalated": reason,
    }


# (case, request, what happens first, its stage, the part's roles, why nobody holding them may
# decide, the escalation role, who of it decides, someone refused)
NOBODY_MAY_DECIDE: list[tuple[str, dict[str, Any], list[str], str, str, str, str, str, str]] = [
    (
        "the budget owner is to receive the devices",
        {"on_behalf_of": BOB},
        [IDA, PAUL],
        "budget_owner",
        "budget_owner",
        f"{BOB} is excluded: nobody approves devices for themselves",
        "finance",
        FIONA,
        SARA,
    ),
    (
        "the requester is the only holder of finance",
        {**ROLLOUT_11, "requester": FIONA},
        [IDA, PAUL, BOB],
        "finance",
        "finance",
        f"{FIONA} is excluded: nobody approves their own request",
        "management",
        MAX,
        HANNA,
    ),
    (
        "the requester and the recipient are the only holders of purchasing",
        {"requester": PAUL, "on_behalf_of": PETRA},
        [],
        "joint_review",
        "purchasing",
        f"{PAUL} is excluded: nobody approves their own request; "
        f"{PETRA} is excluded: nobody approves devices for themselves",
        "management",
        MAX,
        FIONA,
    ),
    (
        "nobody holds the role: the cost centre's owner has left",
        {"cost_centre": "CC-SALES"},
        [IDA, PAUL],
        "budget_owner",
        "budget_owner",
        "nobody holds the role budget_owner",
        "finance",
        FIONA,
        HANNA,
    ),
    (
        "the budget owner decided another stage",
        {},
        [IDA, PAUL],
        "budget_owner",
        "budget_owner",
        f"{IDA} is excluded: already decided stage joint_review of this request "
        "(one person decides one stage)",
        "finance",
        FIONA,
        HANNA,
    ),
]


def test_a_part_nobody_may_decide_goes_to_the_stage_s_escalation_role_at_once(
    engine: Engine,
) -> None:
    for n, (case, overrides, first, stage, roles, why, to, decider, outsider) in enumerate(
        NOBODY_MAY_DECIDE
    ):
        if case.startswith("nobody holds"):
            hr_sync(engine, email=SARA, name="Sara Sales", end_date=TODAY - timedelta(days=1))
        if case.endswith("decided another stage"):
            centre = {"code": "CC-ENG", "name": "Engineering", "budget_owner": IDA}
            load_org_data(engine, {"cost_centres": [centre]})
        ref = submit(engine, justification=f"case {n}", **overrides)
        for who in first:
            decide(engine, ref, who)
        reason = f"nobody may decide {roles} ({why})"
        (pending,) = show(engine, ref)["pending"]
        assert pending["stage"] == stage, case
        assert decider in pending["approvers"], case
        assert pending["escalated"] == [{"roles": [roles], "to": to, "reason": reason}], case
        assert f"team:{to}" in notices(engine, ref, "no_approver", stage), case
        asked = notices(engine, ref, "approval_needed", stage)[f"person:{decider}"]
        assert asked["escalation"] == {"to": to, "reason": reason}, case

        needs = re.escape(f"{to} in place of {roles}, as {reason}")
        refused(engine, ref, outsider, RuleViolation, f"not an approver of any open stage.*{needs}")
        result = decide(engine, ref, decider, stage_key=stage)
        assert (result.stage, result.role, result.noop) == (stage, to, False), case
        escalated = [d for a, _, d in trail(engine, ref, stage) if a == "escalated"]
        assert [(d["escalated_to"], d["reason"]) for d in escalated] == [(to, reason)], case
        decided = [d for a, _, d in trail(engine, ref, stage) if a == "decision.approve"]
        assert (decided[-1]["role"], decided[-1]["escalated"]) == (to, reason), case


def test_the_escalation_role_is_held_to_the_separation_of_duties(engine: Engine) -> None:
    # Bob asks from his own budget and also holds finance: his own request is not his to
    # approve in finance's name either.
    give_roles(engine, BOB, "finance")
    ref = submit(engine, requester=BOB, **ROLLOUT_11)
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL)
    (pending,) = show(engine, ref)["pending"]
    assert (pending["stage"], pending["approvers"]) == ("budget_owner", [FIONA])
    for outcome in ("approve", "reject", "send_back"):
        refused(engine, ref, BOB, RuleViolation, "nobody approves their own request", outcome)

    # Fiona fills the budget owner's part; the finance stage (over 10,000) is then not hers
    # (one person decides one stage) and, finance having nobody else, goes to management.
    assert decide(engine, ref, FIONA).role == "finance"
    (pending,) = show(engine, ref)["pending"]
    assert (pending["stage"], pending["approvers"]) == ("finance", [MAX])
    assert pending["escalated"][0]["reason"] == (
        f"nobody may decide finance ({BOB} is excluded: nobody approves their own request; "
        f"{FIONA} is excluded: already decided stage budget_owner of this request "
        "(one person decides one stage))"
    )
    refused(
        engine, ref, FIONA, RuleViolation, "already decided stage budget_owner", stage_key="finance"
    )
    result = decide(engine, ref, MAX)
    assert (result.stage, result.role, result.request_status) == (
        "finance",
        "management",
        "approved",
    )


def test_a_part_left_to_nobody_by_a_decision_goes_to_the_escalation_role_then(
    engine: Engine,
) -> None:
    # Paul asks for Petra's laptop; Ida is in IT and purchasing, the only one who may decide the
    # purchasing part. Once she has decided the IT part she may not fill the other.
    give_roles(engine, IDA, "purchasing")
    ref = submit(engine, requester=PAUL, on_behalf_of=PETRA)
    assert notices(engine, ref, "no_approver", "joint_review") == {}
    assert decide(engine, ref, IDA).role == "it"

    reason = (
        f"nobody may decide purchasing ({IDA} is excluded: already decided this stage (approve); "
        f"{PAUL} is excluded: nobody approves their own request; "
        f"{PETRA} is excluded: nobody approves devices for themselves)"
    )
    assert list(notices(engine, ref, "no_approver", "joint_review")) == ["team:management"]
    asked = notices(engine, ref, "approval_needed", "joint_review")
    assert asked[f"person:{MAX}"]["escalation"] == {"to": "management", "reason": reason}
    escalated = [d for a, _, d in trail(engine, ref, "joint_review") if a == "escalated"]
    assert [(d["escalated_to"], d["approvers"], d["reason"]) for d in escalated] == [
        ("management", [MAX], reason)
    ]
    result = decide(engine, ref, MAX)
    assert (result.stage, result.role, result.stage_status) == (
        "joint_review",
        "management",
        "approved",
    )


def test_reminders_and_overdue_notices_ask_the_escalation_role_and_are_dropped_once_decided(
    engine: Engine,
) -> None:
    ref = submit(engine, requester=BOB)
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL)
    due = datetime.fromisoformat(show(engine, ref)["pending"][0]["due_at"])
    # Half of the budget owner's 16 business hours (Thursday 09:00 in Berlin), then past them:
    # Fiona, who decides the part nobody else may, is reminded and told it is overdue, with
    # her links; finance hears of the escalation as for any stage.
    assert due == at(2026, 11, 26, 16)
    for when in (at(2026, 11, 26, 8), due + timedelta(minutes=1)):
        with transaction(engine) as session:
            sla.sweep(session, stage_ids=sla.watched_stages(session, now=when), now=when)
    reason = (
        f"nobody may decide budget_owner ({BOB} is excluded: nobody approves their own request)"
    )
    for event in ("reminder", "overdue"):
        sent = notices(engine, ref, event, "budget_owner")
        assert list(sent) == [f"person:{FIONA}"], event
        assert sent[f"person:{FIONA}"]["escalation"] == {"to": "finance", "reason": reason}
    assert list(notices(engine, ref, "escalation", "budget_owner")) == ["team:finance"]

    with transaction(engine, readonly=True) as session:
        asking = {
            n.id: n.event
            for n in session.exec(
                select(Notification).where(Notification.request_id == int(ref[3:]))
            ).all()
            if n.context.get("stage") == "budget_owner"
            and n.event in ("no_approver", "approval_needed", "reminder", "overdue")
        }
    assert sorted(asking.values()) == [
        "approval_needed",
        "no_approver",
        "no_approver",
        "overdue",
        "reminder",
    ]
    assert not set(asking) & stale_notices(engine)
    decide(engine, ref, FIONA, now=due + timedelta(hours=1))
    # Decided: none of them is sent any more.
    assert set(asking) <= stale_notices(engine)


# ------------------------------------------------------------------ who confirms the contract terms


def confirm_terms(engine: Engine, ref: str, who: str, now: datetime = NOW) -> dict[str, Any]:
    with transaction(engine) as session:
        return actions.confirm_terms(session, ref=ref, actor_email=who, now=now)


def terms_refused(engine: Engine, ref: str, who: str, match: str, now: datetime = NOW) -> None:
    """`procure terms REF --confirm --as who` must be refused (RuleViolation) and write nothing."""
    with refusal(engine, RuleViolation, match, f"{ref}: {who} confirms the terms"):
        confirm_terms(engine, ref, who, now)


def terms_trail(engine: Engine, ref: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(actor, on_behalf_of, details) of the request's terms_confirmed audit rows."""
    return [
        (e["actor"], e["on_behalf_of"], e["details"])
        for e in show(engine, ref)["timeline"]
        if e["action"] == "terms_confirmed"
    ]


TERMS = ["warranty", "sla", "returns", "erasure"]  # no agreement loaded: every term is open


def test_a_purchaser_may_not_confirm_the_terms_of_their_own_request_nor_of_devices_for_themselves(
    engine: Engine,
) -> None:
    # Carl stands in for Paul this week: Paul's own request is not his to settle either.
    delegation = {"delegator": PAUL, "delegate": CARL, "from": TODAY, "to": TODAY + timedelta(7)}
    load_org_data(engine, {"delegations": [delegation]})
    own = submit(engine, requester=PAUL, justification="Paul's own request")
    for_petra = submit(engine, on_behalf_of=PETRA, justification="Petra's laptop")
    for ref, who, match in [
        (own, PAUL, rf"{own}: nobody confirms the contract terms of their own request \({PAUL} asked for it\)"),
        (own, CARL, rf"{own}: you may not confirm the contract terms: joint_review \(on behalf of {PAUL}\): nobody approves their own request"),
        (for_petra, PETRA, rf"{for_petra}: nobody confirms the contract terms of devices for themselves \({PETRA} is to receive them\)"),
    ]:  # fmt: skip
        terms_refused(engine, ref, who, match)
        # Nor with a decision: the approval is refused first, and the terms stay open.
        refused(engine, ref, who, RuleViolation, f"{ref}: ", confirm_terms=True)
        assert show(engine, ref)["terms"]["missing"] == TERMS, (ref, who)

    # Someone in purchasing outside the exclusions still may, and is the one the request names.
    for ref, other in ((own, PETRA), (for_petra, PAUL)):
        assert show(engine, ref)["terms"]["confirm_by"] == {
            "role": "purchasing",
            "people": [other],
            "delegates": [f"{CARL} (for {PAUL})"] if other == PAUL else [],
            "escalated": None,
        }
        assert confirm_terms(engine, ref, other)["missing"] == []
        assert terms_trail(engine, ref) == [
            (other, None, {"terms": TERMS, "note": "", "role": "purchasing"})
        ]
        assert show(engine, ref)["terms"]["confirm_by"] is None  # nothing left to confirm


def test_an_escalated_manager_confirms_the_terms_and_completes_the_approval(
    engine: Engine,
) -> None:
    # Paul asks for Petra's laptop: nobody in purchasing may decide its part of the joint
    # review, so management decides it at once, and settles the contract terms with it.
    reason = (
        f"nobody may decide purchasing ({PAUL} is excluded: nobody approves their own request; "
        f"{PETRA} is excluded: nobody approves devices for themselves)"
    )
    with_decision = submit(engine, requester=PAUL, on_behalf_of=PETRA, justification="together")
    afterwards = submit(engine, requester=PAUL, on_behalf_of=PETRA, justification="afterwards")
    for ref in (with_decision, afterwards):
        assert show(engine, ref)["terms"]["confirm_by"] == {
            "role": "management",
            "people": [MAX],
            "delegates": [],
            "escalated": {"roles": ["purchasing"], "to": "management", "reason": reason},
        }
        needs = re.escape(f"needs the role management (in place of purchasing, as {reason})")
        terms_refused(engine, ref, IDA, rf"{ref}: {IDA} cannot confirm contract terms: {needs}")
        terms_refused(engine, ref, PAUL, "nobody confirms the contract terms of their own request")
        terms_refused(engine, ref, PETRA, "nobody confirms the contract terms of devices for")
        decide(engine, ref, IDA)

    # With the decision: decide --approve --confirm-terms.
    result = decide(engine, with_decision, MAX, confirm_terms=True)
    assert (result.stage, result.role, result.stage_status) == (
        "joint_review",
        "management",
        "approved",
    )
    assert terms_trail(engine, with_decision) == [
        (MAX, None, {"terms": TERMS, "note": "", "role": "management", "escalated": reason})
    ]
    assert decide(engine, with_decision, BOB).request_status == "approved"

    # After the decision: the final approval waits, naming who may confirm; then procure terms.
    decide(engine, afterwards, MAX)
    refused(
        engine,
        afterwards,
        BOB,
        RuleViolation,
        re.escape(
            f"{afterwards}: before the final approval management (in place of purchasing, as "
            f"{reason}) (Max Management) must confirm the contract terms still open: warranty, "
            f"sla, returns, erasure; they confirm them from their inbox or with procure terms "
            f"{afterwards} --all --as THEIR-EMAIL"
        ),
    )
    terms_refused(engine, afterwards, BOB, "needs the role management")
    assert confirm_terms(engine, afterwards, MAX)["missing"] == []
    assert terms_trail(engine, afterwards)[0][:2] == (MAX, None)
    assert decide(engine, afterwards, BOB).request_status == "approved"


def test_terms_go_with_purchasing_s_part_not_with_another_part_or_stage(engine: Engine) -> None:
    # Ida holds IT and purchasing; Bob owns the budget and holds purchasing too.
    give_roles(engine, IDA, "purchasing")
    give_roles(engine, BOB, "purchasing")
    ref = submit(engine)
    # Deciding the IT part, Ida may not settle purchasing's terms with it (one person fills one
    # part of a stage); Paul, who decided purchasing's part, still may afterwards.
    refused(engine, ref, IDA, RuleViolation, "already decided this stage", confirm_terms=True)
    decide(engine, ref, IDA)
    terms_refused(engine, ref, IDA, "joint_review: already decided this stage")
    decide(engine, ref, PAUL, confirm_terms=False)
    # The budget owner's approval does not settle them either: one person decides one stage.
    refused(
        engine,
        ref,
        BOB,
        RuleViolation,
        "joint_review: already decided stage budget_owner of this request",
        confirm_terms=True,
    )
    assert confirm_terms(engine, ref, PAUL)["missing"] == []
    assert decide(engine, ref, BOB).request_status == "approved"


def test_confirming_the_terms_takes_purchasing_s_part_and_no_other_part_or_stage(
    engine: Engine,
) -> None:
    # Ida holds IT and purchasing; Bob owns the budget and holds purchasing too.
    give_roles(engine, IDA, "purchasing")
    give_roles(engine, BOB, "purchasing")
    ref = submit(engine)
    # Ida settles the terms first: purchasing's part is hers, the IT part is no longer.
    assert confirm_terms(engine, ref, IDA)["missing"] == []
    excluded = re.escape(
        "confirmed its contract terms (purchasing's part of stage joint_review; "
        "one person decides one part)"
    )
    (pending,) = show(engine, ref)["pending"]
    assert pending["approvers"] == [BOB, IDA, IVAN, PAUL, PETRA]  # Ida for purchasing only
    decide(engine, ref, PAUL)  # purchasing's part: the IT part is all that is left to Ida
    refused(engine, ref, IDA, RuleViolation, f"joint_review: {excluded}")
    (pending,) = show(engine, ref)["pending"]
    assert (pending["roles"], pending["approvers"]) == (["it"], [IVAN])
    assert decide(engine, ref, IVAN).stage_status == "approved"
    assert decide(engine, ref, BOB).request_status == "approved"

    # The terms settled while the budget owner's stage is open, by its only approver: the stage
    # goes to its escalation role (finance) at once, as it would for a decision, and Bob may not
    # approve it.
    ref = submit(engine, justification="terms after the review")
    decide(engine, ref, IVAN)
    decide(engine, ref, PAUL, confirm_terms=False)
    assert show(engine, ref)["pending"][0]["approvers"] == [BOB]
    assert notices(engine, ref, "no_approver", "budget_owner") == {}
    assert confirm_terms(engine, ref, BOB)["missing"] == []
    reason = f"nobody may decide budget_owner ({BOB} is excluded: {excluded})".replace("\\", "")
    (pending,) = show(engine, ref)["pending"]
    assert pending["approvers"] == [FIONA]
    assert pending["escalated"] == [{"roles": ["budget_owner"], "to": "finance", "reason": reason}]
    assert list(notices(engine, ref, "no_approver", "budget_owner")) == ["team:finance"]
    asked = notices(engine, ref, "approval_needed", "budget_owner")
    assert asked[f"person:{FIONA}"]["escalation"] == {"to": "finance", "reason": reason}
    refused(engine, ref, BOB, RuleViolation, f"budget_owner: {excluded}")
    # Confirming nothing new changes nothing: no second escalation.
    with writes_nothing(engine, "terms again"):
        assert confirm_terms(engine, ref, BOB)["confirmed"] == []
    result = decide(engine, ref, FIONA)
    assert (result.role, result.request_status) == ("finance", "approved")


def test_without_a_purchasing_stage_purchasing_outside_the_exclusions_confirms_the_terms(
    engine: Engine,
) -> None:
    install_edited_pipeline(engine, "it-only.yaml", ("roles: [it, purchasing]", "roles: [it]"))
    ref = submit(engine, requester=PAUL)
    terms_refused(engine, ref, PAUL, "nobody confirms the contract terms of their own request")
    decide(engine, ref, IDA)
    # Bob is told whom to ask: the purchasers who may confirm them (Paul asked for it).
    refused(
        engine,
        ref,
        BOB,
        RuleViolation,
        "purchasing \\(Petra Price\\) must confirm the contract terms",
    )
    assert confirm_terms(engine, ref, PETRA)["missing"] == []
    assert decide(engine, ref, BOB).request_status == "approved"
    # Nobody in purchasing may: management, as for a stage's part nobody may decide.
    ref = submit(engine, requester=PAUL, on_behalf_of=PETRA, justification="nobody in purchasing")
    assert show(engine, ref)["terms"]["confirm_by"]["people"] == [MAX]
    assert confirm_terms(engine, ref, MAX)["missing"] == []


def terms_notices(engine: Engine, ref: str, round: int = 1) -> dict[str, dict[str, Any]]:
    """The request's terms_open notifications of a review round: {audience: {id, **context}}
    (one each)."""
    with transaction(engine, readonly=True) as session:
        rows = [
            n
            for n in session.exec(
                select(Notification).where(
                    Notification.event == "terms_open", Notification.request_id == int(ref[3:])
                )
            ).all()
            if n.context["round"] == round
        ]
        assert len({n.audience for n in rows}) == len(rows), [n.dedup_key for n in rows]
        return {n.audience: {"id": n.id, **n.context} for n in rows}


def terms_items(engine: Engine, email: str, ref: str) -> list[dict[str, Any]]:
    return [i for i in inbox_of(engine, email, NOW) if i["id"] == ref and i["what"] == "terms"]


def test_the_terms_holding_up_the_final_approval_reach_whoever_may_confirm_them(
    engine: Engine,
) -> None:
    """Purchasing approves its part without the contract terms: the final approval is refused
    until they are confirmed, so whoever may confirm them (Paul and Petra, and Carl standing in
    for Paul) finds them in their inbox and is told once, and the notices go stale once the terms
    are confirmed."""
    delegation = {"delegator": PAUL, "delegate": CARL, "from": TODAY, "to": TODAY + timedelta(7)}
    load_org_data(engine, {"delegations": [delegation]})
    ref = submit(engine)
    decide(engine, ref, PAUL, confirm_terms=False)
    told = terms_notices(engine, ref)
    assert sorted(told) == [f"person:{CARL}", f"person:{PAUL}", f"person:{PETRA}"]
    assert {a: (n["terms"], n["on_behalf_of"], n["escalation"]) for a, n in told.items()} == {
        f"person:{PAUL}": (TERMS, None, None),
        f"person:{PETRA}": (TERMS, None, None),
        f"person:{CARL}": (TERMS, PAUL, None),
    }
    # Ida's approval opens the final stage: the same open terms are not told twice.
    decide(engine, ref, IDA)
    assert terms_notices(engine, ref) == told
    assert not {n["id"] for n in told.values()} & stale_notices(engine)

    # Their inboxes list the terms as an item of their own; Bob's lists his decision only.
    for who, on_behalf_of in ((PAUL, None), (PETRA, None), (CARL, PAUL)):
        (item,) = terms_items(engine, who, ref)
        assert item == {
            "id": ref,
            "what": "terms",
            "stage": None,
            "stage_name": "Contract terms",
            "terms": TERMS,
            "role": "purchasing",
            "on_behalf_of": on_behalf_of,
            "escalated": None,
            "nobody": None,
            "kind": "onboarding",
            "total": "949.00",
            "currency": "EUR",
            "needed_by": (TODAY + timedelta(days=28)).isoformat(),
            "due_at": show(engine, ref)["pending"][0]["due_at"],  # the budget owner's deadline
            "overdue": False,
        }, who
    assert [(i["what"], i["stage"]) for i in inbox_of(engine, BOB, NOW) if i["id"] == ref] == [
        ("decision", "budget_owner")
    ]
    for who in (IDA, IVAN, RITA, NINA, FIONA):
        assert terms_items(engine, who, ref) == [], who
    refused(engine, ref, BOB, RuleViolation, "from their inbox or with procure terms")

    # Confirmed in part: the rest is still open, the notices still apply.
    with transaction(engine) as session:
        actions.confirm_terms(session, ref=ref, actor_email=PETRA, names=["warranty"], now=NOW)
    assert terms_items(engine, PAUL, ref)[0]["terms"] == TERMS[1:]
    assert not {n["id"] for n in told.values()} & stale_notices(engine)
    # All confirmed: off every inbox, and the notices not sent yet are dropped as stale.
    assert confirm_terms(engine, ref, PAUL)["missing"] == []
    for who in (PAUL, PETRA, CARL):
        assert terms_items(engine, who, ref) == [], who
    assert {n["id"] for n in told.values()} <= stale_notices(engine)
    assert decide(engine, ref, BOB).request_status == "approved"
    assert terms_notices(engine, ref) == told


def test_terms_open_is_told_once_the_last_stage_opens_and_not_before(engine: Engine) -> None:
    # The joint review is open, the budget owner's stage waits: nothing holds up yet.
    ref = submit(engine)
    decide(engine, ref, IDA)
    assert terms_notices(engine, ref) == {}
    # Purchasing's part is still Paul's to decide, and its approval form has the terms' box:
    # his inbox lists the decision, not the terms beside it.
    assert [i["what"] for i in inbox_of(engine, PAUL, NOW) if i["id"] == ref] == ["decision"]
    # Sent back and resubmitted: a new round, the terms are told afresh when they hold it up.
    decide(engine, ref, PAUL, confirm_terms=False)
    first = terms_notices(engine, ref)
    assert sorted(first) == [f"person:{PAUL}", f"person:{PETRA}"]
    decide(engine, ref, BOB, "send_back")
    assert {n["id"] for n in first.values()} <= stale_notices(engine)
    assert terms_items(engine, PAUL, ref)[0]["terms"] == TERMS  # still open: confirm them now
    resubmit(engine, ref, justification="Nina joins the platform team in January.")
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL, confirm_terms=False)
    assert sorted(terms_notices(engine, ref, round=2)) == [f"person:{PAUL}", f"person:{PETRA}"]
    assert terms_notices(engine, ref) == first

    # Without a purchasing stage: told when the budget owner's stage, the last, opens; to the
    # purchasers who may confirm them (not Paul, who asked for it).
    install_edited_pipeline(engine, "it-only.yaml", ("roles: [it, purchasing]", "roles: [it]"))
    ref = submit(engine, requester=PAUL, justification="without a purchasing stage")
    assert terms_notices(engine, ref) == {}
    decide(engine, ref, IDA)
    assert list(terms_notices(engine, ref)) == [f"person:{PETRA}"]
    assert terms_items(engine, PAUL, ref) == []


def test_terms_escalated_to_management_reach_management(engine: Engine) -> None:
    # Paul asks for Petra's laptop: nobody in purchasing may confirm the terms; management may.
    ref = submit(engine, requester=PAUL, on_behalf_of=PETRA)
    decide(engine, ref, IDA)
    decide(engine, ref, MAX)
    (told,) = terms_notices(engine, ref).items()
    reason = (
        f"nobody may decide purchasing ({PAUL} is excluded: nobody approves their own request; "
        f"{PETRA} is excluded: nobody approves devices for themselves)"
    )
    assert told[0] == f"person:{MAX}"
    assert (told[1]["role"], told[1]["escalation"]) == (
        "management",
        {"to": "management", "reason": reason},
    )
    (item,) = terms_items(engine, MAX, ref)
    assert (item["role"], item["escalated"]) == ("management", reason)
    for who in (PAUL, PETRA):
        assert terms_items(engine, who, ref) == []


def rendered(engine: Engine, ref: str, event: str, audience: str, stage: str) -> Message:
    """One queued notification of a request's stage, rendered as it would be sent."""
    with transaction(engine, readonly=True) as session:
        (row,) = [
            n
            for n in session.exec(
                select(Notification).where(
                    Notification.event == event,
                    Notification.request_id == int(ref[3:]),
                    Notification.audience == audience,
                )
            ).all()
            if n.context.get("stage") == stage
        ][-1:]
        links = Links("https://procure.example.com", b"rules-tests-signing-key-0123456789", NOW)
        return Renderer().render(event, ContextBuilder(session, links).build(row))


def counted(engine: Engine, ref: str, event: str, stage: str) -> int:
    """How many notifications of one event about one stage of a request were queued."""
    with transaction(engine, readonly=True) as session:
        rows = session.exec(
            select(Notification).where(
                Notification.event == event, Notification.request_id == int(ref[3:])
            )
        ).all()
        return sum(1 for n in rows if n.context.get("stage") == stage)


def sweep(engine: Engine, when: datetime) -> sla.SweepResult:
    with transaction(engine) as session:
        return sla.sweep(session, stage_ids=sla.watched_stages(session, now=when), now=when)


def test_an_escalation_names_only_the_parts_still_open(engine: Engine) -> None:
    """Purchasing approved its part of the joint review, IT did not: past the deadline
    management hears that IT did not decide, not IT and purchasing; and only IT is overdue."""
    ref = submit(engine)
    decide(engine, ref, PETRA)
    due = datetime.fromisoformat(show(engine, ref)["pending"][0]["due_at"])
    swept = sweep(engine, due + timedelta(minutes=1))
    assert swept.escalations == 1
    # The watchdog's artifact row: which request and stage, whom it told, to whom it escalated.
    assert swept.told == [
        {
            "request": ref,
            "stage": "Joint review (IT and purchasing)",
            "sent": "escalation (the approvers told it is overdue)",
            "due": "26 Nov 2026 at 17:00 CET",
            "told": f"{IDA}, {IVAN}",
            "escalated to": "management",
        }
    ]
    (told,) = notices(engine, ref, "escalation", "joint_review").values()
    assert told["roles"] == ["it"]
    assert set(notices(engine, ref, "overdue", "joint_review")) == {
        f"person:{IDA}",
        f"person:{IVAN}",
    }
    text = rendered(engine, ref, "escalation", "team:management", "joint_review").text
    assert "without a decision from IT." in text, text
    assert "purchasing." not in text and "IT, purchasing" not in text


def test_a_part_nobody_may_decide_nor_its_escalation_role_waits_and_says_why_and_what_to_do(
    engine: Engine,
) -> None:
    # Max, the only manager, asks for eleven laptops from the IT budget he owns. Finance fills
    # the budget owner's part in his place; the finance stage then has nobody (Fiona decided a
    # stage already), and management, its escalation role, is Max: nobody may decide it.
    ref = submit(engine, requester=MAX, cost_centre="CC-IT", **ROLLOUT_11)
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL)
    assert decide(engine, ref, FIONA).role == "finance"
    nobody = f"{MAX} is excluded: nobody approves their own request"
    reason = (
        f"nobody may decide finance ({FIONA} is excluded: already decided stage budget_owner "
        f"of this request (one person decides one stage)), nor management in its place ({nobody})"
    )
    remedy = (
        "give the role finance to someone who may decide it or give the role management to "
        "someone who may decide it (procure org load); a delegation does not help, as a "
        "delegate decides in the name of the person who delegated and under their exclusions"
    )
    escalation = {"to": "management", "reason": reason, "nobody": nobody, "remedy": remedy}

    # Shown as nobody, with why and what to do, not as an empty list of approvers.
    (pending,) = show(engine, ref)["pending"]
    assert (pending["stage"], pending["approvers"]) == ("finance", [])
    assert pending["escalated"] == [{"roles": ["finance"], **escalation}]

    # Those holding its roles see it in their inbox, not theirs to decide either.
    for who, role in ((FIONA, "finance"), (MAX, "management")):
        assert [
            (i["id"], i["stage"], i["role"], i["nobody"]) for i in inbox_of(engine, who, NOW)
        ] == [(ref, "finance", role, f"{reason}; what to do: {remedy}")]
    assert inbox_of(engine, HANNA, NOW) == []

    # Both teams hear it at once (nobody in person: nobody may decide), and the trail says so once.
    told = notices(engine, ref, "no_approver", "finance")
    assert sorted(told) == ["team:finance", "team:management"]
    assert all(c["escalation"] == escalation and c["approvers"] == [] for c in told.values())
    assert notices(engine, ref, "approval_needed", "finance") == {}
    message = rendered(engine, ref, "no_approver", "team:finance", "finance")
    assert message.subject == f"Nobody may decide {ref} Finance approval"
    assert f"nobody may decide it: {reason}" in message.text
    assert remedy in message.text
    escalated = [d for a, _, d in trail(engine, ref, "finance") if a == "escalated"]
    assert [(d["escalated_to"], d["approvers"], d["reason"]) for d in escalated] == [
        ("management", [], reason)
    ]

    # No bypass: everyone is refused, the escalation role's member too.
    refused(engine, ref, MAX, RuleViolation, "nobody approves their own request")
    refused(
        engine, ref, FIONA, RuleViolation, "already decided stage budget_owner", stage_key="finance"
    )
    needs = re.escape(f"open stages need: management in place of finance, as {reason}")
    refused(engine, ref, HANNA, RuleViolation, f"not an approver of any open stage.*{needs}")

    # The SLA watch keeps telling both teams, once per SLA period (24 business hours), with
    # no new audit row each time; its deadline escalates once, as for any stage.
    with transaction(engine, readonly=True) as session:
        calendar = pipeline.active(session)[1].calendar
    opened = datetime.fromisoformat(stages(show(engine, ref))["finance"]["opened_at"])
    due = datetime.fromisoformat(pending["due_at"])
    one, two = (calendar.add_business_hours(due, 24 * n) for n in (1, 2))
    for when, expected in [
        (calendar.add_business_hours(opened, 12), 4),  # the reminder at half the SLA
        (due + timedelta(minutes=1), 4),  # its deadline: the same deadline, the same message
        (one - timedelta(minutes=1), 4),
        (one, 6),  # a period later
        (one + timedelta(hours=1), 6),
        (two, 8),  # another one
    ]:
        swept = sweep(engine, when)
        assert counted(engine, ref, "no_approver", "finance") == expected, when
        if when == one:  # the teams told again, as the watchdog's artifact lists them
            ((row),) = swept.told
            assert (row["request"], row["stage"], row["sent"], row["told"]) == (
                ref,
                "Finance approval",
                "reminder: nobody may decide it",
                "management team, finance team",
            )
    actions_ = [a for a, _, _ in trail(engine, ref, "finance")]
    assert (actions_.count("escalated"), actions_.count("reminded")) == (2, 1)

    # Someone is given the role: Hanna may decide it now, in her own role, and is asked at
    # once (the organisation file's load asks her, as the stage's opening would have).
    give_roles(engine, HANNA, "finance")
    (pending,) = show(engine, ref)["pending"]
    assert (pending["approvers"], pending["escalated"]) == ([HANNA], [])
    assert sorted(notices(engine, ref, "approval_needed", "finance")) == [f"person:{HANNA}"]
    give_roles(engine, HANNA, "finance")  # the same file again: she is not asked twice
    assert counted(engine, ref, "approval_needed", "finance") == 1
    result = decide(engine, ref, HANNA, now=two + timedelta(hours=1))
    assert (result.role, result.message, result.request_status) == ("finance", "", "approved")


def test_nobody_holding_the_escalation_role_leaves_the_part_to_nobody(engine: Engine) -> None:
    # Fiona asks for eleven laptops; finance has nobody else, and management nobody at all.
    hr_sync(engine, email=MAX, name="Max Management", end_date=TODAY - timedelta(days=1))
    ref = submit(engine, requester=FIONA, **ROLLOUT_11)
    for who in (IDA, PAUL, BOB):
        decide(engine, ref, who)
    (pending,) = show(engine, ref)["pending"]
    assert (pending["stage"], pending["approvers"]) == ("finance", [])
    assert pending["escalated"][0]["reason"] == (
        f"nobody may decide finance ({FIONA} is excluded: nobody approves their own request), "
        "nor management in its place (nobody holds the role management)"
    )
    assert sorted(notices(engine, ref, "no_approver", "finance")) == [
        "team:finance",
        "team:management",
    ]


def test_a_part_its_escalation_role_can_no_longer_decide_after_a_decision_is_told_of(
    engine: Engine,
) -> None:
    # Paul, in purchasing and the only one in IT, asks for Petra's laptop: both parts of the joint
    # review go to management. Max decides one; one person fills one part, so nobody may decide
    # the other now.
    load_org_data(
        engine,
        {
            "people": [
                {"email": IDA, "name": "Ida", "department": "IT", "roles": ["requester"]},
                {"email": IVAN, "name": "Ivan", "department": "IT", "roles": ["requester"]},
                {"email": PAUL, "name": "Paul", "department": "P", "roles": ["it", "purchasing"]},
            ]
        },
    )
    ref = submit(engine, requester=PAUL, on_behalf_of=PETRA)
    assert list(notices(engine, ref, "no_approver", "joint_review")) == ["team:management"]
    assert decide(engine, ref, MAX).role == "management"
    (pending,) = show(engine, ref)["pending"]
    assert pending["approvers"] == []
    assert pending["escalated"][0]["nobody"] == (
        f"{MAX} is excluded: already decided this stage (approve)"
    )
    assert sorted(notices(engine, ref, "no_approver", "joint_review")) == [
        "team:management",
        "team:purchasing",
    ]
    escalated = [d for a, _, d in trail(engine, ref, "joint_review") if a == "escalated"]
    assert [(d["slot"], d["approvers"]) for d in escalated] == [
        ("it", [MAX]),
        ("purchasing", [MAX]),
        ("purchasing", []),
    ]


def escalated_now(engine: Engine, ref: str, stage: str, to: str, decider: str) -> None:
    """The stage's part, whose role nobody holds now, went to `to` at once: shown, its team told,
    `decider` asked in person, and the audit trail says so once."""
    reason = f"nobody may decide {stage} (nobody holds the role {stage})"
    (pending,) = show(engine, ref)["pending"]
    assert (pending["approvers"], pending["escalated"]) == (
        [decider],
        [{"roles": [stage], "to": to, "reason": reason}],
    )
    assert list(notices(engine, ref, "no_approver", stage)) == [f"team:{to}"]
    asked = notices(engine, ref, "approval_needed", stage)
    assert asked[f"person:{decider}"]["escalation"] == {"to": to, "reason": reason}
    escalated = [d for a, _, d in trail(engine, ref, stage) if a == "escalated"]
    assert [(d["escalated_to"], d["approvers"], d["reason"]) for d in escalated] == [
        (to, [decider], reason)
    ]


def test_a_part_whose_only_approver_loses_the_role_goes_to_the_escalation_role_at_once(
    engine: Engine,
) -> None:
    ref = submit(engine, **ROLLOUT_11)
    for who in (IDA, PAUL, BOB):
        decide(engine, ref, who)
    assert show(engine, ref)["pending"][0]["approvers"] == [FIONA]
    assert notices(engine, ref, "no_approver", "finance") == {}

    # An organisation file takes finance from Fiona: management decides the part now.
    fiona = {"email": FIONA, "name": "Fiona Finance", "department": "Finance"}
    load_org_data(engine, {"people": [{**fiona, "roles": ["requester"]}]})
    escalated_now(engine, ref, "finance", "management", MAX)

    # Loaded again: nothing new (escalated once a round).
    before = written(engine)
    load_org_data(engine, {"people": [{**fiona, "roles": ["requester"]}]})
    assert written(engine)[1:] == before[1:]
    assert len([a for a, _, _ in trail(engine, ref, "finance") if a == "escalated"]) == 1

    # Fiona gets the role back: she may decide it again, and management keeps it too.
    give_roles(engine, FIONA, "finance")
    (pending,) = show(engine, ref)["pending"]
    assert pending["approvers"] == [FIONA, MAX]
    assert [(i["id"], i["role"]) for i in inbox_of(engine, MAX, NOW)] == [(ref, "management")]
    assert [(i["id"], i["role"], i["escalated"]) for i in inbox_of(engine, FIONA, NOW)] == [
        (ref, "finance", None)
    ]
    result = decide(engine, ref, FIONA)
    assert (result.role, result.message, result.request_status) == ("finance", "", "approved")


def test_a_leaver_deactivated_by_the_hr_sync_hands_their_open_part_to_the_escalation_role(
    engine: Engine,
) -> None:
    ref = submit(engine)
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL)
    assert show(engine, ref)["pending"][0]["approvers"] == [BOB]
    # Bob's last day was yesterday: the sync deactivates him, and finance decides his part.
    assert hr_sync(
        engine, email=BOB, name="Bob Budget", end_date=TODAY - timedelta(days=1)
    ).deactivated == [BOB]
    escalated_now(engine, ref, "budget_owner", "finance", FIONA)
    assert f"person:{BOB}" in notices(engine, ref, "approval_needed", "budget_owner")  # at first
    assert decide(engine, ref, FIONA).role == "finance"


# ------------------------------------------------------------------ delegation

# The sample organisation: Bob -> Carl from 2026-12-21 to 2027-01-06, days in Europe/Berlin.
DELEGATION_DAYS = [
    # (when Carl decides, in force?, the day in Berlin)
    (at(2026, 12, 20, 12), False, "2026-12-20"),  # the day before
    (at(2026, 12, 20, 23, 30), True, "2026-12-21"),  # the first day in Berlin, not yet in UTC
    (at(2026, 12, 21, 8), True, "2026-12-21"),  # the first day
    (at(2027, 1, 6, 16), True, "2027-01-06"),  # the last day
    (at(2027, 1, 6, 23, 30), False, "2027-01-07"),  # the day after in Berlin, not yet in UTC
    (at(2027, 1, 7, 9), False, "2027-01-07"),  # the day after
]


def test_a_delegate_acts_for_the_absent_approver_within_the_delegations_dates(
    engine: Engine,
) -> None:
    for n, (now, in_force, berlin_day) in enumerate(DELEGATION_DAYS):
        case = f"Carl deciding at {now.isoformat()} ({berlin_day} in Berlin)"
        ref = submit(engine, justification=f"case {n}")
        decide(engine, ref, IDA)
        decide(engine, ref, PAUL)
        if not in_force:
            refused(
                engine,
                ref,
                CARL,
                RuleViolation,
                rf"not in force today \({berlin_day}; it runs 2026-12-21\.\.2027-01-06\)",
                now=now,
            )
            assert inbox_of(engine, CARL, now) == [], case
            assert show(engine, ref, now)["pending"][0]["delegates"] == [], case
            continue

        assert show(engine, ref, now)["pending"][0]["delegates"] == [f"{CARL} (for {BOB})"], case
        result = decide(engine, ref, CARL, now=now, comment="for Bob, who is away")
        assert (result.actor, result.on_behalf_of, result.role) == (CARL, BOB, "budget_owner")
        assert (result.noop, result.request_status) == (False, "approved"), case

        # The decision and the audit trail name both: who acted, and for whom.
        detail = show(engine, ref, now)
        assert decided_by(detail, "budget_owner") == [(CARL, BOB)], case
        trail = [
            (e["action"], e["actor"], e["on_behalf_of"])
            for e in detail["timeline"]
            if e["entity_id"] == f"{ref}/budget_owner" and e["at"] == now.isoformat()
        ]
        assert trail == [("decision.approve", CARL, BOB), ("approve", CARL, BOB)], case
        with writes_nothing(engine, case):
            again = decide(engine, ref, CARL, now=now)
        assert (again.noop, again.actor, again.on_behalf_of) == (True, CARL, BOB), case


def test_a_delegate_the_rules_exclude_is_neither_asked_nor_offered_the_decision(
    engine: Engine,
) -> None:
    # Carl holds IT too: he may review one request's IT part himself, and then not its budget.
    give_roles(engine, CARL, "it")
    during = at(2026, 12, 22, 9)
    for overrides, joint_review, message in [
        ({"on_behalf_of": CARL}, IDA, "nobody approves devices for themselves"),
        ({"requester": CARL}, IDA, "nobody approves their own request"),
        ({}, CARL, "already decided stage joint_review of this request"),
    ]:
        case = f"{overrides or 'Carl reviewed IT'}"
        ref = submit(engine, justification=f"excluded delegate: {message}", **overrides)
        decide(engine, ref, joint_review, now=during)
        decide(engine, ref, PAUL, now=during)
        # Bob is asked; his delegate is not, nor listed, nor offered it in his inbox.
        asked = notices(engine, ref, "approval_needed", "budget_owner")
        assert list(asked) == [f"person:{BOB}"], case
        (pending,) = show(engine, ref, during)["pending"]
        assert (pending["approvers"], pending["delegates"], pending["escalated"]) == (
            [BOB],
            [],
            [],
        ), case
        assert ref not in [i["id"] for i in inbox_of(engine, CARL, during)], case
        refused(engine, ref, CARL, RuleViolation, message, now=during, stage_key="budget_owner")
        # Reminded, then overdue: Bob is asked again, and still not Carl.
        later = at(2026, 12, 28, 9)
        sweep(engine, at(2026, 12, 23, 9))
        sweep(engine, later)
        for event in ("reminder", "overdue"):
            assert list(notices(engine, ref, event, "budget_owner")) == [f"person:{BOB}"], case
        assert decide(engine, ref, BOB, now=later).request_status == "approved", case

    # Carl outside the exclusions is asked for Bob, as the rules let him decide.
    ref = submit(engine, justification="Carl may decide")
    decide(engine, ref, IDA, now=during)
    decide(engine, ref, PAUL, now=during)
    asked = notices(engine, ref, "approval_needed", "budget_owner")
    assert asked[f"person:{CARL}"]["on_behalf_of"] == BOB
    assert show(engine, ref, during)["pending"][0]["delegates"] == [f"{CARL} (for {BOB})"]


def test_an_escalated_part_asks_only_the_delegates_the_rules_allow(engine: Engine) -> None:
    # Bob asks for his own devices: finance decides the budget in his place. Fiona is away:
    # Ida, who reviewed the request for IT, and Hanna stand in for her.
    stand_ins = [
        {"delegator": FIONA, "delegate": who, "from": TODAY, "to": TODAY + timedelta(7)}
        for who in (IDA, HANNA)
    ]
    load_org_data(engine, {"delegations": stand_ins})
    ref = submit(engine, on_behalf_of=BOB, justification="Bob's own laptop")
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL)
    (pending,) = show(engine, ref)["pending"]
    assert (pending["approvers"], pending["delegates"]) == ([FIONA], [f"{HANNA} (for {FIONA})"])
    assert [e["to"] for e in pending["escalated"]] == ["finance"]
    assert notified(engine, ref, "no_approver") == ["team:finance"]
    asked = notices(engine, ref, "approval_needed", "budget_owner")
    assert sorted(asked) == [f"person:{FIONA}", f"person:{HANNA}"]
    assert asked[f"person:{HANNA}"]["on_behalf_of"] == FIONA
    assert ref not in [i["id"] for i in inbox_of(engine, IDA, NOW)]
    refused(
        engine,
        ref,
        IDA,
        RuleViolation,
        "already decided stage joint_review",
        stage_key="budget_owner",
    )
    result = decide(engine, ref, HANNA)
    assert (result.on_behalf_of, result.role, result.request_status) == (
        FIONA,
        "finance",
        "approved",
    )


def test_the_terms_name_only_the_delegates_the_rules_allow(engine: Engine) -> None:
    # Ida reviews for IT and stands in for Paul: purchasing's part of the same stage is not
    # hers (one person decides one part), so she is not named to confirm its terms for him.
    delegation = {"delegator": PAUL, "delegate": IDA, "from": TODAY, "to": TODAY + timedelta(7)}
    load_org_data(engine, {"delegations": [delegation]})
    ref = submit(engine)
    assert show(engine, ref)["terms"]["confirm_by"]["delegates"] == [f"{IDA} (for {PAUL})"]
    decide(engine, ref, IDA)
    confirm_by = show(engine, ref)["terms"]["confirm_by"]
    assert (confirm_by["people"], confirm_by["delegates"]) == ([PAUL, PETRA], [])
    terms_refused(engine, ref, IDA, "already decided this stage")
    # Paul approves his part without them: the terms hold up the final approval, and those who
    # may confirm them are told; Ida, his delegate but excluded, is not.
    decide(engine, ref, PAUL, confirm_terms=False)
    assert sorted(terms_notices(engine, ref)) == [f"person:{PAUL}", f"person:{PETRA}"]
    assert terms_items(engine, IDA, ref) == []


# ------------------------------------------------------------------ repeated and late decisions


def test_the_same_decision_twice_is_a_no_op(engine: Engine) -> None:
    for outcome in ("approve", "send_back", "reject"):
        ref = submit(engine, justification=f"{outcome} twice")
        first = decide(engine, ref, IDA, outcome, comment="first")
        assert first.noop is False
        version = show(engine, ref)["version"]
        with writes_nothing(engine, f"{outcome} twice"):
            second = decide(engine, ref, IDA, outcome, comment="again")
        assert (second.noop, second.outcome, second.stage) == (True, outcome, "joint_review")
        assert second.request_status == first.request_status
        detail = show(engine, ref)
        assert detail["version"] == version, outcome
        assert [d["comment"] for d in stages(detail)["joint_review"]["decisions"]] == ["first"]


def test_a_different_decision_by_the_same_person_is_refused_with_already_decided(
    engine: Engine,
) -> None:
    for first, second in [
        ("approve", "reject"),
        ("approve", "send_back"),
        ("send_back", "approve"),
        ("reject", "approve"),
    ]:
        ref = submit(engine, justification=f"{first} then {second}")
        decide(engine, ref, IDA, first)
        # When, in the organisation's time zone (NOW is 09:00 UTC: 10:00 in Berlin).
        said = (
            f"{ref} joint_review: you already decided "
            f"{first.replace('_', ' ')} on 25 Nov 2026 at 10:00 CET; a decision cannot be changed"
        )
        refused(engine, ref, IDA, AlreadyDecided, f"^{re.escape(said)}$", second)
        outcomes = [d["outcome"] for d in stages(show(engine, ref))["joint_review"]["decisions"]]
        assert outcomes == [first], (first, second)


def test_another_person_on_an_already_decided_slot_is_told_already_decided(
    engine: Engine,
) -> None:
    ref = submit(engine)
    decide(engine, ref, IDA)
    # Who decided and when, in the organisation's time zone, as the approval page says it.
    match = re.escape(
        f"{ref} joint_review: the IT part was already decided by "
        "Ida Infrastructure (approve on 25 Nov 2026 at 10:00 CET)"
    )
    refused(engine, ref, IVAN, AlreadyDecided, match)
    refused(engine, ref, IVAN, AlreadyDecided, match, stage_key="joint_review")
    refused(engine, ref, IVAN, AlreadyDecided, match, "reject")


def test_an_approver_arriving_after_their_stage_was_approved_is_told_already_decided(
    engine: Engine,
) -> None:
    ref = submit(engine)
    decide(engine, ref, IDA)
    decide(engine, ref, PAUL)  # the joint review is approved; the budget owner is next
    refused(engine, ref, PETRA, AlreadyDecided, "joint_review", stage_key="joint_review")
    refused(engine, ref, PETRA, AlreadyDecided, "joint_review")


def test_nobody_decides_a_request_that_is_rejected_approved_or_cancelled(engine: Engine) -> None:
    for ending, latecomer, now in [
        ("rejected", PAUL, NOW),
        ("approved", CARL, at(2026, 12, 22, 9)),  # Bob's delegate, after Bob decided
        ("cancelled", PAUL, NOW),
    ]:
        ref = submit(engine, justification=ending)
        if ending == "rejected":
            decide(engine, ref, IDA, "reject")
        elif ending == "approved":
            for who in (IDA, PAUL, BOB):
                decide(engine, ref, who)
        else:
            cancel(engine, ref, RITA)
        assert show(engine, ref)["status"] == ending
        refused(engine, ref, latecomer, AlreadyDecided, f"already {ending}", now=now)


# ------------------------------------------------------------------ send back and resubmit

SEND_BACK_AT_FINANCE = [(IDA, "approve"), (PAUL, "approve"), (BOB, "approve"), (FIONA, "send_back")]

# (submitted, decisions before the resubmission, what the requester changes,
#  {stage: (status, round, current-round deciders)} after it, who approves to finish)
RESUBMISSIONS: list[tuple[dict[str, Any], list[tuple[str, str]], dict[str, Any], dict, list]] = [
    (  # the stage that sent it back decides again; so does the budget owner (justification)
        {},
        [(IDA, "approve"), (PAUL, "send_back")],
        {"justification": "Nina joins the platform team in January."},
        {"joint_review": ("open", 2, []), "budget_owner": ("waiting", 2, [])},
        [IDA, PAUL, BOB],
    ),
    (  # only the justification changed: the joint review keeps both approvals
        {**ROLLOUT_11, "justification": "New build farm."},
        SEND_BACK_AT_FINANCE,
        {"justification": "The whole team moves to the new build farm."},
        {
            "joint_review": ("approved", 1, [IDA, PAUL]),  # inputs: kind, lines, needed_by, ...
            "budget_owner": ("open", 2, []),  # inputs: total, cost_centre, justification
            "finance": ("waiting", 2, []),
        },
        [BOB, FIONA],
    ),
    (  # only the date changed: the joint review decides again, the budget owner keeps his
        {**ROLLOUT_11, "justification": "Lab refresh."},
        SEND_BACK_AT_FINANCE,
        {"needed_by": (TODAY + timedelta(days=40)).isoformat()},
        {
            "joint_review": ("open", 2, []),
            "budget_owner": ("approved", 1, [BOB]),
            # finance (which sent it back) decides again too; whether it opens before the
            # joint review is approved again is left open here: its `after` is the budget owner.
        },
        [IDA, PAUL, FIONA],
    ),
]


def test_after_resubmission_only_stages_whose_inputs_changed_decide_again(engine: Engine) -> None:
    later = NOW + timedelta(days=1)
    for submitted, before, changes, expected, finish in RESUBMISSIONS:
        case = f"changed {sorted(changes)} after {before[-1]}"
        ref = submit(engine, **submitted)
        for who, outcome in before:
            decide(engine, ref, who, outcome)
        assert show(engine, ref)["status"] == "changes_requested", case

        resubmit(engine, ref, now=later, **changes)

        detail = show(engine, ref, later)
        assert (detail["status"], detail["round"]) == ("in_review", 2), case
        got = {
            key: (s["status"], s["round"], [by for by, _ in decided_by(detail, key)])
            for key, s in stages(detail).items()
            if key in expected
        }
        assert got == expected, case
        assert [p["stage"] for p in detail["pending"] if p["stage"] in expected] == [
            key for key, (status, _, _) in expected.items() if status == "open"
        ], case
        for who in finish:
            assert decide(engine, ref, who, now=later).noop is False, (case, who)
        detail = show(engine, ref, later)
        assert detail["status"] == "approved", case
        for key, (status, _, deciders) in expected.items():
            if status == "approved":  # kept approvals were not asked for again
                assert [by for by, _ in decided_by(detail, key)] == deciders, (case, key)
        if "finance" in stages(detail) and stages(detail)["finance"]["status"] != "skipped":
            assert stages(detail)["finance"]["round"] == 2, case
            assert decided_by(detail, "finance") == [(FIONA, None)], case


def test_a_resubmission_crossing_the_finance_threshold_adds_or_drops_the_finance_stage(
    engine: Engine,
) -> None:
    # 1 -> 11 laptops: 10,439.00 is above 10,000 and adds finance; 11 -> 1 drops it again.
    for quantity, new_quantity, finance in [(1, 11, "waiting"), (11, 1, "skipped")]:
        case = f"{quantity} -> {new_quantity} laptops"
        ref = submit(engine, lines=[{"sku": "LAPTOP-STD-14", "quantity": quantity}])
        decide(engine, ref, IDA, "send_back", comment="how many?")
        resubmit(engine, ref, lines=[{"sku": "LAPTOP-STD-14", "quantity": new_quantity}])
        detail = show(engine, ref)
        assert detail["total"] == f"{949 * new_quantity}.00", case
        assert statuses(detail)["finance"] == finance, case
        assert statuses(detail)["management"] == "skipped", case
        for who in (IDA, PAUL, BOB):
            decide(engine, ref, who)
        if finance == "waiting":
            (pending,) = show(engine, ref)["pending"]
            assert (pending["stage"], pending["approvers"]) == ("finance", [FIONA]), case
            decide(engine, ref, FIONA)
        detail = show(engine, ref)
        assert detail["status"] == "approved", case
        assert decided_by(detail, "finance") == ([(FIONA, None)] if finance == "waiting" else [])


def test_rejecting_or_sending_back_without_saying_why_is_refused_and_writes_nothing(
    engine: Engine,
) -> None:
    ref = submit(engine)
    for outcome, message in (
        ("send_back", "is needed to send a request back: say what the requester should change"),
        ("reject", "is needed to reject a request: say why"),
    ):
        for comment in ("", "   ", "\n\t"):
            refused(engine, ref, PAUL, InputError, f"comment: {message}", outcome, comment=comment)
    assert show(engine, ref)["status"] == "in_review"
    # An approval may go without one.
    decide(engine, ref, IDA, "approve", comment="")
    sent = decide(engine, ref, PAUL, "send_back", comment="Use the standard laptop.")
    assert sent.request_status == "changes_requested"
    (joint,) = [s for s in show(engine, ref)["stages"] if s["stage"] == "joint_review"]
    assert joint["decisions"][-1]["comment"] == "Use the standard laptop."


def test_only_the_requester_can_resubmit_and_only_after_a_send_back(engine: Engine) -> None:
    ref = submit(engine)
    with refusal(engine, TransitionNotAllowed, "is in_review: cannot resubmit", "in review"):
        resubmit(engine, ref, justification="again")
    decide(engine, ref, PAUL, "send_back")
    for who in (NINA, PAUL, IDA, BOB):
        with refusal(engine, RuleViolation, f"only the requester of {ref}", who):
            resubmit(engine, ref, who=who, justification=f"changed by {who}")
    detail = show(engine, ref)
    assert (detail["status"], detail["justification"]) == (
        "changes_requested",
        "Nina joins the platform team.",
    )
    resubmit(engine, ref, who=RITA, justification="changed by Rita")
    detail = show(engine, ref)
    assert (detail["status"], detail["justification"]) == ("in_review", "changed by Rita")


# ------------------------------------------------------------------ reject and cancel


def test_reject_ends_the_request(engine: Engine) -> None:
    for before, rejecter, expected in [
        ([], IDA, {"joint_review": "rejected", "budget_owner": "cancelled"}),
        ([IDA, PAUL], BOB, {"joint_review": "approved", "budget_owner": "rejected"}),
    ]:
        ref = submit(engine, justification=f"rejected by {rejecter}")
        for who in before:
            decide(engine, ref, who)
        result = decide(engine, ref, rejecter, "reject", comment="not in the budget")
        assert (result.request_status, result.stage_status) == ("rejected", "rejected")
        detail = show(engine, ref)
        assert detail["status"] == "rejected" and detail["pending"] == [], rejecter
        assert statuses(detail) == {**expected, "finance": "skipped", "management": "skipped"}
        for who in {IVAN, PETRA, BOB, FIONA} - {rejecter}:
            refused(engine, ref, who, AlreadyDecided, "already rejected")
        with refusal(engine, TransitionNotAllowed, "is rejected: cannot cancel; it is final", ref):
            cancel(engine, ref, RITA)
        with refusal(engine, TransitionNotAllowed, "is rejected: cannot resubmit", ref):
            resubmit(engine, ref, justification="please")
        assert notified(engine, ref, "rejected") == [f"person:{RITA}"]


def test_cancel_by_the_requester_or_purchasing_and_refused_for_someone_else(
    engine: Engine,
) -> None:
    for who, allowed in [
        (RITA, True),  # the requester
        (NINA, False),  # the person the devices are for
        (PETRA, True),  # purchasing
        (MAX, True),  # management
        (IVAN, False),  # IT
        (HANNA, False),  # HR
        (BOB, False),  # the budget owner
        (SARA, False),  # anyone else
    ]:
        ref = submit(engine, justification=f"cancelled by {who}")
        decide(engine, ref, IDA)
        if not allowed:
            with refusal(
                engine, RuleViolation, "only the requester, purchasing or management", who
            ):
                cancel(engine, ref, who)
            assert show(engine, ref)["status"] == "in_review", who
            continue
        cancel(engine, ref, who)
        detail = show(engine, ref)
        assert detail["status"] == "cancelled" and detail["pending"] == [], who
        assert statuses(detail) == {
            "joint_review": "cancelled",
            "budget_owner": "cancelled",
            "finance": "skipped",
            "management": "skipped",
        }
        (event,) = [
            e for e in detail["timeline"] if e["action"] == "cancel" and e["entity"] == "request"
        ]
        assert (event["actor"], event["from"], event["to"]) == (who, "in_review", "cancelled")
        assert notified(engine, ref, "cancelled") == [f"person:{RITA}"]
        refused(engine, ref, PAUL, AlreadyDecided, "already cancelled")


def test_an_ordered_request_can_no_longer_be_cancelled(engine: Engine) -> None:
    ref = submit(engine)
    for who in (IDA, PAUL, BOB):
        decide(engine, ref, who)
    with transaction(engine) as session:
        actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    for who in (RITA, PETRA):
        with refusal(engine, TransitionNotAllowed, "is ordered: cannot cancel", who):
            cancel(engine, ref, who)
    assert show(engine, ref)["status"] == "ordered"


# ------------------------------------------------------------------ the inbox


def test_the_inbox_shows_a_delegates_items_on_behalf_of_the_approver_sorted_by_deadline(
    engine: Engine,
) -> None:
    first = submit(engine, justification="first")
    second = submit(engine, justification="second")
    third = submit(engine, justification="third")
    # The budget stage of the second request opens earlier than that of the first.
    for who in (IDA, PAUL):
        decide(engine, first, who, now=at(2026, 12, 21, 14))
        decide(engine, second, who, now=at(2026, 12, 21, 8))

    during = at(2026, 12, 22, 9)
    items = inbox_of(engine, CARL, during)
    assert [(i["id"], i["stage"], i["role"], i["on_behalf_of"]) for i in items] == [
        (second, "budget_owner", "budget_owner", BOB),
        (first, "budget_owner", "budget_owner", BOB),
    ]
    dues = [i["due_at"] for i in items]
    assert dues[0] < dues[1]
    assert not any(i["overdue"] for i in items)
    assert all(i["overdue"] for i in inbox_of(engine, CARL, at(2027, 1, 5, 9)))

    # Bob still sees his own items, as himself; Carl sees nothing outside the dates.
    assert [(i["id"], i["on_behalf_of"]) for i in inbox_of(engine, BOB, during)] == [
        (second, None),
        (first, None),
    ]
    assert inbox_of(engine, CARL, at(2026, 12, 20, 9)) == []
    assert inbox_of(engine, CARL, at(2027, 1, 7, 9)) == []
    # The third request still waits for the joint review: IT and purchasing, not Carl.
    assert [(i["id"], i["stage"], i["role"]) for i in inbox_of(engine, IVAN, during)] == [
        (third, "joint_review", "it")
    ]
    # Someone no longer active has nothing waiting: they may decide nothing.
    ivan = {"email": IVAN, "name": "Ivan Install", "department": "IT", "roles": ["it"]}
    load_org_data(engine, {"people": [{**ivan, "active": False}]})
    assert inbox_of(engine, IVAN, during) == []
    refused(engine, third, IVAN, RuleViolation, "is not active and cannot decide", now=during)
