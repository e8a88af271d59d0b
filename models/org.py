"""The organisation: people and their roles, cost centres with budget owners, delegations."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PField
from sqlalchemy import UniqueConstraint, bindparam, insert
from sqlmodel import Field, Session, SQLModel, col, select

from models import audit, reference
from models.errors import FieldErrors, InputError, Problem, in_file_order
from models.fields import Amount, Code, Email, Flag, Name, Text, roles_list
from models.records import tally, upsert
from models.sources import Document, load_document, valid, validate
from models.types import Money, utcnow


class Role(StrEnum):
    """What a person may do in a pipeline; budget owners come from cost centres instead."""

    REQUESTER = "requester"
    IT = "it"
    PURCHASING = "purchasing"
    HR = "hr"
    FINANCE = "finance"
    MANAGEMENT = "management"


BUDGET_OWNER = "budget_owner"  # a pipeline role filled by the request's cost centre owner
PIPELINE_ROLES = frozenset({*(r.value for r in Role), BUDGET_OWNER})


# Fields every person has (shared by the table and the input models).
class PersonBase(SQLModel):
    email: str = Field(max_length=254, unique=True, index=True)
    name: str = Field(max_length=200)
    department: str = Field(default="", max_length=200)
    active: bool = True


# A person as stored.
class Person(PersonBase, table=True):
    __tablename__ = "person"
    id: int | None = Field(default=None, primary_key=True)
    # A leaver's last day as the HR sync last gave it (a delta export names them once): the
    # lifecycle watch asks their devices back shortly before it and deactivates them after.
    leaves_on: date | None = Field(default=None, index=True)


# The roles a person holds (one row per role).
class PersonRole(SQLModel, table=True):
    __tablename__ = "person_role"
    person_id: int = Field(foreign_key="person.id", primary_key=True)
    role: str = Field(max_length=32, primary_key=True, index=True)


# A cost centre and the person who owns its budget.
class CostCentre(SQLModel, table=True):
    __tablename__ = "cost_centre"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    budget_owner_id: int = Field(foreign_key="person.id")


# A cost centre's budget for one fiscal year.
class Budget(SQLModel, table=True):
    __tablename__ = "budget"
    __table_args__ = (UniqueConstraint("cost_centre_id", "fiscal_year"),)
    id: int | None = Field(default=None, primary_key=True)
    cost_centre_id: int = Field(foreign_key="cost_centre.id", index=True)
    fiscal_year: int
    amount: Decimal = Field(sa_type=Money)


# An approver's absence: the delegate acts on the delegator's behalf from starts_on to ends_on.
class Delegation(SQLModel, table=True):
    __tablename__ = "delegation"
    __table_args__ = (UniqueConstraint("delegator_id", "delegate_id", "starts_on"),)
    id: int | None = Field(default=None, primary_key=True)
    delegator_id: int = Field(foreign_key="person.id", index=True)
    delegate_id: int = Field(foreign_key="person.id", index=True)
    starts_on: date
    ends_on: date
    reason: str = Field(default="", max_length=500)

    def covers(self, day: date) -> bool:
        """Whether the delegation is in force on this day (both ends included)."""
        return self.starts_on <= day <= self.ends_on


# Loading an organisation file


# A person as written in an organisation file.
class PersonCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Email
    name: Name = PField(min_length=1, max_length=200)
    department: Name = PField(default="", max_length=200)
    roles: list[Role] = PField(default_factory=lambda: [Role.REQUESTER])
    # Not given: active, except someone who left stays inactive (only `true` brings them back).
    active: Flag = None

    @field_validator("roles", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return roles_list(value)


# A cost centre as written in an organisation file.
class CostCentreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    name: Name = PField(min_length=1, max_length=200)
    budget_owner: Email
    budgets: dict[int, Amount] = PField(default_factory=dict)  # fiscal year -> amount

    @field_validator("budgets")
    @classmethod
    def _years(cls, value: dict[int, Decimal]) -> dict[int, Decimal]:
        for year in value:
            if not 2000 <= year <= 2100:
                raise ValueError(f"{year} is not a fiscal year (2000-2100)")
        return value


# A delegation as written in an organisation file.
class DelegationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    delegator: Email
    delegate: Email
    starts_on: date = PField(alias="from")
    ends_on: date = PField(alias="to")
    reason: Text = PField(default="", max_length=500)


# A whole organisation file (YAML/JSON); a CSV file holds people only.
class OrgFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    people: list[PersonCreate] = PField(default_factory=list)
    cost_centres: list[CostCentreCreate] = PField(default_factory=list)
    delegations: list[DelegationCreate] = PField(default_factory=list)


PEOPLE_COLUMNS = {"email", "name", "department", "roles", "active"}


def read_org_file(path: Path | str) -> tuple[OrgFile, Document]:
    """Parse an organisation file (YAML, JSON, or CSV of people)."""
    doc = load_document(path, required={"email", "name"}, known=PEOPLE_COLUMNS)
    if isinstance(doc.data, list) and Path(path).suffix.lower() == ".csv":
        doc = Document(
            doc.source,
            {"people": doc.data},
            {("people", *k): v for k, v in doc.lines.items()},
        )
    if not isinstance(doc.data, dict):
        raise InputError(
            doc.problem((), "expected a mapping with people, cost_centres, delegations")
        )
    try:
        return validate(OrgFile, doc.data, doc), doc
    except FieldErrors as exc:
        # What check_org needs to check the valid part too (FieldErrors.with_checks).
        raise exc.map_partial(lambda org: (org, doc)) from None


def check_org(session: Session, org: OrgFile, doc: Document) -> list[Problem]:
    """Everything wrong with an organisation file beyond its fields: people listed twice,
    unknown people, delegations to oneself or ending first. On a partial file (a read that
    raised FieldErrors), the fields that validated."""
    problems = []
    people = org.people if valid(org, "people") else []
    seen: dict[str, int] = {}
    for i, p in enumerate(people):
        if not valid(p, "email"):
            continue
        if p.email in seen:
            problems.append(
                doc.problem(
                    ("people", i, "email"),
                    f"{p.email} is listed twice (also people[{seen[p.email]}])",
                )
            )
        seen[p.email] = i
    known = set(seen) | set(session.exec(select(Person.email)).all())
    # Without the list of people, an owner or delegate cannot be told unknown.
    judge = valid(org, "people")
    for i, c in enumerate(org.cost_centres if valid(org, "cost_centres") else []):
        if judge and valid(c, "budget_owner") and c.budget_owner not in known:
            problems.append(
                doc.problem(("cost_centres", i, "budget_owner"), f"unknown person {c.budget_owner}")
            )
    for i, d in enumerate(org.delegations if valid(org, "delegations") else []):
        for name in ("delegator", "delegate"):
            if judge and valid(d, name) and getattr(d, name) not in known:
                problems.append(
                    doc.problem(("delegations", i, name), f"unknown person {getattr(d, name)}")
                )
        if valid(d, "delegator", "delegate") and d.delegator == d.delegate:
            problems.append(
                doc.problem(
                    ("delegations", i, "delegate"), "a person cannot delegate to themselves"
                )
            )
        if valid(d, "starts_on", "ends_on") and d.ends_on < d.starts_on:
            problems.append(
                doc.problem(
                    ("delegations", i, "to"), f"ends ({d.ends_on}) before it starts ({d.starts_on})"
                )
            )
    return in_file_order(problems)


def load_org(
    session: Session, *, org: OrgFile, doc: Document, actor: str, at: datetime | None = None
) -> dict[str, dict[str, int]]:
    """Create or update people, cost centres and delegations; all or nothing."""
    problems = check_org(session, org, doc)
    if problems:
        raise InputError(problems)

    results: dict[str, list[str]] = {
        "person": [],
        "cost_centre": [],
        "budget": [],
        "delegation": [],
    }
    # People in bulk (an HR directory has thousands): one lookup of who exists.
    emails = [p.email for p in org.people]
    found: dict[str, Person] = {}
    for start in range(0, len(emails), 500):
        batch = emails[start : start + 500]
        found.update(
            (row.email, row)
            for row in session.exec(select(Person).where(col(Person.email).in_(batch))).all()
        )
    # New people: one bulk INSERT (returning their ids), one bulk audit append with their
    # roles, one bulk INSERT of the roles. Known people: compared and updated one by one.
    ids_by_email: dict[str, int] = {}
    fresh = [p for p in org.people if p.email not in found]
    for start in range(0, len(fresh), 1000):
        chunk = fresh[start : start + 1000]
        inserted = session.execute(
            insert(Person).returning(col(Person.id), col(Person.email)),
            [
                {
                    "email": p.email,
                    "name": p.name,
                    "department": p.department,
                    "active": p.active is not False,
                }
                for p in chunk
            ],
        ).all()
        ids_by_email.update((email, id_) for id_, email in inserted)
    audit.append_many(
        session,
        [
            {
                "actor": actor,
                "entity": "person",
                "entity_id": p.email,
                "action": "create",
                "details": {
                    "email": p.email,
                    "name": p.name,
                    "department": p.department,
                    "active": p.active is not False,
                    "roles": sorted(r.value for r in p.roles),
                },
                "at": at,
            }
            for p in fresh
        ],
    )
    role_rows = [
        {"person_id": ids_by_email[p.email], "role": r.value} for p in fresh for r in p.roles
    ]
    for start in range(0, len(role_rows), 1000):
        session.execute(insert(PersonRole), role_rows[start : start + 1000])
    results["person"].extend("created" for _ in fresh)

    known_people = [p for p in org.people if p.email in found]
    # People who left (the HR sync or lifecycle watch deactivated them) stay inactive unless
    # the file says `active: true`: an older file must not give a leaver their approvals back.
    left = _left(session, [p.email for p in known_people if not found[p.email].active])
    kept_inactive = 0
    roles_of: dict[int, set[str]] = {}
    known_ids = [found[p.email].id for p in known_people]
    for start in range(0, len(known_ids), 500):
        for person_id_, role in session.exec(
            select(PersonRole.person_id, PersonRole.role).where(
                col(PersonRole.person_id).in_(known_ids[start : start + 500])
            )
        ).all():
            roles_of.setdefault(person_id_, set()).add(role)
    for p in known_people:
        values: dict[str, Any] = {"name": p.name, "department": p.department}
        back = p.email in left and p.active is True
        if p.email in left and p.active is None:
            kept_inactive += 1
        elif not back:
            values["active"] = p.active is not False
        row, what = upsert(
            session,
            Person,
            match={"email": p.email},
            values=values,
            entity="person",
            entity_id=p.email,
            actor=actor,
            at=at,
            existing=found[p.email],
        )
        assert row.id is not None
        if back:
            _reactivate(session, row, actor=actor, at=at)
            what = "updated"
        ids_by_email[p.email] = row.id
        current = roles_of.get(row.id, set())
        wanted = {r.value for r in p.roles}
        if current != wanted:
            for role in current - wanted:
                stale = session.get(PersonRole, (row.id, role))
                if stale is not None:
                    session.delete(stale)
            for role in wanted - current:
                session.add(PersonRole(person_id=row.id, role=role))
            audit.append(
                session,
                actor=actor,
                entity="person",
                entity_id=p.email,
                action="roles",
                details={"from": sorted(current), "to": sorted(wanted)},
                at=at,
            )
            if what == "unchanged":
                what = "updated"
        results["person"].append(what)

    def person_id(email: str) -> int:
        if email in ids_by_email:
            return ids_by_email[email]
        row = session.exec(select(Person).where(Person.email == email)).one()
        assert row.id is not None
        return row.id

    for c in org.cost_centres:
        centre, what = upsert(
            session,
            CostCentre,
            match={"code": c.code},
            values={"name": c.name, "budget_owner_id": person_id(c.budget_owner)},
            entity="cost_centre",
            entity_id=c.code,
            actor=actor,
            at=at,
        )
        results["cost_centre"].append(what)
        for year, amount in c.budgets.items():
            _, what = upsert(
                session,
                Budget,
                match={"cost_centre_id": centre.id, "fiscal_year": year},
                values={"amount": amount},
                entity="budget",
                entity_id=f"{c.code}/{year}",
                actor=actor,
                at=at,
            )
            results["budget"].append(what)
    for d in org.delegations:
        delegator, delegate = person_id(d.delegator), person_id(d.delegate)
        _, what = upsert(
            session,
            Delegation,
            match={"delegator_id": delegator, "delegate_id": delegate, "starts_on": d.starts_on},
            values={"ends_on": d.ends_on, "reason": d.reason},
            entity="delegation",
            entity_id=f"{d.delegator}->{d.delegate}@{d.starts_on}",
            actor=actor,
            at=at,
        )
        results["delegation"].append(what)
    session.flush()
    # A role taken away, a person deactivated or a cost centre's owner changed can leave an open
    # stage's part to nobody: it is escalated now, in this transaction, not at its next reminder.
    # (Imported here: the actions build on this module.)
    from models.actions import reassess

    reassess(session, now=at or utcnow())
    tallies = {kind: tally(outcomes) for kind, outcomes in results.items()}
    tallies["person"]["kept_inactive"] = kept_inactive
    return tallies


def _left(session: Session, emails: list[str]) -> set[str]:
    """Of these inactive people, those who left: deactivated by the HR sync or the lifecycle
    watch after their last day (the audit trail's `left`), not by an organisation file."""
    found: set[str] = set()
    for start in range(0, len(emails), 500):
        found.update(
            session.exec(
                select(audit.AuditEvent.entity_id).where(
                    audit.AuditEvent.entity == "person",
                    audit.AuditEvent.action == "left",
                    col(audit.AuditEvent.entity_id).in_(emails[start : start + 500]),
                )
            ).all()
        )
    return found


def _reactivate(session: Session, person: Person, *, actor: str, at: datetime | None) -> None:
    """Bring back a person who left because the organisation file says `active: true`: active
    again, their past last day cleared (else the lifecycle watch deactivates them again)."""
    day = (at or utcnow()).date()
    changed: dict[str, Any] = {"active": [False, True]}
    if person.leaves_on is not None and person.leaves_on <= day:
        changed["leaves_on"] = [person.leaves_on, None]
        person.leaves_on = None
    person.active = True
    session.add(person)
    audit.append(
        session,
        actor=actor,
        entity="person",
        entity_id=person.email,
        action="reactivated",
        details={"changed": changed, "why": "the organisation file says active: true"},
        at=at,
    )


# Built once, run with new parameters: the look-ups every action makes.
PERSON_BY_EMAIL = select(Person).where(Person.email == bindparam("email"))
ROLES_OF = select(PersonRole.role).where(PersonRole.person_id == bindparam("person_id"))


def person_by_email(session: Session, email: str) -> Person | None:
    """The person with this email (case-insensitive), or None."""
    return session.exec(PERSON_BY_EMAIL, params={"email": email.strip().lower()}).first()


def roles_of(session: Session, person_id: int) -> set[str]:
    return set(reference.shared(session, ROLES_OF, {"person_id": person_id}))
