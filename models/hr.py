"""HR sync: joiners get an onboarding request with their role's kit, leavers give their devices back.

The HR system exports a CSV (one row per person who joins or leaves):

    email,name,department,role,cost_centre,manager,start_date,end_date[,status]

A joiner (a start date from today on) becomes a person if they are new, and gets an onboarding
request for the bundle named by `role`, needed by the start date, requested by the manager.
A joiner whose start date moved keeps the onboarding request they have (one kit, not two):
the move is recorded on it and the manager, IT and purchasing are told once, to plan the
delivery or cancel the request (the next sync then files one for the new date).
A leaver (an end date: their last day) has it recorded on the person (`leaves_on`), as the
export may name them only once. Their devices are asked back `offboarding.return_lead_workdays`
working days (pipeline file; 10 unless set) before that day: by this sync when the day is that
close or past, otherwise by the daily lifecycle watch when it comes (`leaver_watch`), which also
asks back a device handed to them since and deactivates them after the day (they can no longer
approve). Until then IT is told once per date, with the devices they hold, to plan. A later row
with another end date moves the day (IT is told again); a start date after it (a rehire) clears
it. A row whose `status` is `withdrawn` (the optional column; empty for every other row) cancels
the leave (a resignation withdrawn, a termination rescinded): the last day is cleared and audited
(`leave_withdrawn`), no device is asked back for it, and IT is told (`leaver_cancelled`) with the
devices the person holds. Devices already asked back (the return day had come) stay asked back
until IT settles it with the holder: IT's notice lists them, and `procure asset cancel-return`
lets the person keep one. A leaver already deactivated after their last day is made active again. The row may
repeat the end date it withdraws (it must then be the recorded one) and gives no start date.
The file is checked whole before anything is written; rows are then applied in batches, each
idempotent, so a sync can be run again or resumed after a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator
from pydantic import Field as PField
from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from models import actions, audit, outbox, pipeline
from models.assets import Asset
from models.audit import AuditEvent
from models.catalog import Bundle
from models.errors import FieldErrors, InputError, Problem, in_file_order
from models.fields import Code, Email, Name
from models.lifecycle import AssetStatus, RequestStatus
from models.org import CostCentre, Person, PersonRole, Role
from models.outbox import Notice, person, team
from models.pipeline import PipelineSpec
from models.records import upsert
from models.requests import Draft, Request, RequestCreate, RequestKind
from models.sources import Document, load_document, valid, validate
from models.types import plural

COLUMNS = {
    "email",
    "name",
    "department",
    "role",
    "cost_centre",
    "manager",
    "start_date",
    "end_date",
    "status",
}
REQUIRED = {"email", "name"}
JOIN_HORIZON_DAYS = 180  # joiners further ahead wait for a later sync
WITHDRAWN = "withdrawn"  # the status of a row cancelling a leave HR announced before


def _status(value: Any) -> Any:
    """A row's status: empty (a joiner or a leaver) or `withdrawn` (a leave cancelled)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "":
        return None
    if text != WITHDRAWN:
        raise ValueError(
            f"unknown status {str(value).strip()!r}: leave it empty, or write "
            f"{WITHDRAWN!r} to cancel the person's leave"
        )
    return text


# One row of the HR export.
class HrRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Email
    name: Name = PField(min_length=1, max_length=200)
    department: Name = PField(default="", max_length=200)
    role: Code | None = None  # the bundle of a joiner's standard kit
    cost_centre: Code | None = None
    manager: Email | None = None
    start_date: date | None = None
    end_date: date | None = None
    status: Annotated[str | None, BeforeValidator(_status)] = None

    @property
    def withdrawn(self) -> bool:
        """Whether the row cancels the person's leave."""
        return self.status == WITHDRAWN

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, value: date | None, info: Any) -> date | None:
        start = info.data.get("start_date")
        if value is not None and start is not None and value < start:
            raise ValueError(f"ends ({value}) before it starts ({start})")
        return value


