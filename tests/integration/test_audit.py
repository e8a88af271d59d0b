"""The audit trail and the outbox on SQLite and PostgreSQL.

Every action appends hash-chained rows; the database refuses UPDATE and DELETE on them;
`verify` (and `procure audit verify`) walks the chain and names the first row that is wrong.
To tamper at all, the tests first drop the append-only trigger, as a malicious DBA would.
Notifications are queued in the transaction of the change that causes them, once per key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, delete, func, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col, select

from models import actions, audit, outbox
from models.audit import GENESIS, AuditEvent, AuditHead, compute_hash, verify
from models.db import make_engine, transaction
from models.errors import RuleViolation
from models.outbox import Notice, Notification
from models.requests import Request
from procure.cli import main
from tests.conftest import Databases
from tests.factories import IDA, NOW, PAUL, RITA, decide, draft, submit

AUDIT = AuditEvent.__table__  # type: ignore[attr-defined]
HEAD = AuditHead.__table__  # type: ignore[attr-defined]
REQUEST = Request.__table__  # type: ignore[attr-defined]
APPEND_ONLY = "audit_event is append-only"

# What a malicious DBA drops before tampering (the names the 0002 migration created).
DROP_TRIGGERS = {
    "sqlite": [
        "DROP TRIGGER audit_event_no_update",
        "DROP TRIGGER audit_event_no_delete",
        "DROP TRIGGER audit_head_no_delete",
    ],
    "postgres": [
        "DROP TRIGGER audit_event_append_only ON audit_event",
        "DROP TRIGGER audit_head_no_delete ON audit_head",
    ],
}


def trail(engine: Engine) -> list[AuditEvent]:
    with transaction(engine, readonly=True) as session:
        return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))).all())


def head(engine: Engine) -> AuditHead:
    with transaction(engine, readonly=True) as session:
        found = session.get(AuditHead, 1)
        assert found is not None
        return found


def count(session: Session, model: Any) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def verify_trail(engine: Engine) -> Any:
    with transaction(engine, readonly=True) as session:
        return verify(session)


def tamper(engine: Engine, backend: str, change: Callable[[Connection], None]) -> None:
    """Drop the append-only trigger and change the trail, in one committed transaction."""
    with engine.begin() as connection:
        for statement in DROP_TRIGGERS[backend]:
            connection.exec_driver_sql(statement)
        change(connection)


def row(connection: Connection, seq: int) -> dict[str, Any]:
    return dict(connection.execute(AUDIT.select().where(AUDIT.c.seq == seq)).mappings().one())


@dataclass(frozen=True)
class SharedTrail:
    """One database per backend for the tests that leave it as they found it."""

    backend: str
    engine: Engine
    rows: int  # n: the number of audit rows
    k: int  # the request's submit row: a row in the middle of the trail


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedTrail]:
    """The sample database plus a submitted request and one decision on it, for the module.

    Tests on it roll back whatever they do (a fresh PostgreSQL database for each of them
    would cost more time than the checks themselves).
    """
    databases = Databases(request.param, request, tmp_path_factory.mktemp("audit"))
    try:
        engine = databases.engine("sample")
        ref = submit(engine)
        decide(engine, ref, IDA)
        events = trail(engine)
        k = next(e.seq for e in events if e.action == "submit")
        yield SharedTrail(request.param, engine, len(events), k)
    finally:
        databases.close()


@contextmanager
def tampered(shared: SharedTrail, change: Callable[[Connection], None]) -> Iterator[Session]:
    """Drop the trigger and tamper inside a transaction; yield a session that sees the
    tampered trail; roll everything back (trigger included) afterwards."""
    with shared.engine.connect() as connection:
        outer = connection.begin()
        try:
            for statement in DROP_TRIGGERS[shared.backend]:
                connection.exec_driver_sql(statement)
            change(connection)
            with Session(bind=connection) as session:
                yield session
        finally:
            outer.rollback()


TRIGGERS = {
    "sqlite": (
        "SELECT name FROM sqlite_master WHERE type = 'trigger' "
        "AND tbl_name IN ('audit_event', 'audit_head') ORDER BY name",
        ["audit_event_no_delete", "audit_event_no_update", "audit_head_no_delete"],
    ),
    "postgres": (
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
        "AND tgrelid IN ('audit_event'::regclass, 'audit_head'::regclass) ORDER BY tgname",
        [
            "audit_event_append_only",
            "audit_event_no_truncate",
            "audit_head_no_delete",
            "audit_head_no_truncate",
        ],
    ),
}


def assert_untouched(shared: SharedTrail) -> None:
    """The shared trail is as the fixture built it: every row verifies, the triggers are back."""
    result = verify_trail(shared.engine)
    assert (result.ok, result.checked) == (True, shared.rows)
    query, expected = TRIGGERS[shared.backend]
    with shared.engine.connect() as connection:
        assert list(connection.exec_driver_sql(query).scalars()) == expected


# ------------------------------------------------------------------ appending


def test_every_action_appends_rows_chained_to_the_row_before(engine: Engine) -> None:
    before = trail(engine)
    ref = submit(engine)
    after_submit = trail(engine)
    decide(engine, ref, IDA)
    after_decision = trail(engine)

    submitted = after_submit[len(before) :]
    decided = after_decision[len(after_submit) :]
    assert ("request", ref, "submit", RITA) in [
        (e.entity, e.entity_id, e.action, e.actor) for e in submitted
    ]
    assert ("request", ref, "start_review") in [
        (e.entity, e.entity_id, e.action) for e in submitted
    ]
    assert [(e.entity, e.entity_id, e.action, e.actor) for e in decided] == [
        ("stage", f"{ref}/joint_review", "decision.approve", IDA)
    ]

    previous_hash = GENESIS
    for expected_seq, event in enumerate(after_decision, start=1):
        assert event.seq == expected_seq
        assert event.prev_hash == previous_hash
        assert event.hash == compute_hash(event)
        previous_hash = event.hash
    last = after_decision[-1]
    assert (head(engine).seq, head(engine).hash) == (last.seq, last.hash)


def _note(session: Session, what: str) -> None:
    audit.append(session, actor=IDA, entity="note", entity_id=what, action="note", at=NOW)


def test_events_wait_for_one_insert_yet_every_read_in_the_transaction_sees_them(
    engine: Engine,
) -> None:
    """A transaction's events are written together (one INSERT, one head update at commit),
    but a query on the trail inside the same transaction finds them all, in order."""
    before = len(trail(engine))
    with transaction(engine) as session:
        _note(session, "a")
        _note(session, "b")
        seen = [
            e.entity_id
            for e in session.exec(select(AuditEvent).where(AuditEvent.entity == "note")).all()
        ]
        assert seen == ["a", "b"]
        _note(session, "c")
        raw = session.execute(text("SELECT count(*) FROM audit_event WHERE entity = 'note'"))
        assert raw.scalar_one() == 3  # a text() query is a read the ORM cannot see into
    after = trail(engine)
    assert [e.entity_id for e in after[before:]] == ["a", "b", "c"]
    assert (head(engine).seq, head(engine).hash) == (after[-1].seq, after[-1].hash)
    assert verify_trail(engine).ok


def test_a_savepoint_rolled_back_takes_its_events_and_keeps_the_ones_before(
    engine: Engine,
) -> None:
    before = len(trail(engine))
    with transaction(engine) as session:
        _note(session, "kept-before")  # still waiting when the savepoint begins
        savepoint = session.begin_nested()
        _note(session, "dropped")
        # A read inside the savepoint writes both waiting rows, inside the savepoint.
        assert count(session, AuditEvent) == before + 2
        savepoint.rollback()
        _note(session, "kept-after")
        with session.begin_nested():  # a savepoint released keeps its events
            _note(session, "kept-released")
    after = trail(engine)
    assert [e.entity_id for e in after[before:]] == ["kept-before", "kept-after", "kept-released"]
    assert [e.seq for e in after] == list(range(1, len(after) + 1))
    assert head(engine).seq == after[-1].seq
    assert verify_trail(engine).ok


def test_a_transaction_rolled_back_writes_no_event_and_leaves_the_head(engine: Engine) -> None:
    before = trail(engine)
    with pytest.raises(RuntimeError), transaction(engine) as session:
        _note(session, "never")
        assert count(session, AuditEvent) == len(before) + 1
        raise RuntimeError("fails after appending")
    assert [e.hash for e in trail(engine)] == [e.hash for e in before]
    assert head(engine).seq == before[-1].seq


def test_an_action_that_is_refused_appends_nothing(engine: Engine) -> None:
    ref = submit(engine)
    before = trail(engine)
    with pytest.raises(RuleViolation, match="nobody approves their own request"):
        decide(engine, ref, RITA)
    assert [e.hash for e in trail(engine)] == [e.hash for e in before]
    assert head(engine).seq == before[-1].seq


def test_verify_passes_on_an_untouched_trail(shared: SharedTrail) -> None:
    result = verify_trail(shared.engine)
    assert result.ok is True
    assert result.checked == shared.rows > 40
    assert (result.problem, result.seq) == (None, None)


# ------------------------------------------------------------------ the database refuses changes


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_event SET actor = 'mallory@example.com' WHERE seq = 2",
        "UPDATE audit_event SET details = '{}' WHERE seq = 2",
        "UPDATE audit_event SET hash = prev_hash",
        "DELETE FROM audit_event WHERE seq = 2",
        "DELETE FROM audit_event WHERE seq = (SELECT MAX(seq) FROM audit_event)",
        "DELETE FROM audit_event",
    ],
)
def test_the_database_refuses_to_update_or_delete_audit_rows(
    shared: SharedTrail, statement: str
) -> None:
    with shared.engine.connect() as connection:
        outer = connection.begin()
        try:
            with pytest.raises(DBAPIError, match=APPEND_ONLY):
                connection.exec_driver_sql(statement)
        finally:
            outer.rollback()
    assert_untouched(shared)


def test_the_database_refuses_to_empty_the_audit_table(shared: SharedTrail) -> None:
    # SQLite has no TRUNCATE: its "truncate optimisation" is a DELETE without WHERE, which the
    # trigger disables. PostgreSQL's TRUNCATE skips row triggers: a statement trigger refuses it.
    statement = {"sqlite": "DELETE FROM audit_event", "postgres": "TRUNCATE audit_event"}
    with shared.engine.connect() as connection:
        outer = connection.begin()
        try:
            with pytest.raises(DBAPIError, match=APPEND_ONLY):
                connection.exec_driver_sql(statement[shared.backend])
        finally:
            outer.rollback()
    assert_untouched(shared)


def test_changing_an_audit_row_through_the_orm_is_refused_too(shared: SharedTrail) -> None:
    with pytest.raises(DBAPIError, match=APPEND_ONLY), transaction(shared.engine) as session:
        event = session.get(AuditEvent, 1)
        assert event is not None
        event.actor = "mallory@example.com"
        session.add(event)
    assert trail(shared.engine)[0].actor == "tests"
    assert_untouched(shared)


# ------------------------------------------------------------------ tampering is found


@dataclass(frozen=True)
class Tamper:
    """A change to the trail made at row k (the request's submit row) of n rows."""

    change: Callable[[Connection, int, int], None]
    first_bad: Callable[[int, int], int]
    message: Callable[[int, int], str]


def _set(column: str, value: Any) -> Callable[[Connection, int, int], None]:
    def change(connection: Connection, k: int, n: int) -> None:
        connection.execute(update(AUDIT).where(AUDIT.c.seq == k).values({column: value}))

    return change


def _shift_time(connection: Connection, k: int, n: int) -> None:
    at = row(connection, k)["at"]
    connection.execute(update(AUDIT).where(AUDIT.c.seq == k).values(at=at + timedelta(seconds=1)))


def _delete(where: Callable[[int, int], Any]) -> Callable[[Connection, int, int], None]:
    def change(connection: Connection, k: int, n: int) -> None:
        connection.execute(delete(AUDIT).where(where(k, n)))

    return change


def _swap(columns: Callable[[dict[str, Any]], list[str]]) -> Callable[[Connection, int, int], None]:
    def change(connection: Connection, k: int, n: int) -> None:
        first, second = row(connection, k), row(connection, k + 1)
        names = columns(first)
        connection.execute(
            update(AUDIT).where(AUDIT.c.seq == k).values({c: second[c] for c in names})
        )
        connection.execute(
            update(AUDIT).where(AUDIT.c.seq == k + 1).values({c: first[c] for c in names})
        )

    return change


def _cut_the_end_and_move_the_head(connection: Connection, k: int, n: int) -> None:
    # The last two rows go, and the head is set to the row before them: a chain that is
    # consistent in itself, only shorter than what happened.
    connection.execute(delete(AUDIT).where(AUDIT.c.seq > n - 2))
    last = row(connection, n - 2)
    connection.execute(update(HEAD).values(seq=last["seq"], hash=last["hash"]))


def _wipe(connection: Connection, k: int, n: int) -> None:
    connection.execute(delete(AUDIT))
    connection.execute(delete(HEAD))


def _status_by_hand(connection: Connection, k: int, n: int) -> None:
    connection.execute(update(REQUEST).where(REQUEST.c.id == 1).values(status="approved"))


def _forge_one_hash(connection: Connection, k: int, n: int) -> None:
    # A cleverer forger changes the actor and recomputes that row's own hash: the row is
    # consistent in itself, but the next row still links to the old hash.
    forged = AuditEvent(**{**row(connection, k), "actor": "mallory@example.com"})
    connection.execute(
        update(AUDIT).where(AUDIT.c.seq == k).values(actor=forged.actor, hash=compute_hash(forged))
    )


CONTENT = ["at", "actor", "on_behalf_of", "entity", "entity_id", "request_id", "action"]
CONTENT += ["from_status", "to_status", "details"]

TAMPERS = [
    pytest.param(
        Tamper(
            _set("details", {"total": "1.00", "currency": "EUR"}),
            lambda k, n: k,
            lambda k, n: (
                f"audit row {k} (request PR-0001, submit): hash does not match its contents"
            ),
        ),
        id="details-changed",
    ),
    pytest.param(
        Tamper(
            _set("actor", "mallory@example.com"),
            lambda k, n: k,
            lambda k, n: (
                f"audit row {k} (request PR-0001, submit): hash does not match its contents"
            ),
        ),
        id="actor-changed",
    ),
    pytest.param(
        Tamper(
            _shift_time,
            lambda k, n: k,
            lambda k, n: (
                f"audit row {k} (request PR-0001, submit): hash does not match its contents"
            ),
        ),
        id="time-changed",
    ),
    pytest.param(
        Tamper(
            _delete(lambda k, n: AUDIT.c.seq == k),
            lambda k, n: k,
            lambda k, n: f"audit row {k} is missing (next row found is {k + 1})",
        ),
        id="middle-row-deleted",
    ),
    pytest.param(
        Tamper(
            _delete(lambda k, n: AUDIT.c.seq == 1),
            lambda k, n: 1,
            lambda k, n: "audit row 1 is missing (next row found is 2)",
        ),
        id="first-row-deleted",
    ),
    pytest.param(
        Tamper(
            _delete(lambda k, n: AUDIT.c.seq > n - 2),
            lambda k, n: n - 1,
            lambda k, n: (
                f"the chain ends at row {n - 2} but its head records row {n}: "
                "rows at the end were removed"
            ),
        ),
        id="last-rows-deleted",
    ),
    pytest.param(
        Tamper(
            _swap(lambda r: [c for c in r if c != "seq"]),
            lambda k, n: k,
            lambda k, n: f"previous-hash link does not match row {k - 1}",
        ),
        id="two-rows-swapped-whole",
    ),
    pytest.param(
        Tamper(
            _swap(lambda r: CONTENT),
            lambda k, n: k,
            lambda k, n: "hash does not match its contents",
        ),
        id="two-rows-contents-swapped",
    ),
    pytest.param(
        Tamper(
            _forge_one_hash,
            lambda k, n: k + 1,
            lambda k, n: (
                f"audit row {k + 1} (stage PR-0001/finance, skip): previous-hash link "
                f"does not match row {k}"
            ),
        ),
        id="one-hash-recomputed",
    ),
    # A chain consistent in itself can still be shorter than what happened: every request,
    # stage and device must be explained by it (its version counts its status changes).
    pytest.param(
        Tamper(
            _cut_the_end_and_move_the_head,
            lambda k, n: n - 1,
            lambda k, n: "but the trail records",
        ),
        id="last-rows-deleted-and-head-moved",
    ),
    pytest.param(
        Tamper(
            _wipe,
            lambda k, n: 1,
            lambda k, n: (
                "request PR-0001 is in_review at version 3, but the trail records "
                "no status change: audit rows were removed, or the request was changed by hand"
            ),
        ),
        id="trail-wiped",
    ),
    pytest.param(
        Tamper(
            _status_by_hand,
            lambda k, n: n + 1,
            lambda k, n: (
                "request PR-0001 is approved at version 3, but the trail records "
                "2 status changes ending at in_review"
            ),
        ),
        id="status-changed-by-hand",
    ),
]


@pytest.mark.parametrize("how", TAMPERS)
def test_verify_names_the_first_tampered_row(shared: SharedTrail, how: Tamper) -> None:
    k, n = shared.k, shared.rows
    assert 1 < k < n - 2  # a row in the middle
    with tampered(shared, lambda connection: how.change(connection, k, n)) as session:
        result = verify(session)
    assert result.ok is False
    assert result.seq == how.first_bad(k, n)
    assert result.checked == result.seq - 1  # every row before the first bad one is fine
    assert result.problem is not None
    assert how.message(k, n) in result.problem
    assert_untouched(shared)  # rolled back: the next test finds the trail intact


# ------------------------------------------------------------------ procure audit verify


def test_procure_audit_verify_reports_an_intact_trail_and_exits_0(
    databases: Databases, capsys: pytest.CaptureFixture[str]
) -> None:
    url = databases.url("sample")
    engine = make_engine(url)
    databases.engines.append(engine)
    rows = len(trail(engine))

    assert main(["--db", url, "audit", "verify"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"audit trail intact: {rows} events, every hash matches\n"
    assert captured.err == ""

    assert main(["--db", url, "audit", "verify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"ok": True, "checked": rows, "problem": None, "seq": None}


def test_procure_audit_verify_names_the_tampered_row_and_exits_1(
    databases: Databases, capsys: pytest.CaptureFixture[str]
) -> None:
    url = databases.url("sample")
    engine = make_engine(url)
    databases.engines.append(engine)
    # Row 2 of the sample trail: Rita created, with her roles, as the organisation was loaded.
    assert (trail(engine)[1].entity_id, trail(engine)[1].action) == (RITA, "create")
    details = trail(engine)[1].details
    assert details["roles"] == ["requester"]
    tamper(
        engine,
        databases.backend,
        lambda connection: connection.execute(
            update(AUDIT).where(AUDIT.c.seq == 2).values(details={**details, "roles": ["finance"]})
        ),
    )

    assert main(["--db", url, "audit", "verify"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"procure: audit trail broken: audit row 2 (person {RITA}, create): "
        "hash does not match its contents\n"
    )

    assert main(["--db", url, "audit", "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["checked"], report["seq"]) == (False, 1, 2)


# ------------------------------------------------------------------ the outbox


def test_a_transaction_that_fails_after_queuing_leaves_no_notification(engine: Engine) -> None:
    with transaction(engine, readonly=True) as session:
        before = (count(session, Notification), count(session, Request), count(session, AuditEvent))
    with pytest.raises(RuntimeError, match="crash after queuing"), transaction(engine) as session:
        actions.submit(session, drafts=[draft()], now=NOW)
        session.flush()
        # The notices are there, inside the transaction ...
        assert count(session, Notification) > before[0]
        raise RuntimeError("crash after queuing")
    # ... and gone with it, together with the request and its audit rows.
    with transaction(engine, readonly=True) as session:
        after = (count(session, Notification), count(session, Request), count(session, AuditEvent))
    assert after == before


def test_a_decision_that_fails_after_queuing_leaves_no_notification(engine: Engine) -> None:
    ref = submit(engine)
    with transaction(engine, readonly=True) as session:
        queued = set(session.exec(select(Notification.dedup_key)).all())
    with pytest.raises(RuntimeError, match="crash"), transaction(engine) as session:
        actions.decide(session, ref=ref, actor_email=IDA, outcome="approve", now=NOW)
        actions.decide(session, ref=ref, actor_email=PAUL, outcome="approve", now=NOW)
        session.flush()
        # Joint review approved: the budget owner's stage opened and its notices were queued.
        assert set(session.exec(select(Notification.dedup_key)).all()) > queued
        raise RuntimeError("crash")
    with transaction(engine, readonly=True) as session:
        assert set(session.exec(select(Notification.dedup_key)).all()) == queued


def test_notifications_are_committed_with_the_transition_that_causes_them(engine: Engine) -> None:
    ref = submit(engine)
    request_id = int(ref.removeprefix("PR-"))
    with transaction(engine, readonly=True) as session:
        rows = session.exec(select(Notification).where(Notification.request_id == request_id))
        notices = rows.all()
    assert {(n.event, n.audience) for n in notices} >= {
        ("request_submitted", f"person:{RITA}"),
        ("approval_needed", f"person:{IDA}"),
    }
    assert all(n.status == "pending" and n.created_at == NOW for n in notices)


@pytest.mark.parametrize("same_transaction", [True, False], ids=["same-txn", "next-txn"])
def test_queueing_the_same_notice_twice_keeps_one_row(
    engine: Engine, same_transaction: bool
) -> None:
    notice = Notice("reminder", outbox.person(IDA), "PR-0099/joint_review/r1", {"n": 1})
    with transaction(engine) as session:
        first = outbox.queue(session, notice, request_id=None, at=NOW)
        assert first is not None
        if same_transaction:
            assert outbox.queue(session, notice, request_id=None, at=NOW) is None
    with transaction(engine) as session:
        # A retry with different context but the same key is still the same message.
        retry = Notice(notice.event, notice.audience, notice.key, {"n": 2})
        assert outbox.queue(session, retry, request_id=None, at=NOW) is None
        # Another audience is another message.
        other = Notice(notice.event, outbox.team("it"), notice.key)
        assert outbox.queue(session, other, request_id=None, at=NOW) is not None
    with transaction(engine, readonly=True) as session:
        rows = session.exec(select(Notification).where(Notification.event == "reminder")).all()
    assert sorted((r.audience, r.context) for r in rows) == [
        (f"person:{IDA}", {"n": 1}),
        ("team:it", {}),
    ]


def _keys(session: Session) -> list[str]:
    rows = session.exec(select(Notification).where(Notification.event == "reminder")).all()
    return sorted(r.dedup_key.split("|")[1] for r in rows)


def test_deferred_notices_go_in_one_insert_at_commit_and_a_query_on_the_outbox_sees_them(
    engine: Engine,
) -> None:
    inserts: list[str] = []
    sa_event.listen(
        engine,
        "before_cursor_execute",
        lambda _c, _cu, statement, *_a: (
            inserts.append(statement) if statement.startswith("INSERT INTO notification") else None
        ),
    )
    notice = Notice("reminder", outbox.person(IDA), "D-1")
    with transaction(engine) as session:
        outbox.defer(session, [notice], request_id=None, at=NOW)
        outbox.defer(session, [Notice("reminder", outbox.person(IDA), "D-2")], request_id=None)
        outbox.defer(session, [notice], request_id=None, at=NOW)  # the same key: one row
        assert inserts == []
    assert len(inserts) == 1
    with transaction(engine) as session:
        assert _keys(session) == ["D-1", "D-2"]
        outbox.defer(session, [Notice("reminder", outbox.person(IDA), "D-3")], request_id=None)
        assert _keys(session) == ["D-1", "D-2", "D-3"]  # an ORM query on the outbox
        outbox.defer(session, [Notice("reminder", outbox.person(IDA), "D-4")], request_id=None)
        raw = session.execute(text("SELECT count(*) FROM notification WHERE event = 'reminder'"))
        assert raw.scalar_one() == 4  # a text() query is a read the ORM cannot see into
        outbox.defer(session, [Notice("reminder", outbox.person(IDA), "D-5")], request_id=None)
        # queue_many after defer(): the deferred keys are written first, so they win.
        assert outbox.queue(session, notice, request_id=None) is None
        d5 = Notice("reminder", outbox.person(IDA), "D-5")
        assert outbox.queue(session, d5, request_id=None) is None
    with transaction(engine, readonly=True) as session:
        assert _keys(session) == ["D-1", "D-2", "D-3", "D-4", "D-5"]


def test_deferred_notices_are_undone_with_their_transaction_and_kept_past_a_savepoint(
    engine: Engine,
) -> None:
    with pytest.raises(RuntimeError), transaction(engine) as session:
        outbox.defer(session, [Notice("reminder", outbox.person(IDA), "R-1")], request_id=None)
        raise RuntimeError("fails after deferring")
    with transaction(engine) as session:
        outbox.defer(session, [Notice("reminder", outbox.person(IDA), "S-before")], request_id=None)
        savepoint = session.begin_nested()
        outbox.defer(session, [Notice("reminder", outbox.person(IDA), "S-inside")], request_id=None)
        # A read inside the savepoint writes the waiting notice, inside the savepoint.
        assert _keys(session) == ["S-before", "S-inside"]
        savepoint.rollback()
        # Deferred before the savepoint, so it outlives the savepoint's rollback.
        assert _keys(session) == ["S-before"]
    with transaction(engine, readonly=True) as session:
        assert _keys(session) == ["S-before"]


def test_the_database_itself_refuses_a_second_row_with_the_same_dedup_key(engine: Engine) -> None:
    key = "reminder|PR-0099|team:it"
    with transaction(engine) as session:
        session.add(Notification(event="reminder", audience="team:it", dedup_key=key))
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(Notification(event="reminder", audience="team:it", dedup_key=key))
    with transaction(engine, readonly=True) as session:
        rows = session.exec(select(Notification).where(Notification.dedup_key == key)).all()
    assert len(rows) == 1


def test_the_same_decision_twice_queues_nothing_new(engine: Engine) -> None:
    ref = submit(engine)
    decide(engine, ref, IDA)
    with transaction(engine, readonly=True) as session:
        queued = sorted(session.exec(select(Notification.dedup_key)).all())
        rows = count(session, AuditEvent)
    decide(engine, ref, IDA)
    with transaction(engine, readonly=True) as session:
        assert sorted(session.exec(select(Notification.dedup_key)).all()) == queued
        assert count(session, AuditEvent) == rows
