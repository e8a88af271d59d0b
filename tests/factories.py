"""Small factories for tests: data built from defaults with **overrides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

import sample
from models import actions, pipeline
from models.audit import AuditEvent
from models.catalog import load_catalog, read_catalog_file
from models.db import transaction
from models.org import load_org
from models.requests import Draft, RequestCreate
from models.sources import Document
from models.views import request_detail

# Wednesday 25 November 2026, 10:00 in Berlin: a working day.
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
TODAY = NOW.date()

RITA = "rita.requester@example.com"
NINA = "nina.newhire@example.com"
IDA = "ida.it@example.com"
IVAN = "ivan.it@example.com"
PAUL = "paul.purchasing@example.com"
PETRA = "petra.purchasing@example.com"
HANNA = "hanna.hr@example.com"
FIONA = "fiona.finance@example.com"
MAX = "max.management@example.com"
BOB = "bob.budget@example.com"
CARL = "carl.deputy@example.com"
SARA = "sara.sales@example.com"


def load_sample(session: Session) -> None:
    """The default pipeline and the sample organisation and catalog (without the agreement)."""
    text = pipeline.DEFAULT_PIPELINE.read_text(encoding="utf-8")
    pipeline.install(session, text=text, source="default.yaml", actor="tests", at=NOW)
    sample.load(session, actor="tests", at=NOW, agreements=False)


def request_data(**overrides: Any) -> dict[str, Any]:
    """A request as a file would hold it: Rita asks for Nina's standard laptop."""
    data: dict[str, Any] = {
        "kind": "onboarding",
        "requester": RITA,
        "on_behalf_of": NINA,
        "cost_centre": "CC-ENG",
        "needed_by": (TODAY + timedelta(days=28)).isoformat(),
        "justification": "Nina joins the platform team.",
        "lines": [{"sku": "LAPTOP-STD-14", "quantity": 1}],
    }
    data.update(overrides)
    return data


def draft(**overrides: Any) -> Draft:
    data = request_data(**overrides)
    return Draft(RequestCreate.model_validate(data), Document("test", data), ())


def submit(engine: Engine, now: datetime = NOW, **overrides: Any) -> str:
    """Submit one request; returns its reference."""
    with transaction(engine) as session:
        (result,) = actions.submit(session, drafts=[draft(**overrides)], now=now)
    return result.ref


PURCHASERS = {PAUL, PETRA}


def decide(
    engine: Engine, ref: str, who: str, outcome: str = "approve", now: datetime = NOW, **kw: Any
) -> actions.DecisionResult:
    """One decision. Purchasing approving also confirms the contract terms, as it does in the
    joint review (pass confirm_terms=False to leave the checklist open); rejecting says why and
    sending back what to change, as they must (pass comment="" to leave it out)."""
    if outcome == "approve" and who in PURCHASERS:
        kw.setdefault("confirm_terms", True)
    if outcome == "send_back":
        kw.setdefault("comment", "Please change the request.")
    if outcome == "reject":
        kw.setdefault("comment", "Not this quarter.")
    with transaction(engine) as session:
        return actions.decide(session, ref=ref, actor_email=who, outcome=outcome, now=now, **kw)


def show(engine: Engine, ref: str, now: datetime = NOW) -> dict[str, Any]:
    with transaction(engine, readonly=True) as session:
        return request_detail(session, actions.get_request(session, ref), now=now)


def approve_all(engine: Engine, ref: str, now: datetime = NOW) -> dict[str, Any]:
    """Decide every pending stage with the first eligible approver until nothing is pending."""
    for _ in range(20):
        detail = show(engine, ref, now)
        if not detail["pending"]:
            return detail
        pending = detail["pending"][0]
        used = {d["by"] for s in detail["stages"] for d in s["decisions"]}
        who = next(a for a in pending["approvers"] if a not in used)
        decide(engine, ref, who, "approve", now, stage_key=pending["stage"])
    raise AssertionError(f"{ref} still pending after 20 decisions")


def status(engine: Engine, ref: str) -> str:
    return str(show(engine, ref)["status"])