@dataclass
class HrFile:
    """A checked HR export: its rows and where each came from."""

    rows: list[HrRow]
    lines: list[int | None]
    source: str


def read_hr_file(path: Path | str) -> HrFile:
    """Parse and check an HR export (CSV); every problem names file, line and column."""
    if not str(path).strip():
        # A deployment made without PROCURE_HR_EXPORT (prefect.yaml fills `export` from it).
        raise InputError(
            Problem(
                "no HR export file named: deploy hr-sync with PROCURE_HR_EXPORT set to the "
                "export's path, or pass the path",
                field="export",
            )
        )
    doc: Document = load_document(path, required=REQUIRED, known=COLUMNS)
    if not isinstance(doc.data, list):
        raise InputError(doc.problem((), "an HR export is a CSV file with a header row"))
    rows: list[HrRow] = []
    lines: list[int | None] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, data in enumerate(doc.data):
        try:
            row = validate(HrRow, data, doc, (index,))
        except FieldErrors as exc:
            problems.extend(exc.problems)
            row = exc.partial  # its valid fields are still checked, here and for references
            if row is None:
                continue
        if _withdraws(row):
            if valid(row, "start_date") and row.start_date is not None:
                problems.append(
                    doc.problem(
                        (index, "start_date"),
                        "a withdrawn row cancels a leave and gives no start_date (a joiner who "
                        "no longer comes: cancel their onboarding request)",
                    )
                )
        elif (
            valid(row, "start_date", "end_date") and row.start_date is None and row.end_date is None
        ):
            problems.append(
                doc.problem(
                    (index,),
                    "gives neither start_date (a joiner) nor end_date (a leaver), nor status "
                    "withdrawn (a leave cancelled)",
                )
            )
        if valid(row, "email"):
            if row.email in seen:
                problems.append(
                    doc.problem(
                        (index, "email"),
                        f"{row.email} is listed twice (also row {seen[row.email] + 2})",
                    )
                )
            seen.setdefault(row.email, index)
        rows.append(row)
        lines.append(doc.line_of((index,)))
    if problems:
        # With the rows as far as they are valid, for check_references.
        raise FieldErrors(in_file_order(problems), lambda: HrFile(rows, lines, doc.source))
    return HrFile(rows, lines, doc.source)


def read_checked(session: Session, path: Path | str, *, now: datetime) -> HrFile:
    """An HR export parsed and its references checked against the database, whole, before
    anything is written (the day is the active pipeline's calendar's, for who joins soon);
    rows with bad fields have their references checked too, so one run names every problem."""
    try:
        hr = read_hr_file(path)
    except FieldErrors as exc:
        _, spec = pipeline.active(session)
        today = spec.calendar.today(now)
        raise exc.with_checks(
            lambda partial: check_references(session, partial, today=today)
        ) from None
    _, spec = pipeline.active(session)
    problems = check_references(session, hr, today=spec.calendar.today(now))
    if problems:
        raise InputError(problems)
    return hr


def check_references(session: Session, hr: HrFile, *, today: date) -> list[Problem]:
    """Every joiner's bundle, cost centre and manager must exist, and a withdrawn row's end date
    must be the last day it cancels; all problems at once (of a partial file, those of the valid
    fields of rows whose start date is valid)."""
    bundles = set(session.exec(select(Bundle.code)).all())
    centres = set(session.exec(select(CostCentre.code)).all())
    people = set(session.exec(select(Person.email)).all()) | {
        r.email for r in hr.rows if valid(r, "email")
    }
    # A manager who left cannot request their joiner's kit (nor approve it): named up front,
    # not found by the sync halfway through its batches. One the file brings back is active.
    gone = set(session.exec(select(Person.email).where(col(Person.active).is_(False))).all())
    gone -= {r.email for r in hr.rows if valid(r, "email", "start_date") and _joins(r, today)}
    problems = []
    for row, line in zip(hr.rows, hr.lines, strict=True):
        if not (valid(row, "start_date") and _joins(row, today)) or _withdraws(row):
            continue
        for name, value, known in (
            ("role", row.role, bundles),
            ("cost_centre", row.cost_centre, centres),
            ("manager", row.manager, people),
        ):
            if not valid(row, name):
                continue
            if value is None:
                problems.append(Problem("is required for a joiner", hr.source, line, name))
            elif value not in known:
                what = {"role": "bundle", "cost_centre": "cost centre", "manager": "person"}[name]
                problems.append(Problem(f"unknown {what} {value}", hr.source, line, name))
            elif name == "manager" and value in gone:
                problems.append(
                    Problem(f"{value} is no longer active (left)", hr.source, line, name)
                )
    problems += _withdrawn_elsewhere(session, hr)
    return in_file_order(problems)


