"""Who may decide what: role holders, separation of duties, delegation within its dates, the
escalation of a slot nobody may decide to its stage's escalation role, and who may confirm the
contract terms (whoever may decide purchasing's part of the review)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from models.audit import AuditEvent
from models.db import by_id
from models.lifecycle import StageStatus
from models.org import BUDGET_OWNER, ROLES_OF, CostCentre, Delegation, Person, PersonRole, Role
from models.pipeline import StageSpec
from models.reference import shared
from models.requests import Decision, Request, Stage, StageMode

ANY_SLOT = "any"


def escalation_role(stage: Stage | StageSpec) -> str:
    """Whom a stage (or a pipeline's stage as written) escalates to: its `escalate_to`,
    management by default."""
    return stage.escalate_to or Role.MANAGEMENT.value


@dataclass(frozen=True)
class Escalation:
    """A slot of a stage that nobody holding its roles may decide, handed to the stage's
    escalation role (who may decide it at once), and why nobody else may. `nobody`: when nobody
    of the escalation role may decide it either, why (each holder, or that nobody holds it):
    then nobody may decide the slot until the roles change."""

    slot: str
    roles: tuple[str, ...]
    to: str
    reason: str  # each holder and why they may not decide, or that nobody holds the role
    nobody: str = ""

    @property
    def text(self) -> str:
        text = f"nobody may decide {' or '.join(self.roles)} ({self.reason})"
        if self.nobody:
            text += f", nor {self.to} in its place ({self.nobody})"
        return text

    @property
    def remedy(self) -> str:
        """What to do when nobody may decide the slot: give a role to someone who may."""
        given = [
            "make someone who may decide it the owner of the request's cost centre"
            if role == BUDGET_OWNER
            else f"give the role {role} to someone who may decide it"
            for role in dict.fromkeys((*self.roles, self.to))
        ]
        return (
            f"{' or '.join(given)} (procure org load); a delegation does not help, as a "
            "delegate decides in the name of the person who delegated and under their exclusions"
        )

    @property
    def context(self) -> dict[str, str]:
        """What a notice says of it: to whom it went and why (and, if nobody may decide it,
        what to do)."""
        if not self.nobody:
            return {"to": self.to, "reason": self.text}
        return {"to": self.to, "reason": self.text, "nobody": self.nobody, "remedy": self.remedy}


@dataclass
class RecordedEscalation:
    """A slot's escalation as the audit trail recorded it: to whom and why (the first time in
    its round), and whether it ever asked nobody (not even its escalation role could decide)."""

    to: str
    why: str
    stuck: bool = False


def slot_key(request: Request, stage: Stage, slot: str) -> tuple[str, int, str]:
    """A slot in its stage's round, as escalation rows name it: (stage's audit id, round, slot)."""
    return f"{request.ref}/{stage.key}", stage.round, slot


def recorded_escalations(
    session: Session, request_ids: Sequence[int]
) -> dict[tuple[str, int, str], RecordedEscalation]:
    """The slots of these requests escalated so far (`escalated` audit rows naming a slot), by
    slot_key; one query per 500 requests."""
    found: dict[tuple[str, int, str], RecordedEscalation] = {}
    for start in range(0, len(request_ids), 500):
        for entity_id, details in session.exec(
            select(AuditEvent.entity_id, AuditEvent.details).where(
                col(AuditEvent.request_id).in_(request_ids[start : start + 500]),
                AuditEvent.entity == "stage",
                AuditEvent.action == "escalated",
            )
        ).all():
            if "slot" not in details:
                continue  # an SLA escalation of the whole stage
            key = (entity_id, details["round"], details["slot"])
            row = found.setdefault(key, RecordedEscalation(details["escalated_to"], details["why"]))
            row.stuck = row.stuck or not details.get("approvers")
    return found


@dataclass(frozen=True)
class Seat:
    """One way the actor can decide a stage: which slot, in which role, on whose authority
    (`escalation`: the slot nobody else may decide, filled by the stage's escalation role)."""

    stage: Stage
    slot: str
    role: str
    principal: Person
    actor: Person
    escalation: Escalation | None = None

    @property
    def delegated(self) -> bool:
        return self.principal.id != self.actor.id


def slots_of(stage: Stage) -> list[tuple[str, tuple[str, ...]]]:
    """The approvals a stage needs: one per role (all-of) or one from any role (any-of)."""
    if stage.mode == StageMode.ANY:
        return [(ANY_SLOT, tuple(stage.roles))]
    return [(role, (role,)) for role in stage.roles]


def current(stage: Stage, decisions: Iterable[Decision]) -> list[Decision]:
    """The decisions of the stage's current round."""
    return [d for d in decisions if d.stage_id == stage.id and d.round == stage.round]


def open_slots(stage: Stage, decisions: Iterable[Decision]) -> list[tuple[str, tuple[str, ...]]]:
    filled = {d.slot for d in current(stage, decisions)}
    return [(slot, roles) for slot, roles in slots_of(stage) if slot not in filled]


# Built once, run with new parameters (see models/actions.py).
_HOLDERS = (
    select(Person)
    .join(PersonRole, PersonRole.person_id == Person.id)  # type: ignore[arg-type]
    .where(PersonRole.role == bindparam("role"), Person.active)
    .order_by(Person.email)
)
_DELEGATORS = (
    select(Person)
    .join(Delegation, Delegation.delegator_id == Person.id)  # type: ignore[arg-type]
    .where(
        Delegation.delegate_id == bindparam("delegate_id"),
        Delegation.starts_on <= bindparam("today"),
        Delegation.ends_on >= bindparam("today"),
        Person.active,
    )
    .order_by(Person.email)
)
_DELEGATES = (
    select(Delegation, Person)
    .join(Person, Delegation.delegate_id == Person.id)  # type: ignore[arg-type]
    .where(
        col(Delegation.delegator_id).in_(bindparam("ids", expanding=True)),
        Delegation.starts_on <= bindparam("today"),
        Delegation.ends_on >= bindparam("today"),
        Person.active,
    )
)


class Directory:
    """Role membership, budget owners and delegations, loaded once per action. The people it
    hands out are shared, read-only rows (reference.shared): read them, never change them."""

    def __init__(
        self,
        session: Session,
        request: Request,
        today: date,
        holders: dict[str, list[Person]] | None = None,
    ):
        """`holders`: the holders of each role as far as read already, shared by the directories
        of several requests in one transaction (those of one request's budget owner are its own)."""
        self.session = session
        self.request = request
        self.today = today
        self._roles: dict[int, set[str]] = {}
        self._holders: dict[str, list[Person]] = {} if holders is None else holders
        self._budget_owner: Person | None = None
        self._escalated: dict[tuple[str, int, str], RecordedEscalation] | None = None

    def roles(self, person: Person) -> set[str]:
        assert person.id is not None
        if person.id not in self._roles:
            self._roles[person.id] = set(shared(self.session, ROLES_OF, {"person_id": person.id}))
        return self._roles[person.id]

    def budget_owner(self) -> Person | None:
        if self._budget_owner is None:
            centre = by_id(self.session, CostCentre, self.request.cost_centre_id, read_only=True)
            if centre is not None:
                self._budget_owner = by_id(
                    self.session, Person, centre.budget_owner_id, read_only=True
                )
        return self._budget_owner

    def holds(self, person: Person, role: str) -> bool:
        if role == BUDGET_OWNER:
            owner = self.budget_owner()
            return owner is not None and owner.id == person.id
        return role in self.roles(person)

    def holders(self, role: str) -> list[Person]:
        """Active people who hold a role (for budget_owner: the cost centre's owner)."""
        if role == BUDGET_OWNER:
            owner = self.budget_owner()
            return [owner] if owner is not None and owner.active else []
        if role not in self._holders:
            self._holders[role] = shared(self.session, _HOLDERS, {"role": role})
        return self._holders[role]

    def escalated(self, stage: Stage, slot: str, roles: tuple[str, ...]) -> Escalation | None:
        """The slot's escalation earlier in its stage's round, if it had one: the escalation role
        keeps the slot when someone may decide it again (given the role back, say), as its
        members were asked for it. Read from the audit trail once per action, when asked."""
        if self._escalated is None:
            assert self.request.id is not None
            self._escalated = recorded_escalations(self.session, [self.request.id])
        found = self._escalated.get(slot_key(self.request, stage, slot))
        return Escalation(slot, roles, found.to, found.why) if found else None

    def confirmed_terms(self, person: Person) -> bool:
        """Whether the person confirmed contract terms of the request, in person or as the one a
        delegate confirmed them for: that is purchasing's part of the review (terms_conflict)."""
        return any(
            isinstance(entry, dict) and person.email in (entry.get("by"), entry.get("on_behalf_of"))
            for entry in (self.request.terms or {}).values()
        )

    def delegators_of(self, delegate: Person) -> list[Person]:
        """The people on whose behalf `delegate` may act today."""
        return shared(self.session, _DELEGATORS, {"delegate_id": delegate.id, "today": self.today})

    def delegates_of(self, principals: Sequence[Person]) -> dict[int, list[Person]]:
        """Who may act today on behalf of each principal."""
        ids = [p.id for p in principals]
        out: dict[int, list[Person]] = {}
        if not ids:
            return out
        for delegation, person in shared(
            self.session, _DELEGATES, {"ids": ids, "today": self.today}
        ):
            out.setdefault(delegation.delegator_id, []).append(person)
        return out

    def delegations_of(self, delegate: Person) -> list[Delegation]:
        """Every delegation to this person, in force or not (to explain a refusal)."""
        return list(
            self.session.exec(select(Delegation).where(Delegation.delegate_id == delegate.id)).all()
        )


def conflict(
    request: Request,
    stage: Stage,
    person_id: int | None,
    decisions: Iterable[Decision],
    stages: dict[int, Stage],
) -> str | None:
    """Why this person may not decide this stage, or None if they may."""
    if person_id == request.requester_id:
        return "nobody approves their own request"
    if person_id == request.on_behalf_of_id:
        return "nobody approves devices for themselves"
    for d in decisions:
        if person_id not in (d.actor_id, d.on_behalf_of_id):
            continue
        if d.stage_id != stage.id:
            other = stages[d.stage_id].key if d.stage_id in stages else "another stage"
            return f"already decided stage {other} of this request (one person decides one stage)"
        if d.round == stage.round:
            return f"already decided this stage ({d.outcome})"
    return None


def terms_conflict(
    directory: Directory,
    stage: Stage,
    slot: str,
    person: Person,
    stages: dict[int, Stage],
) -> str | None:
    """Why someone who confirmed the contract terms may not fill this slot, or None: confirming
    them takes purchasing's part of the review (one person decides one part), so they may still
    decide that part, and nothing else of the request."""
    if not directory.confirmed_terms(person):
        return None
    part, part_slot = terms_slot(stages.values())
    if stage.id == (part.id if part is not None else None) and slot == part_slot:
        return None
    where = f"purchasing's part of stage {part.key}" if part is not None else "purchasing's part"
    return f"confirmed its contract terms ({where}; one person decides one part)"


def exclusion(
    directory: Directory,
    request: Request,
    stage: Stage,
    slot: str,
    person: Person,
    decisions: Iterable[Decision],
    stages: dict[int, Stage],
) -> str | None:
    """Why this person may not fill this slot, in person or on someone's behalf (their own
    request, their devices, one person decides one stage and one part), or None if they may."""
    return conflict(request, stage, person.id, decisions, stages) or terms_conflict(
        directory, stage, slot, person, stages
    )


def eligible(
    directory: Directory,
    request: Request,
    stage: Stage,
    slot: str,
    roles: tuple[str, ...],
    decisions: Sequence[Decision],
    stages: dict[int, Stage],
) -> tuple[list[Person], str]:
    """Who may fill a slot needing one of `roles` (delegates not included), and why the others
    may not: each holder excluded and why, or that nobody holds a role."""
    seen: dict[int, Person] = {}
    excluded: dict[str, None] = {}
    for role in roles:
        holders = directory.holders(role)
        if not holders:
            excluded[f"nobody holds the role {role}"] = None
        for person in holders:
            assert person.id is not None
            why = exclusion(directory, request, stage, slot, person, decisions, stages)
            if why is not None:
                excluded[f"{person.email} is excluded: {why}"] = None
            else:
                seen.setdefault(person.id, person)
    return list(seen.values()), "; ".join(excluded)


def deciders(
    directory: Directory,
    request: Request,
    stage: Stage,
    slot: str,
    roles: tuple[str, ...],
    decisions: Sequence[Decision],
    stages: dict[int, Stage],
) -> tuple[list[Person], Escalation | None]:
    """Who may fill a slot (delegates not included): the eligible holders of its roles; when
    there are none, the eligible holders of the stage's escalation role, with the escalation
    (saying why nobody of it may decide the slot either, if nobody may)."""
    people, reason = eligible(directory, request, stage, slot, roles, decisions, stages)
    if people:
        return people, None
    to = escalation_role(stage)
    people, nobody = eligible(directory, request, stage, slot, (to,), decisions, stages)
    return people, Escalation(slot, roles, to, reason, "" if people else nobody)


def slot_delegates(
    directory: Directory,
    request: Request,
    stage: Stage,
    slot: str,
    people: Sequence[Person],
    decisions: Sequence[Decision],
    stages: dict[int, Stage],
) -> dict[int, list[Person]]:
    """Who may fill a slot today on behalf of each of `people` (its deciders): their delegates
    but those the rules exclude from it themselves (exclusion), as a decision would refuse them."""
    out: dict[int, list[Person]] = {}
    for principal_id, found in directory.delegates_of(people).items():
        kept = [
            d
            for d in found
            if exclusion(directory, request, stage, slot, d, decisions, stages) is None
        ]
        if kept:
            out[principal_id] = kept
    return out


def seats(
    directory: Directory,
    actor: Person,
    request: Request,
    stages: Sequence[Stage],
    decisions: Sequence[Decision],
    stage_key: str | None = None,
) -> tuple[list[Seat], list[str]]:
    """Every way the actor may decide an open stage now, and why not where they may not."""
    stage_of = {s.id: s for s in stages if s.id is not None}
    principals = [actor, *directory.delegators_of(actor)]
    found: list[Seat] = []
    reasons: list[str] = []
    for stage in sorted(stages, key=lambda s: s.position):
        if stage.status != StageStatus.OPEN or (stage_key and stage.key != stage_key):
            continue
        for slot, roles in open_slots(stage, decisions):
            seated, why = _slot_seats(
                directory, actor, principals, request, stage, slot, roles, decisions, stage_of
            )
            found.extend(seated)
            reasons.extend(why)
    return _in_order(found), reasons


def _in_order(found: list[Seat]) -> list[Seat]:
    """Their own roles before an escalation, in person before on someone's behalf."""
    return sorted(found, key=lambda s: (s.delegated, s.escalation is not None, s.stage.position))


def _slot_seats(
    directory: Directory,
    actor: Person,
    principals: Sequence[Person],
    request: Request,
    stage: Stage,
    slot: str,
    roles: tuple[str, ...],
    decisions: Sequence[Decision],
    stage_of: dict[int, Stage],
) -> tuple[list[Seat], list[str]]:
    """The ways the actor (in person or for one of `principals`) may fill one slot, and why not."""
    found: list[Seat] = []
    reasons: list[str] = []
    escalation: Escalation | None = None
    looked = False
    for principal in principals:
        role = next((r for r in roles if directory.holds(principal, r)), None)
        if role is None:
            # The escalation role may fill a slot nobody holding its roles may decide.
            if not directory.holds(principal, escalation_role(stage)):
                continue
            if not looked:
                _, escalation = deciders(
                    directory, request, stage, slot, roles, decisions, stage_of
                )
                if escalation is None:  # someone may decide it now, but it went to them
                    escalation = directory.escalated(stage, slot, roles)
                looked = True
            if escalation is None:
                continue
            role = escalation.to
        escalated = escalation if role not in roles else None
        via = f" (escalated to {role})" if escalated else ""
        on_behalf = "" if principal.id == actor.id else f" (on behalf of {principal.email})"
        why = exclusion(directory, request, stage, slot, principal, decisions, stage_of)
        if why is None and principal.id != actor.id:
            why = exclusion(directory, request, stage, slot, actor, decisions, stage_of)
        if why is not None:
            reasons.append(f"{stage.key}{via}{on_behalf}: {why}")
            continue
        found.append(Seat(stage, slot, role, principal, actor, escalated))
    return found, reasons


# ------------------------------------------------------------------ the contract terms

TERMS_ROLE = Role.PURCHASING.value


def terms_slot(stages: Iterable[Stage]) -> tuple[Stage | None, str]:
    """The part of the review the contract terms belong to: purchasing's slot of the first stage
    purchasing decides in (skipped stages aside); (None, purchasing) in a pipeline without one."""
    for stage in sorted(stages, key=lambda s: s.position):
        if stage.status == StageStatus.SKIPPED:
            continue
        for slot, roles in slots_of(stage):
            if TERMS_ROLE in roles:
                return stage, slot
    return None, TERMS_ROLE


def _terms_part(
    request: Request, stages: Sequence[Stage], decisions: Sequence[Decision]
) -> tuple[Stage, str, list[Decision], dict[int, Stage]]:
    """The part of the review the contract terms belong to (terms_slot), with the decisions that
    bear on who may take it. Its own decision does not: whoever decided it, or could have, still
    may confirm the terms, before it, with it or after it. In a pipeline without such a stage, a
    stand-in (never stored) that purchasing alone decides and nobody has decided yet."""
    stage_of = {s.id: s for s in stages if s.id is not None}
    stage, slot = terms_slot(stages)
    if stage is not None:
        others = [
            d
            for d in decisions
            if not (d.stage_id == stage.id and d.round == stage.round and d.slot == slot)
        ]
        return stage, slot, others, stage_of
    stand_in = Stage(
        request_id=request.id or 0,
        key="contract_terms",
        name="Contract terms",
        position=0,
        roles=[TERMS_ROLE],
    )
    return stand_in, TERMS_ROLE, [], stage_of


def terms_deciders(
    directory: Directory,
    request: Request,
    stages: Sequence[Stage],
    decisions: Sequence[Decision],
) -> tuple[list[Person], Escalation | None]:
    """Who may confirm the contract terms (delegates not included): whoever may decide purchasing's
    part of the review, as if it were open now; when nobody in purchasing may, the eligible
    holders of the stage's escalation role, with the escalation."""
    stage, slot, others, stage_of = _terms_part(request, stages, decisions)
    return deciders(directory, request, stage, slot, (TERMS_ROLE,), others, stage_of)


def terms_delegates(
    directory: Directory,
    request: Request,
    stages: Sequence[Stage],
    decisions: Sequence[Decision],
    people: Sequence[Person],
) -> dict[int, list[Person]]:
    """Who may confirm the contract terms today on behalf of each of `people` (terms_deciders):
    their delegates whom the rules do not exclude from purchasing's part of the review."""
    stage, slot, others, stage_of = _terms_part(request, stages, decisions)
    return slot_delegates(directory, request, stage, slot, people, others, stage_of)


def terms_seats(
    directory: Directory,
    actor: Person,
    request: Request,
    stages: Sequence[Stage],
    decisions: Sequence[Decision],
) -> tuple[list[Seat], list[str]]:
    """Every way the actor may confirm the contract terms (a seat for purchasing's part of the
    review, in person, on someone's behalf or by escalation), and why not where they may not."""
    stage, slot, others, stage_of = _terms_part(request, stages, decisions)
    principals = [actor, *directory.delegators_of(actor)]
    found, reasons = _slot_seats(
        directory, actor, principals, request, stage, slot, (TERMS_ROLE,), others, stage_of
    )
    return _in_order(found), reasons
