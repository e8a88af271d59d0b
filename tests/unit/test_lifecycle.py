"""The declared lifecycles as tables, `fire` on real rows, and that nothing else assigns a status."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from models import actions, lifecycle
from models.assets import Asset
from models.audit import AuditEvent
from models.db import transaction
from models.errors import ConcurrentUpdate, TransitionNotAllowed
from models.lifecycle import (
    MACHINES,
    Machine,
    Move,
    RequestEvent,
    StageEvent,
    asset_done,
    fire,
    fire_many,
)
from models.outbox import Notice, Notification, person
from models.requests import Request, Stage
from tests.factories import NOW, PAUL, RITA, approve_all, submit

# ------------------------------------------------------------------ the tables, spelled out

# Every allowed move, written by hand: a change to lifecycle.py's tables must change these too.
EXPECTED: dict[str, set[tuple[str, str, str]]] = {
    "request": {
        ("draft", "submit", "submitted"),
        ("draft", "cancel", "cancelled"),
        ("submitted", "start_review", "in_review"),
        ("submitted", "approve", "approved"),
        ("submitted", "cancel", "cancelled"),
        ("in_review", "approve", "approved"),
        ("in_review", "reject", "rejected"),
        ("in_review", "send_back", "changes_requested"),
        ("in_review", "cancel", "cancelled"),
        ("changes_requested", "resubmit", "submitted"),
        ("changes_requested", "cancel", "cancelled"),
        ("approved", "cancel", "cancelled"),
        ("approved", "reopen", "in_review"),
        ("approved", "order", "ordered"),
        ("ordered", "schedule_delivery", "delivery_scheduled"),
        ("delivery_scheduled", "schedule_delivery", "delivery_scheduled"),
        ("delivery_scheduled", "deliver", "delivered"),
        ("ordered", "deliver", "delivered"),  # no delivery date was ever agreed
        ("delivered", "roll_out", "rolled_out"),
        ("rolled_out", "close", "closed"),
    },
    "stage": {
        ("waiting", "open", "open"),
        ("waiting", "skip", "skipped"),
        ("waiting", "reset", "waiting"),
        ("waiting", "cancel", "cancelled"),
        ("open", "approve", "approved"),
        ("open", "reject", "rejected"),
        ("open", "send_back", "sent_back"),
        ("open", "suspend", "waiting"),
        ("open", "cancel", "cancelled"),
        ("approved", "reset", "waiting"),
        ("approved", "skip", "skipped"),
        ("sent_back", "reset", "waiting"),
        ("skipped", "reset", "waiting"),
    },
    "asset": {
        ("ordered", "deliver", "delivered"),
        ("delivered", "deploy", "deployed"),
        ("deployed", "request_return", "return_requested"),
        ("return_requested", "cancel_return", "deployed"),
        ("deployed", "receive_return", "returned"),
        ("return_requested", "receive_return", "returned"),
        ("returned", "erase", "erased"),
        ("returned", "dispose", "disposed"),  # a unit that holds no data (actions.dispose checks)
        ("returned", "return_to_provider", "returned_to_provider"),
        ("erased", "deploy", "deployed"),
        ("erased", "dispose", "disposed"),
        ("erased", "return_to_provider", "returned_to_provider"),
    },
    "notification": {
        ("pending", "claim", "sending"),
        ("sending", "claim", "sending"),
        ("sending", "deliver", "sent"),
        ("sending", "retry", "pending"),
        ("sending", "give_up", "dead"),
        ("sending", "drop", "dropped"),
        ("dead", "requeue", "pending"),
    },
}

# States nothing leaves.
EXPECTED_FINAL = {
    "request": {"rejected", "cancelled", "closed"},
    "stage": {"rejected", "cancelled"},
    "asset": {"disposed", "returned_to_provider"},
    "notification": {"sent", "dropped"},
}


def declared(machine: Machine) -> set[tuple[str, str, str]]:
    return {(str(s), str(e), str(t)) for (s, e), t in machine.transitions.items()}


ALLOWED = [
    pytest.param(machine, state, event, target, id=f"{machine.name}:{state}--{event}->{target}")
    for machine in MACHINES.values()
    for (state, event), target in machine.transitions.items()
]

FORBIDDEN = [
    pytest.param(machine, state.value, event.value, id=f"{machine.name}:{state}--{event}")
    for machine in MACHINES.values()
    for state in machine.states
    for event in machine.events
    if (state, event) not in machine.transitions
]


@pytest.mark.parametrize("machine", list(MACHINES.values()), ids=lambda m: m.name)
def test_declared_transitions_match_the_hand_written_tables(machine: Machine) -> None:
    assert declared(machine) == EXPECTED[machine.name]


def test_the_tables_cover_exactly_four_machines() -> None:
    assert set(MACHINES) == set(EXPECTED) == {"request", "stage", "asset", "notification"}


@pytest.mark.parametrize("machine", list(MACHINES.values()), ids=lambda m: m.name)
def test_every_state_and_event_in_a_table_is_declared_in_its_enums(machine: Machine) -> None:
    states = {s.value for s in machine.states}
    events = {e.value for e in machine.events}
    for (state, event), target in machine.transitions.items():
        assert state in states and target in states, (state, target)
        assert event in events, event
    used_events = {event for _, event in machine.transitions}
    assert used_events == events, f"events no transition uses: {events - used_events}"


@pytest.mark.parametrize("machine", list(MACHINES.values()), ids=lambda m: m.name)
def test_final_states_are_exactly_those_with_no_way_out(machine: Machine) -> None:
    finals = {s.value for s in machine.states if machine.is_final(s.value)}
    assert finals == EXPECTED_FINAL[machine.name]


@pytest.mark.parametrize(("machine", "state", "event", "expected"), ALLOWED)
def test_an_allowed_event_leads_to_its_declared_state(
    machine: Machine, state: str, event: str, expected: str
) -> None:
    assert machine.target(state, event) == expected
    assert machine.target(str(state), str(event)) == expected  # plain strings from the database
    assert (str(state), str(event), str(expected)) in EXPECTED[machine.name]
    assert event in machine.allowed_events(state)


@pytest.mark.parametrize(("machine", "state", "event"), FORBIDDEN)
def test_a_forbidden_event_raises_a_message_naming_the_state_and_the_event(
    machine: Machine, state: str, event: str
) -> None:
    with pytest.raises(TransitionNotAllowed) as caught:
        machine.target(state, event, what=f"{machine.name} X-1")
    message = str(caught.value)
    assert message.startswith(f"{machine.name} X-1 is {state}: cannot {event}")
    allowed = machine.allowed_events(state)
    if allowed:
        assert message.endswith(f"possible now: {', '.join(allowed)}")
    else:
        assert message.endswith("it is final")
    assert not any((s, e) == (state, event) for s, e, _ in EXPECTED[machine.name])


def test_the_forbidden_table_holds_every_other_pair() -> None:
    pairs = sum(len(m.states) * len(m.events) for m in MACHINES.values())
    assert len(ALLOWED) == sum(len(rows) for rows in EXPECTED.values()) == 52
    assert len(FORBIDDEN) == pairs - len(ALLOWED)


@pytest.mark.parametrize("machine", list(MACHINES.values()), ids=lambda m: m.name)
def test_an_unknown_event_is_named_as_unknown(machine: Machine) -> None:
    first = next(iter(machine.states)).value
    with pytest.raises(TransitionNotAllowed, match=rf"{machine.name}: unknown event 'explode'"):
        machine.target(first, "explode")


# ------------------------------------------------------------------ fire on real rows


def count(session: Session, model: type) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def load_entity(session: Session, kind: str, ref: str) -> Request | Stage | Asset:
    """A request (in review), its budget stage (waiting) or its first device (ordered)."""
    request_id = int(ref[3:])
    if kind == "request":
        return session.exec(select(Request).where(Request.id == request_id)).one()
    if kind == "stage":
        return session.exec(
            select(Stage).where(Stage.request_id == request_id, Stage.key == "budget_owner")
        ).one()
    return session.exec(
        select(Asset).where(Asset.request_id == request_id).order_by(col(Asset.id))
    ).first()


# (entity, request prepared as, event, from, to, what someone else does to the row meanwhile)
FIRE_CASES = [
    pytest.param(
        "request",
        "submitted",
        RequestEvent.CANCEL,
        "in_review",
        "cancelled",
        "send_back",
        id="request",
    ),
    pytest.param("stage", "submitted", StageEvent.SKIP, "waiting", "skipped", "open", id="stage"),
    pytest.param("asset", "ordered", "deliver", "ordered", "delivered", "deliver", id="asset"),
]


def prepare(engine: Engine, how: str, laptops: int = 1) -> str:
    ref = submit(engine, lines=[{"sku": "LAPTOP-STD-14", "quantity": laptops}])
    if how == "ordered":
        approve_all(engine, ref)
        with transaction(engine) as session:
            actions.place_order(session, ref=ref, actor_email=PAUL, now=NOW)
    return ref


def audit_id(kind: str, ref: str, entity: Request | Stage | Asset) -> str:
    if kind == "request":
        return ref
    if kind == "stage":
        return f"{ref}/budget_owner"
    return f"asset-{entity.id}"


@pytest.mark.parametrize(("kind", "how", "event", "source", "target", "other"), FIRE_CASES)
def test_fire_writes_the_status_bumps_the_version_and_appends_one_audit_row(
    engine: Engine, kind: str, how: str, event: str, source: str, target: str, other: str
) -> None:
    ref = prepare(engine, how)
    with transaction(engine, readonly=True) as session:
        before = load_entity(session, kind, ref)
        audit_rows, notices = count(session, AuditEvent), count(session, Notification)
    assert before.status == source
    later = NOW + timedelta(hours=1)
    notice = Notice("lifecycle_test", person(RITA), f"{ref}/{kind}")

    with transaction(engine) as session:
        entity = load_entity(session, kind, ref)
        returned = fire(
            session, entity, event, actor=RITA, at=later, details={"why": "test"}, notices=[notice]
        )
        # The object in hand shows the new state at once.
        assert (returned, entity.status, entity.version) == (target, target, before.version + 1)

    with transaction(engine, readonly=True) as session:
        after = load_entity(session, kind, ref)
        assert (after.status, after.version) == (target, before.version + 1)
        assert count(session, AuditEvent) == audit_rows + 1
        assert count(session, Notification) == notices + 1
        last = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc())).first()
    assert last is not None
    assert (last.entity, last.entity_id, last.action) == (kind, audit_id(kind, ref, after), event)
    assert (last.from_status, last.to_status) == (source, target)
    assert (last.actor, last.on_behalf_of, last.at) == (RITA, None, later)
    assert last.request_id == int(ref[3:]) and last.details == {"why": "test"}


@pytest.mark.parametrize(("kind", "how", "event", "source", "target", "other"), FIRE_CASES)
def test_fire_on_a_stale_version_raises_concurrent_update_and_writes_nothing(
    engine: Engine, kind: str, how: str, event: str, source: str, target: str, other: str
) -> None:
    ref = prepare(engine, how)
    with transaction(engine, readonly=True) as session:
        stale = load_entity(session, kind, ref)
    stale_version = stale.version
    assert stale.status == source
    # Meanwhile someone else moves the row on, in a transaction of their own.
    with transaction(engine) as session:
        moved_to = fire(session, load_entity(session, kind, ref), other, actor=PAUL, at=NOW)
    with transaction(engine, readonly=True) as session:
        audit_rows, notices = count(session, AuditEvent), count(session, Notification)

    with (
        transaction(engine) as session,
        pytest.raises(ConcurrentUpdate, match=f"{kind} .* was changed by someone else"),
    ):
        # The refusal is caught inside the transaction, which then commits: still nothing
        # of the refused move may be written.
        fire(
            session,
            stale,
            event,
            actor=RITA,
            at=NOW,
            notices=[Notice("lifecycle_test", person(RITA), f"{ref}/{kind}")],
        )

    assert (stale.status, stale.version) == (source, stale_version)
    with transaction(engine, readonly=True) as session:
        current = load_entity(session, kind, ref)
        assert (current.status, current.version) == (moved_to, stale_version + 1)
        assert count(session, AuditEvent) == audit_rows
        assert count(session, Notification) == notices


def _devices(session: Session, ref: str) -> list[Asset]:
    return list(
        session.exec(
            select(Asset).where(Asset.request_id == int(ref[3:])).order_by(col(Asset.id))
        ).all()
    )


def test_fire_many_moves_every_row_with_one_update_and_audits_each(engine: Engine) -> None:
    ref = prepare(engine, "ordered", laptops=3)
    with transaction(engine, readonly=True) as session:
        audit_rows = count(session, AuditEvent)
    with transaction(engine) as session:
        devices = _devices(session, ref)
        moves = [
            Move(
                d, {"serial": f"SN-MANY-{i}"}, {"sku": d.sku}, [Notice("t", person(RITA), f"m{i}")]
            )
            for i, d in enumerate(devices)
        ]
        assert fire_many(session, moves, "deliver", actor=PAUL, at=NOW) == ["delivered"] * 3
        assert [(d.status, d.serial) for d in devices] == [
            ("delivered", f"SN-MANY-{i}") for i in range(3)
        ]
    with transaction(engine, readonly=True) as session:
        after = _devices(session, ref)
        trail = session.exec(
            select(AuditEvent).where(AuditEvent.seq > audit_rows).order_by(col(AuditEvent.seq))
        ).all()
        queued = session.exec(select(Notification).where(Notification.event == "t")).all()
    assert [(d.status, d.version, d.serial) for d in after] == [
        ("delivered", 2, f"SN-MANY-{i}") for i in range(3)
    ]
    assert [(e.entity, e.entity_id, e.action, e.from_status, e.to_status) for e in trail] == [
        ("asset", f"SN-MANY-{i}", "deliver", "ordered", "delivered") for i in range(3)
    ]
    assert sorted(n.dedup_key for n in queued) == [f"t|m{i}|person:{RITA}" for i in range(3)]


def test_fire_many_with_one_stale_row_moves_none_of_them(engine: Engine) -> None:
    ref = prepare(engine, "ordered", laptops=3)
    with transaction(engine, readonly=True) as session:
        stale = _devices(session, ref)
    with transaction(engine) as session:  # someone else delivers the middle one meanwhile
        fire(session, _devices(session, ref)[1], "deliver", actor=PAUL, at=NOW)
    with transaction(engine, readonly=True) as session:
        audit_rows, notices = count(session, AuditEvent), count(session, Notification)

    moves = [Move(d, {}, None, [Notice("t", person(RITA), f"s{d.id}")]) for d in stale]
    with (
        transaction(engine) as session,
        pytest.raises(ConcurrentUpdate, match="changed by someone else meanwhile"),
    ):
        fire_many(session, moves, "deliver", actor=RITA, at=NOW)

    with transaction(engine, readonly=True) as session:
        assert [d.status for d in _devices(session, ref)] == ["ordered", "delivered", "ordered"]
        assert count(session, AuditEvent) == audit_rows
        assert count(session, Notification) == notices


def test_fire_refuses_a_forbidden_move_on_a_real_row_and_writes_nothing(engine: Engine) -> None:
    ref = submit(engine)
    with transaction(engine, readonly=True) as session:
        audit_rows = count(session, AuditEvent)
    with transaction(engine) as session:
        request = load_entity(session, "request", ref)
        with pytest.raises(
            TransitionNotAllowed, match=rf"request {ref} is in_review: cannot order"
        ):
            fire(session, request, RequestEvent.ORDER, actor=PAUL, at=NOW)
    with transaction(engine, readonly=True) as session:
        request = load_entity(session, "request", ref)
        assert (request.status, count(session, AuditEvent)) == ("in_review", audit_rows)


def test_every_status_move_in_the_audit_continues_from_where_the_last_one_left(
    engine: Engine,
) -> None:
    # Every status row in the audit continues from the status the previous one left.
    ref = submit(engine)
    approve_all(engine, ref)
    with transaction(engine, readonly=True) as session:
        events = session.exec(
            select(AuditEvent)
            .where(AuditEvent.request_id == int(ref[3:]), col(AuditEvent.to_status).is_not(None))
            .order_by(col(AuditEvent.seq))
        ).all()
    last: dict[str, str] = {}
    initial = {"request": "draft", "stage": "waiting", "asset": "ordered"}
    for e in events:
        assert e.from_status == last.get(e.entity_id, initial[e.entity]), e
        assert MACHINES[e.entity].target(e.from_status, e.action) == e.to_status
        last[e.entity_id] = e.to_status
    assert last[ref] == "approved"


# ------------------------------------------------------------------ nothing else assigns a status

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("models", "procure", "flows", "tasks", "notifications")
LIFECYCLE = ROOT / "models" / "lifecycle.py"
LIFECYCLE_TABLES = {"Request", "Stage", "Asset"}


def _name(node: ast.AST) -> str | None:
    """The last name of `X`, `a.b.X` or `X(...)`."""
    if isinstance(node, ast.Call):
        return _name(node.func)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _sets_status_key(node: ast.AST) -> bool:
    """A dict literal with a "status" key."""
    return isinstance(node, ast.Dict) and any(
        isinstance(k, ast.Constant) and k.value == "status" for k in node.keys
    )


def _statement_table(node: ast.AST) -> str | None:
    """For `update(X).where(...).values`, `insert(X).values` and the like: X."""
    while isinstance(node, ast.Attribute | ast.Call):
        if isinstance(node, ast.Call):
            if _name(node.func) in {"update", "insert"} and node.args:
                return _name(node.args[0])
            node = node.func
        else:
            node = node.value
    return None


def status_writes(source: str, filename: str = "<test>") -> list[str]:
    """Places in `source` that set a status outside `lifecycle.fire`: 'line: what'."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Attribute) and sub.attr == "status":
                        found.append(f"{line}: assigns {ast.unparse(sub)}")
                    if (
                        isinstance(sub, ast.Subscript)
                        and isinstance(sub.slice, ast.Constant)
                        and sub.slice.value == "status"
                        and _name(sub.value) == "__dict__"
                    ):
                        found.append(f"{line}: assigns {ast.unparse(sub)}")
        if not isinstance(node, ast.Call):
            continue
        callee = _name(node.func)
        text = ast.unparse(node)[:80]
        if callee in {"setattr", "set_committed_value", "set_attribute"} and any(
            isinstance(a, ast.Constant) and a.value == "status" for a in node.args[1:2]
        ):
            found.append(f"{line}: {text}")
        keywords = {k.arg for k in node.keywords}
        if callee in LIFECYCLE_TABLES and "status" in keywords:
            found.append(f"{line}: constructs {text}")
        if (
            callee == "model_validate"
            and isinstance(node.func, ast.Attribute)
            and _name(node.func.value) in LIFECYCLE_TABLES
            and any(_sets_status_key(a) for a in node.args)
        ):
            found.append(f"{line}: constructs {text}")
        if (
            callee == "values"
            and _statement_table(node.func) in LIFECYCLE_TABLES
            and ("status" in keywords or any(_sets_status_key(a) for a in node.args))
        ):
            found.append(f"{line}: writes {text}")
        if callee == "fire":
            for k in node.keywords:
                if k.arg == "changes" and _sets_status_key(k.value):
                    found.append(f"{line}: overrides the status through changes= in {text}")
        if callee == "Move":
            given = [k.value for k in node.keywords if k.arg == "changes"] + node.args[1:2]
            if any(_sets_status_key(v) for v in given):
                found.append(f"{line}: overrides the status through a Move's changes in {text}")
        for arg in node.args:
            if (
                isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and _raw_sql_sets_status(arg.value)
            ):
                found.append(f"{line}: raw SQL {arg.value[:60]!r}")
    return found