def _withdrawn_elsewhere(session: Session, hr: HrFile) -> list[Problem]:
    """Withdrawn rows naming another last day than the one recorded: an export older than the
    move, or the wrong person; refused rather than guessed (one without an end date cancels
    whatever day is recorded)."""
    named = {
        r.email: (r, line)
        for r, line in zip(hr.rows, hr.lines, strict=True)
        if valid(r, "email", "end_date") and _withdraws(r) and r.end_date is not None
    }
    problems = []
    emails = sorted(named)
    for start in range(0, len(emails), 500):
        for known in session.exec(
            select(Person).where(
                col(Person.email).in_(emails[start : start + 500]),
                col(Person.leaves_on).is_not(None),
            )
        ).all():
            row, line = named[known.email]
            email, leaves_on = known.email, known.leaves_on
            if leaves_on != row.end_date:
                problems.append(
                    Problem(
                        f"withdraws the last day {row.end_date}, but the one HR gave last for "
                        f"{email} is {leaves_on}: give that day, or leave end_date empty",
                        hr.source,
                        line,
                        "end_date",
                    )
                )
    return problems


def _withdraws(row: HrRow) -> bool:
    """Whether a row (of a partial file too) cancels a leave: no joiner, whatever its start."""
    return valid(row, "status") and row.withdrawn


def _joins(row: HrRow, today: date) -> bool:
    return row.start_date is not None and today <= row.start_date <= today + timedelta(
        days=JOIN_HORIZON_DAYS
    )


@dataclass
class SyncResult:
    """What a batch of the sync (or of the leaver watch) did."""

    joiners: list[str] = field(default_factory=list)  # onboarding requests created
    moved: list[str] = field(default_factory=list)  # onboarding requests whose start moved
    # Every leaver the sync did something for (their last day recorded or moved, devices asked
    # back, deactivated), each with what it did (leaver_entry).
    leavers: list[dict[str, Any]] = field(default_factory=list)
    returns: list[str] = field(default_factory=list)  # serials asked back
    deactivated: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)  # leaves cancelled (last day cleared)
    unchanged: int = 0

    def add(self, other: SyncResult) -> None:
        self.joiners += other.joiners
        self.moved += other.moved
        self.leavers += other.leavers
        self.returns += other.returns
        self.deactivated += other.deactivated
        self.withdrawn += other.withdrawn
        self.unchanged += other.unchanged


# The requests a joiner's onboarding may already be: any but one that was turned down.
_ENDED = (RequestStatus.REJECTED, RequestStatus.CANCELLED, RequestStatus.CLOSED)


def _join_key(email: str, start: date | str = "") -> str:
    """The idempotency key of a joiner's onboarding request (with no start: its prefix)."""
    return f"hr-join:{email}:{start}"


def _onboarding_of(session: Session, email: str) -> Request | None:
    """The onboarding request an earlier sync filed for this joiner, unless it ended (rejected,
    cancelled, or closed with its devices back: a new start is a new onboarding)."""
    return session.exec(
        select(Request)
        .where(
            # autoescape: an email's _ is a letter here, not LIKE's any-character
            col(Request.idempotency_key).startswith(_join_key(email), autoescape=True),
            col(Request.status).not_in(_ENDED),
        )
        .order_by(col(Request.id).desc())
    ).first()