def load_org_data(engine: Engine, data: dict[str, Any], at: datetime = NOW) -> None:
    """Load an organisation file's content (people, cost_centres, delegations) as `procure org load`."""
    from models.org import OrgFile

    with transaction(engine) as session:
        org = OrgFile.model_validate(data)
        load_org(session, org=org, doc=Document("test-org.yaml", data), actor="tests", at=at)


def install_edited_pipeline(engine: Engine, source: str, *edits: tuple[str, str]) -> None:
    """Install the default pipeline as version 2, each (old, new) text replaced where it occurs
    once (asserted), as an organisation edits its copy."""
    text = pipeline.DEFAULT_PIPELINE.read_text(encoding="utf-8")
    for old, new in (("\nversion: 1\n", "\nversion: 2\n"), *edits):
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    with transaction(engine) as session:
        pipeline.install(session, text=text, source=source, actor="tests", at=NOW)


def give_roles(engine: Engine, email: str, *roles: str) -> None:
    """Give a person more roles, keeping the ones they hold (through an organisation file)."""
    from sqlmodel import select

    from models.org import Person, roles_of

    with transaction(engine, readonly=True) as session:
        found = session.exec(select(Person).where(Person.email == email)).one()
        assert found.id is not None
        held = roles_of(session, found.id)
    entry = {"email": email, "name": found.name, "department": found.department}
    load_org_data(engine, {"people": [{**entry, "roles": sorted(held | set(roles))}]})


def load_catalog_path(engine: Engine, path: Any, at: datetime = NOW) -> dict[str, dict[str, int]]:
    """Load a catalog file (suppliers, items, agreements, offers, bundles) as `procure catalog load`;
    e.g. sample.AGREEMENTS, which load_sample leaves out. Returns the tallies."""
    with transaction(engine) as session:
        catalog, doc = read_catalog_file(path)
        return load_catalog(session, catalog=catalog, doc=doc, actor="tests", at=at)


def row_counts(engine: Engine) -> dict[str, Any]:
    """The number of rows of every table, and the audit chain's head: what "nothing written" keeps."""
    from sqlalchemy import func, select

    from models.schema import metadata

    with transaction(engine, readonly=True) as session:
        counts: dict[str, Any] = {
            name: session.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in sorted(metadata.tables.items())
        }
        head = metadata.tables["audit_head"]
        counts["audit_head"] = tuple(session.execute(select(head.c.seq, head.c.hash)).one())
    return counts


def stale_notices(engine: Engine) -> set[int]:
    """The queued notifications the dispatcher will drop, not send: they ask for decisions made
    since they were queued (actions.stale_notices)."""
    from sqlmodel import select

    from models.outbox import Notification

    with transaction(engine, readonly=True) as session:
        rows = session.exec(select(Notification).where(Notification.status != "sent")).all()
        return set(actions.stale_notices(session, rows))


def audit_rows(engine: Engine, ref: str, action: str) -> list[AuditEvent]:
    """A request's (or its part's) audit rows of one action, oldest first."""
    with transaction(engine, readonly=True) as session:
        return list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.entity_id == ref, AuditEvent.action == action)
                .order_by(col(AuditEvent.seq))
            ).all()
        )


def stage_rounds(engine: Engine, ref: str) -> dict[str, tuple[str, int]]:
    """Each stage of a request: (its status, its round)."""
    return {s["stage"]: (s["status"], s["round"]) for s in show(engine, ref)["stages"]}


# A framework agreement for ten headsets at 99.00 (its committed volume), on complete terms.
HEADSETS = """\
agreements:
  - code: FA-HEADSET
    name: Headsets, ten units
    supplier: NORDIC-IT
    valid_from: 2026-01-01
    valid_to: 2027-12-31
    committed_volume: 10
    terms: {sla: Next business day, warranty_months: 24, returns: 30 days, erasure: Not applicable}
    prices:
      - sku: HEADSET-BT
        tiers: [{from: 1, unit_price: 99.00}]
"""
