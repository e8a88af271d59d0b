"""Sample notifications of every event, from a real run of the engine on a scratch database.

`procure notify check` renders each template (built-in and overridden) with these, tests use
them to render every event, and `procure notify preview EVENT --sample` shows one without a
database of your own. Nothing here is hand-written context: the rows come from the same
actions the product runs, so a template that works on a sample works in production.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

import sample
from models import actions, digest, hr, outbox, pipeline, schema, sla, watch
from models.assets import Assignment, SerialIn
from models.db import make_engine, transaction
from models.outbox import Notice, Notification
from models.requests import Draft, Request, RequestCreate, format_ref
from models.sources import Document

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # a Wednesday, 10:00 in Berlin
RITA = "rita.requester@example.com"
NINA = "nina.newhire@example.com"
IDA = "ida.it@example.com"
IVAN = "ivan.it@example.com"
PAUL = "paul.purchasing@example.com"
PETRA = "petra.purchasing@example.com"
FIONA = "fiona.finance@example.com"
MAX = "max.management@example.com"
BOB = "bob.budget@example.com"
SARA = "sara.sales@example.com"
OPERATORS = "team:operators"


def _submit(session: Session, now: datetime, key: str, **overrides: object) -> str:
    data: dict[str, object] = {
        "idempotency_key": f"sample-{key}",
        "kind": "onboarding",
        "requester": RITA,
        "on_behalf_of": NINA,
        "cost_centre": "CC-ENG",
        "needed_by": (now.date() + timedelta(days=35)).isoformat(),
        "justification": "Nina joins the platform team on 4 January.",
        "lines": [{"sku": "LAPTOP-STD-14", "quantity": 1}, {"sku": "DOCK-USB4", "quantity": 1}],
    }
    data.update(overrides)
    create = RequestCreate.model_validate(data)
    (result,) = actions.submit(
        session, drafts=[Draft(create, Document("sample", data), ())], now=now
    )
    return result.ref


def _approve_all(session: Session, ref: str, now: datetime) -> None:
    for _ in range(20):
        request = actions.get_request(session, ref)
        from models.views import request_detail

        detail = request_detail(session, request, now=now)
        if not detail["pending"]:
            return
        pending = detail["pending"][0]
        used = {d["by"] for s in detail["stages"] for d in s["decisions"]}
        who = next(a for a in pending["approvers"] if a not in used)
        actions.decide(
            session,
            ref=ref,
            actor_email=who,
            outcome="approve",
            stage_key=pending["stage"],
            now=now,
            confirm_terms=who in (PAUL, PETRA),
        )


def populate(engine: Engine, now: datetime = NOW) -> None:
    """Drive sample requests and devices through every path that notifies someone."""
    with transaction(engine) as session:
        text = pipeline.DEFAULT_PIPELINE.read_text(encoding="utf-8")
        pipeline.install(session, text=text, source="default.yaml", actor="sample", at=now)
        sample.load(session, actor="sample", at=now)
    spec = None
    with transaction(engine) as session:
        # The onboarding request: sent back once, resubmitted, approved, through to erasure.
        ref = _submit(session, now, "onboarding")
        actions.decide(session, ref=ref, actor_email=IDA, outcome="approve", now=now)
        actions.decide(
            session,
            ref=ref,
            actor_email=PAUL,
            outcome="send_back",
            comment="Please add a docking station for the second desk.",
            now=now,
        )
        actions.resubmit(
            session, ref=ref, actor_email=RITA, comment="Docking station added", now=now
        )
        _approve_all(session, ref, now)
        actions.place_order(session, ref=ref, actor_email=PAUL, now=now)
        actions.schedule_delivery(
            session, ref=ref, on=now.date() + timedelta(days=20), actor_email=IVAN, now=now
        )
    later = now + timedelta(days=20)
    with transaction(engine) as session:
        actions.deliver(
            session,
            ref=ref,
            units=[
                SerialIn("SN-SAMPLE-0001", "LAPTOP-STD-14"),
                SerialIn("SN-SAMPLE-0002", "DOCK-USB4"),
            ],
            actor_email=IVAN,
            now=later,
        )
        actions.roll_out(
            session,
            ref=ref,
            assignments=[Assignment("SN-SAMPLE-0001", NINA), Assignment("SN-SAMPLE-0002", NINA)],
            actor_email=IVAN,
            now=later,
        )
    with transaction(engine) as session:
        # Three laptops for the platform team's desks, handed out the same day as Nina's.
        desks = _submit(
            session,
            now,
            "desks",
            kind="rollout",
            on_behalf_of=None,
            justification="Laptops for the platform team's hot desks.",
            lines=[{"sku": "LAPTOP-STD-14", "quantity": 3}],
        )
        _approve_all(session, desks, now)
        actions.place_order(session, ref=desks, actor_email=PAUL, now=now)
        serials = [f"SN-SAMPLE-010{n}" for n in range(1, 4)]
        # Two arrive before any delivery date is agreed (what came, what is still to come),
        # then the third.
        for part in (serials[:2], serials[2:]):
            actions.deliver(
                session, ref=desks, units=[SerialIn(s) for s in part], actor_email=IVAN, now=later
            )
        actions.roll_out(
            session,
            ref=desks,
            assignments=[
                Assignment(s, who) for s, who in zip(serials, (NINA, BOB, SARA), strict=True)
            ],
            actor_email=IVAN,
            now=later,
        )
    with transaction(engine) as session:
        # Devices nearing their warranty end: Nina's laptop alone (an alert and a refresh for
        # her), then the three desk laptops in two batches (one alert listing all three and one
        # refresh for Rita, who requested them).
        assets = watch.ending_assets(session, today=date(2030, 1, 1))
        spec = actions.spec_for(session, actions.get_request(session, ref))
        from models.assets import Asset

        laptop = session.exec(select(Asset).where(Asset.serial == "SN-SAMPLE-0001")).one()
        assert laptop.warranty_end is not None
        at = datetime.combine(laptop.warranty_end - timedelta(days=45), datetime.min.time(), UTC)
        assert laptop.id in assets
        watch.lifecycle_watch(session, asset_ids=[laptop.id], spec=spec, now=at)
        ids = session.exec(
            select(Asset.id).where(col(Asset.serial).in_(serials)).order_by(col(Asset.id))
        ).all()
        for batch in (ids[:1], ids[1:]):
            watch.lifecycle_watch(session, asset_ids=[i for i in batch if i], spec=spec, now=at)
    with transaction(engine) as session:
        for serial in ("SN-SAMPLE-0001", "SN-SAMPLE-0002"):
            actions.request_return(
                session,
                serial=serial,
                actor_email=IVAN,
                reason="Nina moves to the sales team",
                now=later,
            )
            actions.receive_return(session, serial=serial, actor_email=IVAN, now=later)
            actions.erase(
                session,
                serial=serial,
                certificate=f"CERT-{serial}",
                method="NIST 800-88 purge",
                provider="Blancco",
                actor_email=IVAN,
                now=later,
            )
            actions.dispose(session, serial=serial, to="recycler", actor_email=IVAN, now=later)
    with transaction(engine) as session:
        # Rejected, cancelled, late and over budget; a stage left waiting for the SLA watchdog.
        rejected = _submit(session, now, "rejected", justification="A second laptop for home")
        actions.decide(
            session,
            ref=rejected,
            actor_email=IDA,
            outcome="reject",
            comment="One laptop each.",
            now=now,
        )
        cancelled = _submit(session, now, "cancelled")
        actions.cancel(session, ref=cancelled, actor_email=RITA, reason="Start date moved", now=now)
        _submit(
            session,
            now,
            "rollout",
            kind="rollout",
            on_behalf_of=None,
            cost_centre="CC-SALES",
            requester=RITA,
            needed_by=(now.date() + timedelta(days=5)).isoformat(),
            justification="The sales team's laptops, all at once.",
            lines=[{"sku": "LAPTOP-STD-14", "quantity": 100}],
        )
        # Bob owns the budget he asks from: nobody may approve it for him (no delegate yet).
        own = _submit(session, now, "own-budget", requester=BOB, on_behalf_of=None)
        actions.decide(session, ref=own, actor_email=IDA, outcome="approve", now=now)
        actions.decide(
            session, ref=own, actor_email=PAUL, outcome="approve", now=now, confirm_terms=True
        )
        # A developer workplace whose contract terms the agreement leaves partly open: purchasing
        # approves its part without confirming them, and the final approval waits for them.
        terms = _submit(
            session,
            now,
            "terms-open",
            lines=[],
            bundle="developer",
            justification="Nina's developer workplace.",
        )
        actions.decide(session, ref=terms, actor_email=IDA, outcome="approve", now=now)
        actions.decide(session, ref=terms, actor_email=PAUL, outcome="approve", now=now)
        # Fiona asks finance's approval of laptops for Max: she may not give it, and Max, whose
        # role (management) finance's part goes to, may not either: nobody may decide it.
        stuck = _submit(
            session,
            now,
            "nobody-may-decide",
            kind="rollout",
            requester=FIONA,
            on_behalf_of=MAX,
            justification="Laptops for the management offsite's workshops.",
            lines=[{"sku": "LAPTOP-STD-14", "quantity": 12}],
        )
        for who in (IDA, PAUL, BOB):
            actions.decide(session, ref=stuck, actor_email=who, outcome="approve", now=now)
        # Ordered and scheduled, then the delivery date passes without a delivery.
        late = _submit(
            session, now, "late-delivery", justification="Replacement for a broken laptop"
        )
        _approve_all(session, late, now)
        # Before the order, purchasing buys the laptop individually: the total rises, so the
        # request is back in review (re_sourced), and the stages it concerns decide again.
        actions.set_sourcing(
            session,
            ref=late,
            line_no=1,
            actor_email=PAUL,
            individual=True,
            justification="The agreement's distributor cannot deliver in time.",
            now=now,
        )
        for who in (IDA, PAUL, BOB):
            actions.decide(
                session, ref=late, actor_email=who, outcome="approve", now=now,
                confirm_terms=who == PAUL,
            )  # fmt: skip
        actions.place_order(session, ref=late, actor_email=PAUL, now=now)
        actions.schedule_delivery(
            session, ref=late, on=now.date() + timedelta(days=42), actor_email=IVAN, now=now
        )

    with transaction(engine) as session:
        # HR files a joiner's onboarding, then moves the start date by a week.
        joiner = {
            "email": "jan.joiner@example.com",
            "name": "Jan Joiner",
            "department": "Engineering",
            "role": "developer",
            "cost_centre": "CC-ENG",
            "manager": BOB,
        }
        for start in (date(2027, 1, 11), date(2027, 1, 18)):
            row = hr.HrRow.model_validate({**joiner, "start_date": start})
            hr.apply(session, rows=[row], now=now, spec=spec)
        # HR reports months ahead that Nina leaves: IT plans to collect her desk laptop.
        leaver = {"email": NINA, "name": "Nina Newhire", "end_date": date(2027, 3, 31)}
        hr.apply(session, rows=[hr.HrRow.model_validate(leaver)], now=now, spec=spec)
        # A week later HR withdraws it (she stays): IT stops planning the collection.
        withdrawn = hr.HrRow.model_validate({**leaver, "status": "withdrawn"})
        hr.apply(session, rows=[withdrawn], now=now + timedelta(days=7), spec=spec)
    with transaction(engine) as session:
        # A desk laptop asked back for a refresh that is called off: Bob keeps it.
        actions.request_return(
            session, serial="SN-SAMPLE-0102", actor_email=IVAN, reason="Refresh", now=later
        )
        actions.cancel_return(
            session,
            serial="SN-SAMPLE-0102",
            actor_email=IVAN,
            reason="The refresh is postponed to next year",
            now=later,
        )
    with transaction(engine) as session:
        # Over budget (the default pipeline warns finance): approve the 100-laptop rollout.
        rollout = session.exec(
            select(Request.id).where(Request.idempotency_key == "sample-rollout")
        ).one()
        assert rollout is not None
        _approve_all(session, format_ref(rollout), now + timedelta(hours=1))
        # Waiting for its joint review: the SLA watchdog reminds, then escalates.
        _submit(session, now, "waiting", justification="A monitor for the new desk")
    with transaction(engine) as session:
        stages = sla.watched_stages(session, now=now + timedelta(days=30))
        sla.sweep(session, stage_ids=stages, now=now + timedelta(days=1))
        sla.sweep(session, stage_ids=stages, now=now + timedelta(days=30))
        watch.delivery_slips(
            session,
            request_ids=watch.slipping_requests(session),
            spec=spec,
            now=now + timedelta(days=40),
        )
        digest.send_digests(session, spec=spec, now=now)
        # A week later the joint review waiting above is past its deadline: the digest of
        # management, to whom it is escalated, lists it (with who still has to decide).
        digest.send_digests(session, spec=spec, now=now + timedelta(days=7))
        outbox.queue(
            session,
            Notice(
                "undeliverable",
                OPERATORS,
                "sample",
                {
                    "notification": 1,
                    "event": "approval_needed",
                    "audience": f"person:{BOB}",
                    "attempts": 6,
                    "error": "email bob.budget@example.com via mailto://smtp.example.com: "
                    "(421) Service not available",
                },
            ),
            request_id=None,
            at=now,
        )


@contextmanager
def sample_database() -> Iterator[Engine]:
    """A scratch SQLite database holding the sample run (deleted afterwards)."""
    with tempfile.TemporaryDirectory(prefix="procure-sample-") as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'sample.db'}")
        try:
            SQLModel.metadata.create_all(engine, tables=list(schema.metadata.tables.values()))
            populate(engine)
            yield engine
        finally:
            engine.dispose()


def sample_variant(row: Notification) -> tuple[str, bool, bool]:
    """What a template renders differently: a person's copy or a team's (each built from its
    own notice; a digest's sections differ from team to team: each team's is its own), whether
    it tells of its event's other case (a part nobody may decide: no_approver's; units still to
    come with no delivery date: delivered's), and whether it lists several devices (a rollout's,
    a lifecycle alert's) or names one."""
    if row.event == "digest":
        return row.audience, False, False
    context = row.context if isinstance(row.context, dict) else {}
    escalation = context.get("escalation")
    other = (isinstance(escalation, dict) and bool(escalation.get("nobody"))) or (
        row.event == "delivered" and bool(context.get("remaining"))
    )
    devices = context.get("devices")
    several = isinstance(devices, list) and len(devices) > 1
    return row.audience.split(":", 1)[0], other, several