def _start_moved(session: Session, request: Request, start: date, now: datetime) -> bool:
    """Record on the joiner's onboarding request that HR moved the start date, and tell the
    manager, IT and purchasing; once for each move (False: the date is the one last known,
    the request's own or the last move's)."""
    told = session.exec(
        select(AuditEvent.details)
        .where(AuditEvent.request_id == request.id, AuditEvent.action == "start_moved")
        .order_by(col(AuditEvent.seq))
    ).all()
    known = told[-1]["to"] if told else request.needed_by.isoformat()
    if start.isoformat() == known:
        return False
    key = f"{request.ref}/start/{len(told) + 1}"
    context = {"start_date": start}
    audit.append(
        session,
        actor="hr sync",
        entity="request",
        entity_id=request.ref,
        request_id=request.id,
        action="start_moved",
        details={"from": known, "to": start, "needed_by": request.needed_by},
        at=now,
    )
    manager = actions.requester_of(session, request)
    for audience in (person(manager.email), team(Role.IT), team(Role.PURCHASING)):
        outbox.queue(
            session, Notice("start_moved", audience, key, context), request_id=request.id, at=now
        )
    return True


def apply(
    session: Session, *, rows: Sequence[HrRow], now: datetime, spec: PipelineSpec
) -> SyncResult:
    """Apply one batch of checked rows (idempotent: a row applied twice changes nothing more)."""
    today = spec.calendar.today(now)
    result = SyncResult()
    for row in rows:
        changed = False
        known = session.exec(select(Person).where(Person.email == row.email)).first()
        before = known.leaves_on if known is not None else None
        if row.withdrawn and known is None:
            result.unchanged += 1  # a leave cancelled for someone never named: nobody to create
            continue
        values: dict[str, Any] = {"name": row.name}
        if row.department or known is None:
            # An export that leaves it empty (a leaver's row in a delta) does not blank it.
            values["department"] = row.department
        if row.withdrawn:
            pass  # the end date it names is the one it cancels
        elif row.end_date is not None:
            values["leaves_on"] = row.end_date
        elif before is not None and row.start_date is not None and row.start_date > before:
            values["leaves_on"] = None  # rehired after their last day: no longer leaving
        if known is not None and not known.active and _joins(row, today):
            values["active"] = True  # a former colleague joins again: onboarded as any joiner
        person_row, what = upsert(
            session,
            Person,
            match={"email": row.email},
            values=values,
            entity="person",
            entity_id=row.email,
            actor="hr sync",
            at=now,
            existing=known,
        )
        assert person_row.id is not None
        if row.withdrawn:
            if not (
                _withdraw(session, person_row, spec=spec, now=now, result=result)
                or what != "unchanged"
            ):
                result.unchanged += 1
            continue
        if what == "created":
            session.add(PersonRole(person_id=person_row.id, role=Role.REQUESTER.value))
            changed = True
        if _joins(row, today):
            assert (
                row.manager is not None
                and row.cost_centre is not None
                and row.start_date is not None
            )
            onboarding = _onboarding_of(session, row.email)
            if onboarding is not None:
                if _start_moved(session, onboarding, row.start_date, now):
                    result.moved.append(onboarding.ref)
                    changed = True
            else:
                create = RequestCreate.model_validate(
                    {
                        "kind": RequestKind.ONBOARDING.value,
                        "requester": row.manager,
                        "on_behalf_of": row.email,
                        "cost_centre": row.cost_centre,
                        "needed_by": row.start_date.isoformat(),
                        "justification": f"{row.name} starts on {row.start_date} ({row.role}).",
                        "bundle": row.role,
                        "idempotency_key": _join_key(row.email, row.start_date),
                    }
                )
                (submitted,) = actions.submit(
                    session, drafts=[Draft(create, Document("hr sync", {}), ())], now=now
                )
                if submitted.created:
                    result.joiners.append(submitted.ref)
                    changed = True
        announced = False
        if person_row.leaves_on != before:
            changed = True
            if person_row.leaves_on is not None and return_day(person_row.leaves_on, spec) > today:
                # Asked back later (the lifecycle watch); IT plans the collection meanwhile.
                announced = _announce(session, person_row, before, spec, now)
        asked, left = len(result.returns), len(result.deactivated)
        if _offboard(session, person_row, spec=spec, now=now, result=result, actor="hr sync"):
            changed = True
        if person_row.leaves_on is not None and (
            person_row.leaves_on != before or result.returns[asked:] or result.deactivated[left:]
        ):
            result.leavers.append(
                leaver_entry(
                    person_row,
                    spec,
                    announced=announced,
                    asked_back=result.returns[asked:],
                    left=bool(result.deactivated[left:]),
                )
            )
        if not changed:
            result.unchanged += 1
    _reassess(session, result, now)
    return result


