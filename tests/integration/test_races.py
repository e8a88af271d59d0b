"""Decisions and submissions racing from threads, each in its own transaction (SQLite and PostgreSQL).

One wins, the others are told "already decided" (or get the same result back): never a
database error, never a deadlock, never a second decision row, and the audit chain holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from models import actions, audit, pipeline
from models.audit import AuditEvent
from models.db import add_unless_taken, is_sqlite, transaction
from models.errors import AlreadyDecided, InputError, RuleViolation
from models.outbox import Notification
from models.requests import SEAT, Decision, Request
from tests.factories import BOB, IDA, NOW, PAUL, decide, draft, load_org_data, show, submit

THREADS = 10
JOIN_TIMEOUT = 45.0  # seconds for a whole race; SQLite's busy timeout is 30 s

# A pipeline whose first stage is one approval from anyone in IT, then the budget owner.
RACE_PIPELINE = """\
name: race
version: 1
currency: EUR
stages:
  - id: it_check
    name: IT check
    roles: [it]
    mode: any
    inputs: [kind, lines]
  - id: budget_owner
    name: Budget owner approval
    roles: [budget_owner]
    mode: any
"""

IT_PEOPLE = [f"it{n:02d}@example.com" for n in range(THREADS)]


def race(count: int, work: Callable[[int, Session], Any], engine: Engine) -> list[tuple[str, Any]]:
    """Run work(i, session) in `count` threads, each in its own transaction, released together.

    Returns [("ok", value) | ("error", exception)] per thread. On PostgreSQL every thread
    connects and starts its transaction before the barrier, so all of them hit the database
    at once; SQLite writers take the lock at BEGIN IMMEDIATE, so they wait before it.
    """
    barrier = threading.Barrier(count, timeout=JOIN_TIMEOUT)
    results: list[tuple[str, Any]] = [("missing", None)] * count

    def attempt(index: int) -> Any:
        if is_sqlite(engine):
            barrier.wait()
            with transaction(engine) as session:
                return work(index, session)
        with transaction(engine) as session:
            session.execute(text("SELECT 1"))
            barrier.wait()
            return work(index, session)

    def run(index: int) -> None:
        try:
            results[index] = ("ok", attempt(index))
        except BaseException as exc:  # reported to the test, never swallowed
            results[index] = ("error", exc)

    threads = [
        threading.Thread(target=run, args=(i,), name=f"race-{i}", daemon=True) for i in range(count)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"still running after {JOIN_TIMEOUT}s (a deadlock?): {stuck}"
    return results


def approve(session: Session, ref: str, who: str, **kw: Any) -> actions.DecisionResult:
    return actions.decide(session, ref=ref, actor_email=who, outcome="approve", now=NOW, **kw)


def describe(results: list[tuple[str, Any]]) -> list[str]:
    return [
        f"{kind}: {type(value).__name__}: {value}" if kind == "error" else f"{kind}: {value}"
        for kind, value in results
    ]


def counts(engine: Engine, ref: str, stage: str) -> tuple[int, int]:
    """(decision rows of the request, decision.* audit rows of the stage)."""
    request_id = int(ref[3:])
    with transaction(engine, readonly=True) as session:
        decisions = session.exec(
            select(func.count()).select_from(Decision).where(Decision.request_id == request_id)
        ).one()
        audits = session.exec(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.entity_id == f"{ref}/{stage}",
                col(AuditEvent.action).startswith("decision."),
            )
        ).one()
    return decisions, audits


def assert_chain_intact(engine: Engine) -> None:
    with transaction(engine, readonly=True) as session:
        result = audit.verify(session)
    assert result.ok, result.problem


def add_people(engine: Engine, role: str, emails: list[str]) -> None:
    """More people holding `role`, through an organisation file."""
    people = [
        {"email": email, "name": f"{role} person {n}", "department": role, "roles": [role]}
        for n, email in enumerate(emails)
    ]
    load_org_data(engine, {"people": people})


def split(results: list[tuple[str, Any]]) -> tuple[list[Any], list[BaseException]]:
    """(successful results, exceptions); fails if any exception is not a refusal by a rule."""
    winners = [value for kind, value in results if kind == "ok"]
    losers = [value for kind, value in results if kind == "error"]
    assert len(winners) + len(losers) == len(results), describe(results)
    database_errors = [e for e in losers if not isinstance(e, RuleViolation)]
    assert database_errors == [], describe(results)  # no IntegrityError, OperationalError, ...
    return winners, losers


def stage_events(engine: Engine, ref: str, stage: str) -> list[str]:
    """The lifecycle moves of one stage, oldest first: ['open', 'approve', ...]."""
    with transaction(engine, readonly=True) as session:
        return list(
            session.exec(
                select(AuditEvent.action)
                .where(
                    AuditEvent.entity_id == f"{ref}/{stage}",
                    col(AuditEvent.to_status).is_not(None),
                )
                .order_by(col(AuditEvent.seq))
            ).all()
        )


def test_approvers_racing_for_one_any_of_slot_get_one_winner_and_already_decided(
    engine: Engine,
) -> None:
    add_people(engine, "it", IT_PEOPLE)
    with transaction(engine) as session:
        pipeline.install(session, text=RACE_PIPELINE, source="race.yaml", actor="tests", at=NOW)
    ref = submit(engine)
    (pending,) = show(engine, ref)["pending"]
    assert pending["stage"] == "it_check" and set(IT_PEOPLE) <= set(pending["approvers"])

    results = race(THREADS, lambda i, session: approve(session, ref, IT_PEOPLE[i]), engine)

    winners, losers = split(results)
    assert len(winners) == 1, describe(results)
    assert (winners[0].noop, winners[0].stage) == (False, "it_check")
    assert counts(engine, ref, "it_check") == (1, 1)
    assert stage_events(engine, ref, "it_check") == ["open", "approve"]
    assert stage_events(engine, ref, "budget_owner") == ["open"]
    detail = show(engine, ref)
    (it_check,) = [s for s in detail["stages"] if s["stage"] == "it_check"]
    assert it_check["status"] == "approved"
    assert [d["by"] for d in it_check["decisions"]] == [winners[0].actor]
    assert_chain_intact(engine)
    # The others are told that the stage was decided, not that they are no approver.
    assert all(isinstance(e, AlreadyDecided) for e in losers), describe(results)


def test_approvers_racing_for_the_joint_reviews_it_slot_get_one_winner(engine: Engine) -> None:
    add_people(engine, "it", IT_PEOPLE)
    ref = submit(engine)

    results = race(
        THREADS,
        lambda i, session: approve(session, ref, IT_PEOPLE[i], stage_key="joint_review"),
        engine,
    )

    winners, losers = split(results)
    assert len(winners) == 1, describe(results)
    assert (winners[0].role, winners[0].noop) == ("it", False)
    assert all(isinstance(e, AlreadyDecided) for e in losers), describe(results)
    assert counts(engine, ref, "joint_review") == (1, 1)
    assert_chain_intact(engine)
    # The purchasing part is still open, for purchasing only.
    (pending,) = show(engine, ref)["pending"]
    assert (pending["stage"], pending["roles"]) == ("joint_review", ["purchasing"])
    decide(engine, ref, PAUL)
    assert counts(engine, ref, "joint_review") == (2, 2)


def test_racing_for_both_slots_of_the_joint_review_approves_it_once(engine: Engine) -> None:
    half = THREADS // 2
    buyers = [f"buyer{n:02d}@example.com" for n in range(half)]
    add_people(engine, "it", IT_PEOPLE[:half])
    add_people(engine, "purchasing", buyers)
    ref = submit(engine)
    people = [*IT_PEOPLE[:half], *buyers]

    results = race(
        len(people),
        lambda i, session: approve(session, ref, people[i], stage_key="joint_review"),
        engine,
    )

    winners, losers = split(results)
    assert sorted(w.role for w in winners) == ["it", "purchasing"], describe(results)
    assert all(isinstance(e, AlreadyDecided) for e in losers), describe(results)
    assert counts(engine, ref, "joint_review") == (2, 2)
    # The stage was approved once and the budget owner's stage opened once.
    assert stage_events(engine, ref, "joint_review") == ["open", "approve"]
    assert stage_events(engine, ref, "budget_owner") == ["open"]
    with transaction(engine, readonly=True) as session:
        asked = session.exec(
            select(func.count())
            .select_from(Notification)
            .where(
                Notification.event == "approval_needed", Notification.audience == f"person:{BOB}"
            )
        ).one()
    assert asked == 1
    assert_chain_intact(engine)


def test_one_approver_sending_the_same_decision_from_many_threads_decides_once(
    engine: Engine,
) -> None:
    ref = submit(engine)

    results = race(THREADS, lambda i, session: approve(session, ref, IDA), engine)

    winners, losers = split(results)
    assert losers == [], describe(results)
    assert sorted(w.noop for w in winners) == [False] + [True] * (THREADS - 1)
    assert all((w.stage, w.role, w.actor) == ("joint_review", "it", IDA) for w in winners)
    assert counts(engine, ref, "joint_review") == (1, 1)
    assert_chain_intact(engine)


def test_the_same_submission_racing_from_threads_creates_one_request(engine: Engine) -> None:
    def submit_once(_: int, session: Session) -> actions.Submitted:
        (result,) = actions.submit(session, drafts=[draft(idempotency_key="hr-4711")], now=NOW)
        return result

    results = race(THREADS, submit_once, engine)

    winners, losers = split(results)
    assert losers == [], describe(results)
    assert len({w.ref for w in winners}) == 1
    assert sorted(w.created for w in winners) == [False] * (THREADS - 1) + [True]
    with transaction(engine, readonly=True) as session:
        rows = session.exec(select(Request)).all()
    assert [(r.idempotency_key, r.status) for r in rows] == [("hr-4711", "in_review")]
    detail = show(engine, winners[0].ref)
    assert [e["action"] for e in detail["timeline"] if e["entity"] == "request"] == [
        "submit",
        "start_review",
    ]
    assert_chain_intact(engine)


def test_one_key_racing_with_different_contents_creates_one_request_and_refuses_the_others(
    engine: Engine,
) -> None:
    def submit_own(i: int, session: Session) -> actions.Submitted:
        mine = draft(idempotency_key="hr-4712", justification=f"Laptop for hire {i}")
        (result,) = actions.submit(session, drafts=[mine], now=NOW)
        return result

    results = race(THREADS, submit_own, engine)

    winners = [value for kind, value in results if kind == "ok"]
    losers = [value for kind, value in results if kind == "error"]
    assert len(winners) == 1 and winners[0].created, describe(results)
    assert len(losers) == THREADS - 1, describe(results)
    for refused in losers:
        assert isinstance(refused, InputError), describe(results)
        assert f"'hr-4712' was already used for {winners[0].ref} with different content" in str(
            refused
        )
    with transaction(engine, readonly=True) as session:
        assert len(session.exec(select(Request)).all()) == 1
    assert_chain_intact(engine)


def test_a_decision_whose_seat_is_taken_writes_nothing_and_leaves_the_transaction_usable(
    engine: Engine,
) -> None:
    """The seat (stage, round, slot) is the database's unique key: a decision arriving for a
    seat taken meanwhile is refused by it in the same INSERT, with no database error that would
    abort the transaction (PostgreSQL) and no second row."""
    ref = submit(engine)
    decide(engine, ref, IDA)
    with transaction(engine) as session:
        (taken,) = session.exec(select(Decision).where(Decision.request_id == int(ref[3:]))).all()
        again = Decision(
            **{k: v for k, v in taken.model_dump().items() if k != "id"} | {"comment": "late"}
        )
        assert add_unless_taken(session, again, SEAT) is False
        assert again.id is None
        # The transaction goes on: the next statement runs and the commit keeps what it wrote.
        session.exec(select(func.count()).select_from(Decision)).one()
        audit.append(session, actor=IDA, entity="request", entity_id=ref, action="checked")
    assert counts(engine, ref, "joint_review") == (1, 1)
    with transaction(engine, readonly=True) as session:
        assert session.exec(select(Decision.comment)).all() == [""]
    assert_chain_intact(engine)