def _raw_sql_sets_status(sql: str) -> bool:
    words = sql.lower().split()
    return (
        len(words) > 3
        and words[0] == "update"
        and words[1].strip('"') in {"request", "stage", "asset"}
        and "set" in words
        and any(w.strip(",").startswith("status") for w in words[words.index("set") + 1 :])
    )


def scanned_files() -> list[Path]:
    return sorted(
        path
        for folder in SCANNED
        for path in (ROOT / folder).rglob("*.py")
        if path.resolve() != LIFECYCLE.resolve()
    )


def test_nothing_outside_lifecycle_assigns_a_status() -> None:
    files = scanned_files()
    assert ROOT / "models" / "actions.py" in files  # the scan looks where statuses are used
    offences = [
        f"{path.relative_to(ROOT)}:{hit}"
        for path in files
        for hit in status_writes(path.read_text(encoding="utf-8"), str(path))
    ]
    assert offences == [], "status changes belong in lifecycle.fire:\n" + "\n".join(offences)


@pytest.mark.parametrize(
    "snippet",
    [
        'request.status = "approved"',
        "stage.status = StageStatus.OPEN",
        "self.request.status = RequestStatus.CLOSED",
        "a.status, a.version = 'erased', 2",
        'request.status += ""',
        'setattr(asset, "status", "erased")',
        'set_committed_value(request, "status", "approved")',
        'request.__dict__["status"] = "approved"',
        'Request(kind="rollout", status="approved")',
        'models.requests.Stage(key="x", status="open")',
        'Asset.model_validate({"sku": "A", "status": "erased"})',
        'session.execute(update(Request).where(Request.id == 1).values(status="approved"))',
        'update(Stage).values({"status": "open"})',
        'insert(Asset).values(status="deployed")',
        'fire(session, request, "approve", actor="x", changes={"status": "closed"})',
        'Move(asset, {"status": "erased"})',
        'Move(asset, changes={"status": "erased", "serial": "S"})',
        "session.execute(text(\"UPDATE request SET status = 'approved' WHERE id = 1\"))",
    ],
)
def test_the_status_scan_catches_a_status_set_by_hand(snippet: str) -> None:
    assert status_writes(snippet) != []