def leaver_entry(
    person_row: Person, spec: PipelineSpec, *, announced: bool, asked_back: list[str], left: bool
) -> dict[str, Any]:
    """What the sync did for one leaver: their last day and the day their devices are asked
    back, whether IT was told to plan (announced: devices in use, asked back later), the devices
    asked back now, whether they were deactivated (past their last day)."""
    assert person_row.leaves_on is not None
    return {
        "email": person_row.email,
        "leaves_on": person_row.leaves_on.isoformat(),
        "return_on": return_day(person_row.leaves_on, spec).isoformat(),
        "announced": announced,
        "asked_back": asked_back,
        "left": left,
    }


def leaver_text(entry: dict[str, Any]) -> str:
    """One leaver's line of the sync's summary: 'nina@…: last day 2027-03-12; IT told to plan,
    devices asked back on 2027-02-26' or '…; 1 device asked back (N-1); deactivated'."""
    done = []
    if entry["asked_back"]:
        serials = entry["asked_back"]
        done.append(f"{plural(len(serials), 'device')} asked back ({', '.join(serials)})")
    elif entry["announced"]:
        done.append(f"IT told to plan, devices asked back on {entry['return_on']}")
    elif not entry["left"]:
        done.append("recorded, no device in use to ask back")
    if entry["left"]:
        done.append("deactivated (past their last day)")
    return f"{entry['email']}: last day {entry['leaves_on']}; {'; '.join(done)}"


def sync_summary(totals: dict[str, Any]) -> str:
    """The sync's one-line summary (the artifact's description, `procure run hr-sync`'s first
    line): every leaver it handled counted, by what it did for them."""
    leavers = totals["leavers"]
    kinds = [
        (sum(1 for e in leavers if e["announced"]), "announced to IT"),
        (sum(1 for e in leavers if e["asked_back"]), "asked for their devices now"),
        (sum(1 for e in leavers if e["left"]), "deactivated"),
        (
            sum(1 for e in leavers if not (e["announced"] or e["asked_back"] or e["left"])),
            "with no device in use",
        ),
    ]
    how = ", ".join(f"{n} {what}" for n, what in kinds if n)
    return (
        f"{plural(len(totals['joiners']), 'joiner')}, "
        f"{plural(len(totals['moved']), 'start date')} moved, "
        f"{plural(len(leavers), 'leaver')}{f' ({how})' if how else ''}, "
        f"{plural(len(totals['returns']), 'device')} asked back, "
        f"{plural(len(totals['withdrawn']), 'leave')} withdrawn"
    )