def _better(row: Notification, best: Notification) -> bool:
    """Whether a later row of an event makes a better sample than the one chosen so far: the
    common case before its other one (a part nobody may decide, units still to come), a list
    of devices before one device, a person's copy over a team's."""
    kind, other, several = sample_variant(row)
    best_kind, best_other, best_several = sample_variant(best)
    if other and not best_other:
        return False
    if several != best_several:
        return several
    return kind == "person" or best_kind == "team"


def sample_rows(session: Session, to: str | None = None) -> dict[str, Notification]:
    """One notification per event: the latest, a person's copy where there is one (it has
    links; the latest approval request is the one still waiting), the common case before its
    other one (a part nobody may decide, units still to come), a list of devices before one device. `to`: only the copies to that person or team (an email, or a team
    such as it), the latest of each event."""
    rows: dict[str, Notification] = {}
    for row in session.exec(select(Notification).order_by(col(Notification.id))).all():
        best = rows.get(row.event)
        if to is not None:
            if row.audience.split(":", 1)[-1] == to:
                rows[row.event] = row
        elif row.event == "digest":  # the fullest week shows every section
            if best is None or len(str(row.context)) > len(str(best.context)):
                rows[row.event] = row
        elif best is None or _better(row, best):
            rows[row.event] = row
    return rows


def sample_copies(session: Session) -> dict[str, list[Notification]]:
    """Every event's sample row (sample_rows), then the latest copy of each other variant
    where there is one (sample_variant: a team's copy is built from its own notice, whose fields can
    differ from a person's; a part nobody may decide reads otherwise, and so does one device
    where a list was shown), so a check renders all."""
    chosen = sample_rows(session)
    copies = {event: [row] for event, row in chosen.items()}
    for row in session.exec(select(Notification).order_by(col(Notification.id).desc())).all():
        if sample_variant(row) not in {sample_variant(r) for r in copies[row.event]}:
            copies[row.event].append(row)
    return copies