@pytest.mark.parametrize(
    "snippet",
    [
        "status: str = Field(default=RequestStatus.DRAFT.value, max_length=32)",  # table default
        'if request.status == "approved": pass',
        "fire(session, request, RequestEvent.APPROVE, actor='x', changes={'decided_at': now})",
        "update(Request).values(version=2, closed_at=now)",
        'result = {"id": request.ref, "status": request.status}',
        'rows = request_rows(session, status="in_review")',
        "REQUEST.target(request.status, RequestEvent.CANCEL)",
    ],
)
def test_the_status_scan_leaves_reading_a_status_alone(snippet: str) -> None:
    assert status_writes(snippet) == []


def test_lifecycle_itself_is_the_one_place_that_writes_a_status() -> None:
    source = LIFECYCLE.read_text(encoding="utf-8")
    tree = ast.parse(source)
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    # fire moves one row as fire_many moves several; fire_many builds each row's new values
    # with the status in them, and updates the rows with them ...
    assert "fire_many(session, [move]" in ast.unparse(functions["fire"])
    assert any(_sets_status_key(n) for n in ast.walk(functions["fire_many"]))
    assert "_move_statement(model, keys)" in ast.unparse(functions["fire_many"])
    # ... through the version-checked UPDATE built once per shape of row.
    assert "update(table)" in ast.unparse(functions["_move_statement"])
    assert lifecycle.fire is fire


@pytest.mark.parametrize(
    ("status", "holds_data", "done"),
    [
        ("deployed", False, False),
        ("return_requested", False, False),
        ("returned", False, True),  # a dock back in IT's hands: nothing to erase
        ("returned", True, False),  # a laptop back: its certified erasure is still due
        ("erased", True, True),
        ("disposed", False, True),
        ("returned_to_provider", True, True),
    ],
)
def test_a_device_is_done_with_once_erased_or_once_returned_if_it_holds_no_data(
    status: str, holds_data: bool, done: bool
) -> None:
    assert asset_done(status, holds_data) is done