def sync_lines(totals: dict[str, Any]) -> list[str]:
    """The sync's result as text: the summary, then one line for each joiner, start date moved,
    leaver and leave withdrawn, and how many rows changed nothing."""
    return (
        [sync_summary(totals)]
        + [f"  onboarding request {ref} for a joiner" for ref in totals["joiners"]]
        + [f"  start date moved on {ref}" for ref in totals["moved"]]
        + [f"  leaver {leaver_text(e)}" for e in totals["leavers"]]
        + [f"  leave withdrawn: {email}" for email in totals["withdrawn"]]
        + [f"  {plural(totals['unchanged'], 'row')} changed nothing"]
    )


def _reassess(session: Session, result: SyncResult, now: datetime) -> None:
    """A leaver deactivated may have been the only one who could decide a part of an open
    stage: it is escalated now, in the same transaction (actions.reassess)."""
    if result.deactivated:
        actions.reassess(session, now=now)


def _withdraw(
    session: Session, person_row: Person, *, spec: PipelineSpec, now: datetime, result: SyncResult
) -> bool:
    """Cancel a leave HR withdrew: the last day cleared and audited, a person already deactivated
    for it active again, IT told (with the devices already asked back, which stay so); whether
    anything changed (nothing for a person with no last day: the row was applied before)."""
    leaves_on = person_row.leaves_on
    if leaves_on is None:
        return False
    today = spec.calendar.today(now)
    returning = return_day(leaves_on, spec)
    held = _held(session, person_row)
    asked = [a.serial or "" for a in held if a.status == AssetStatus.RETURN_REQUESTED]
    # Deactivated after the last day for this leave, which no longer happens.
    reactivated = not person_row.active and leaves_on < today
    person_row.leaves_on = None
    if reactivated:
        person_row.active = True
    session.add(person_row)
    withdrawals = _withdrawals(session, person_row.email)
    audit.append(
        session,
        actor="hr sync",
        entity="person",
        entity_id=person_row.email,
        action="leave_withdrawn",
        details={
            "end_date": leaves_on,
            "return_on": returning,
            "asked_back": asked if returning <= today else [],
            "reactivated": reactivated,
        },
        at=now,
    )
    _tell_it(
        session,
        "leaver_cancelled",
        person_row,
        held,
        key=f"{person_row.email}/{leaves_on}/withdrawn/{withdrawals + 1}",
        leaves_on=leaves_on,
        previous=None,
        return_on=returning,
        now=now,
        extra={"returned_due": returning <= today, "reactivated": reactivated},
    )
    result.withdrawn.append(person_row.email)
    return True


def _withdrawals(session: Session, email: str) -> int:
    """How many leaves of this person HR withdrew: a day given again after one is news again."""
    return len(
        session.exec(
            select(AuditEvent.seq).where(
                AuditEvent.entity == "person",
                AuditEvent.entity_id == email,
                AuditEvent.action == "leave_withdrawn",
            )
        ).all()
    )


def return_day(leaves_on: date, spec: PipelineSpec) -> date:
    """The day a leaver is asked for their devices: the pipeline's lead in working days before
    their last day (the last day itself for a lead of 0)."""
    return spec.calendar.shift_workdays(leaves_on, -spec.offboarding.return_lead_workdays)


def _held(session: Session, person_row: Person) -> list[Asset]:
    """The devices a person holds: in use, or asked back and not yet returned."""
    return list(
        session.exec(
            select(Asset)
            .where(
                Asset.assigned_to_id == person_row.id,
                col(Asset.status).in_([AssetStatus.DEPLOYED, AssetStatus.RETURN_REQUESTED]),
            )
            .order_by(col(Asset.id))
        ).all()
    )


def _announce(
    session: Session, person_row: Person, before: date | None, spec: PipelineSpec, now: datetime
) -> bool:
    """Tell IT that a person leaves, with the devices they hold and the day those are asked back,
    once for each last day HR gives, and again for one given after a withdrawal (nothing to plan
    without devices); whether there was anything to tell."""
    assert person_row.id is not None and person_row.leaves_on is not None
    held = _held(session, person_row)
    if not held:
        return False
    withdrawals = _withdrawals(session, person_row.email)
    _tell_it(
        session,
        "leaver_announced",
        person_row,
        held,
        key=f"{person_row.email}/{person_row.leaves_on}"
        + (f"/after-withdrawal/{withdrawals}" if withdrawals else ""),
        leaves_on=person_row.leaves_on,
        previous=before,
        return_on=return_day(person_row.leaves_on, spec),
        now=now,
    )
    return True


def _tell_it(
    session: Session,
    event: str,
    person_row: Person,
    held: Sequence[Asset],
    *,
    key: str,
    leaves_on: date,
    previous: date | None,
    return_on: date,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> None:
    """IT's notice of a leave (announced, moved or cancelled) listing the devices the person
    holds, each with its status (in use, or already asked back); nothing without devices."""
    if not held:
        return
    context = {
        "holder": person_row.email,
        "leaves_on": leaves_on,
        "previous": previous,
        "return_on": return_on,
        "devices": [
            {"serial": a.serial, "sku": a.sku, "status": a.status, "holder": person_row.email}
            for a in held
        ],
        **(extra or {}),
    }
    outbox.queue(session, Notice(event, team(Role.IT), key, context), request_id=None, at=now)


def _offboard(
    session: Session,
    person_row: Person,
    *,
    spec: PipelineSpec,
    now: datetime,
    result: SyncResult,
    actor: str,
) -> bool:
    """Ask a leaver for every device still in use once their return day has come, and
    deactivate them after their last day; whether anything changed (each happens once: a
    device asked back is no longer in use, a deactivated person is no longer active)."""
    leaves_on = person_row.leaves_on
    if leaves_on is None:
        return False
    today = spec.calendar.today(now)
    changed = False
    if return_day(leaves_on, spec) <= today:
        for asset in session.exec(
            select(Asset)
            .where(Asset.assigned_to_id == person_row.id, Asset.status == AssetStatus.DEPLOYED)
            .order_by(col(Asset.id))
        ).all():
            actions.request_return(
                session,
                serial=asset.serial or "",
                reason=f"{person_row.name} leaves on {leaves_on}",
                now=now,
            )
            result.returns.append(asset.serial or "")
            changed = True
    if leaves_on < today and person_row.active:
        person_row.active = False
        session.add(person_row)
        audit.append(
            session,
            actor=actor,
            entity="person",
            entity_id=person_row.email,
            action="left",
            details={"end_date": leaves_on},
            at=now,
        )
        result.deactivated.append(person_row.email)
        changed = True
    return changed


def leavers_to_watch(session: Session, *, spec: PipelineSpec, now: datetime) -> list[int]:
    """Leavers with something due: a device still in use when their return day has come, or
    still active after their last day (a superset by date; _offboard decides)."""
    today = spec.calendar.today(now)
    # No later last day has its return day today or before.
    horizon = spec.calendar.shift_workdays(today, spec.offboarding.return_lead_workdays)
    in_use = (
        select(Asset.id)
        .where(Asset.assigned_to_id == Person.id, Asset.status == AssetStatus.DEPLOYED)
        .exists()
    )
    rows = session.exec(
        select(Person.id)
        .where(
            col(Person.leaves_on).is_not(None),
            or_(
                and_(col(Person.leaves_on) <= horizon, in_use),
                and_(col(Person.active), col(Person.leaves_on) < today),
            ),
        )
        .order_by(col(Person.id))
    ).all()
    return [i for i in rows if i is not None]


def leaver_watch(
    session: Session, *, person_ids: Sequence[int], spec: PipelineSpec, now: datetime
) -> SyncResult:
    """The daily part of offboarding: ask leavers whose return day has come for their devices
    in use (also one handed to them after the sync), deactivate those past their last day."""
    result = SyncResult()
    for person_id in person_ids:
        person_row = session.get(Person, person_id)
        if person_row is not None:
            _offboard(
                session, person_row, spec=spec, now=now, result=result, actor="lifecycle watch"
            )
    _reassess(session, result, now)
    return result
