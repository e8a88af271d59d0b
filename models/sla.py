"""The SLA watch: a reminder at half a stage's SLA, an escalation once it has passed.

SLAs count business hours of the pipeline's calendar (its time zone, working days and
hours, holidays), so nights, weekends and DST changes are handled where the deadline was
computed. Each reminder and escalation is a notification whose dedup key names the stage's
deadline: the watch may run every minute or twice at once, and still nobody hears twice
about one deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from models import audit, outbox
from models.actions import (
    SYSTEM,
    approval_notices,
    decisions_of,
    record_escalation,
    spec_for,
    stages_of,
)
from models.lifecycle import RequestStatus, StageStatus
from models.outbox import Notice, team
from models.pipeline import PipelineSpec
from models.requests import Request, Stage
from models.rules import Directory, escalation_role, open_slots
from models.types import as_utc, label, moment_text


@dataclass
class SweepResult:
    """What one pass of the watch found and did; `told`: one row per reminder or escalation
    queued (told_row), for a purchaser to read which requests and stages were chased, and whom."""

    checked: int = 0
    reminders: int = 0
    escalations: int = 0
    told: list[dict[str, str]] = field(default_factory=list)

    def add(self, other: SweepResult) -> None:
        self.checked += other.checked
        self.reminders += other.reminders
        self.escalations += other.escalations
        self.told += other.told


def told_row(
    request: Request,
    stage: Stage,
    spec: PipelineSpec,
    *,
    what: str,
    told: Sequence[str],
    escalated_to: str = "",
) -> dict[str, str]:
    """One reminder or escalation as a row of a table: the request, the stage, what was sent,
    the stage's deadline (in the organisation's time zone), who was told (people by address,
    teams as 'IT team') and the role it was escalated to."""
    assert stage.due_at is not None
    return {
        "request": request.ref,
        "stage": stage.name,
        "sent": what,
        "due": moment_text(stage.due_at, spec.calendar.timezone),
        "told": ", ".join(_audience(a) for a in told) or "nobody may decide it",
        "escalated to": label(escalated_to) if escalated_to else "",
    }


def _audience(audience: str) -> str:
    """'team:it' -> 'IT team', 'person:ida@example.com' (or an address) -> the address."""
    kind, _, name = audience.rpartition(":")
    return f"{label(name)} team" if kind == "team" else name


def watched_stages(session: Session, *, now: datetime) -> list[int]:
    """Open stages with an SLA whose reminder time may have come (the cheap pre-filter)."""
    rows = session.exec(
        select(Stage.id)
        .join(Request, Request.id == Stage.request_id)  # type: ignore[arg-type]
        .where(
            Stage.status == StageStatus.OPEN,
            Request.status == RequestStatus.IN_REVIEW,
            col(Stage.due_at).is_not(None),
            col(Stage.opened_at).is_not(None),
            col(Stage.opened_at) <= as_utc(now),
        )
        .order_by(col(Stage.due_at))
    ).all()
    return [i for i in rows if i is not None]


def sweep(session: Session, *, stage_ids: Sequence[int], now: datetime) -> SweepResult:
    """Remind at half the SLA and escalate past it, for these stages; safe to repeat."""
    result = SweepResult()
    specs: dict[int | None, PipelineSpec] = {}
    for stage_id in stage_ids:
        stage = session.get(Stage, stage_id)
        if stage is None or stage.status != StageStatus.OPEN:
            continue
        assert stage.opened_at is not None and stage.due_at is not None and stage.sla_hours
        request = session.get(Request, stage.request_id)
        if request is None or request.status != RequestStatus.IN_REVIEW:
            continue
        if request.pipeline_id not in specs:
            specs[request.pipeline_id] = spec_for(session, request)
        spec = specs[request.pipeline_id]
        result.checked += 1
        half = spec.calendar.add_business_hours(stage.opened_at, stage.sla_hours / 2)
        if now >= stage.due_at:
            event = "escalation"
        elif now >= half:
            event = "reminder"
        else:
            continue
        approvers = _notify(session, request, stage, spec, event, now)
        if approvers is not None:
            if event == "reminder":
                result.reminders += 1
                result.told.append(told_row(request, stage, spec, what=event, told=approvers))
            else:
                result.escalations += 1
                result.told.append(
                    told_row(
                        request,
                        stage,
                        spec,
                        what="escalation (the approvers told it is overdue)",
                        told=approvers,
                        escalated_to=escalation_role(stage),
                    )
                )
        elif event == "escalation":
            teams = _nobody_again(session, request, stage, spec, now)
            if teams:
                result.reminders += 1
                what = "reminder: nobody may decide it"
                result.told.append(told_row(request, stage, spec, what=what, told=teams))
    return result


def _nobody_again(
    session: Session, request: Request, stage: Stage, spec: PipelineSpec, now: datetime
) -> list[str]:
    """Past its deadline, remind the teams of a part that nobody may decide (nor its escalation
    role) once per further SLA period: it waits for the roles to change, and nobody else is asked.
    The teams a reminder was queued for (the audit trail recorded the fact once, when it arose)."""
    assert stage.due_at is not None and stage.sla_hours and request.id is not None
    period = int(spec.calendar.business_hours_between(stage.due_at, now) // stage.sla_hours)
    if period < 1:
        return []
    stages = stages_of(session, request)
    directory = Directory(session, request, spec.calendar.today(now))
    notices, _, _ = approval_notices(
        directory,
        request,
        stage,
        decisions_of(session, request),
        {s.id: s for s in stages if s.id is not None},
        stage.due_at,
        event="overdue",
        key_suffix=f"/{as_utc(stage.due_at).isoformat()}/{period}",
    )
    nobody = [n for n in notices if n.event == "no_approver" and n.key.endswith("/nobody")]
    rows = outbox.queue_many(session, nobody, request_id=request.id, at=now)
    return [n.audience for n, row in zip(nobody, rows, strict=True) if row is not None]


def _notify(
    session: Session, request: Request, stage: Stage, spec: PipelineSpec, event: str, now: datetime
) -> list[str] | None:
    """Queue the reminder or escalation for this deadline unless it is queued already: the
    approvers it went to (None: queued before)."""
    assert stage.due_at is not None and request.id is not None
    deadline = as_utc(stage.due_at).isoformat()
    stages = stages_of(session, request)
    decisions = decisions_of(session, request)
    directory = Directory(session, request, spec.calendar.today(now))
    by_id = {s.id: s for s in stages if s.id is not None}
    notices, approvers, _ = approval_notices(
        directory,
        request,
        stage,
        decisions,
        by_id,
        stage.due_at,
        # Past the deadline the approvers are told it is overdue (with their links), and the
        # escalation role is told below. A slot nobody else may decide was escalated when it
        # opened: its escalation role is among the approvers, reminded like them.
        event="overdue" if event == "escalation" else event,
        key_suffix=f"/{deadline}",
    )
    if event == "escalation":
        notices.append(
            Notice(
                "escalation",
                team(escalation_role(stage)),
                f"{request.ref}/{stage.key}/r{stage.round}/{deadline}",
                {
                    "stage": stage.key,
                    "stage_name": stage.name,
                    "due_at": stage.due_at,
                    "approvers": approvers,
                    # Who did not decide in time: the roles of the parts still open (those
                    # whose approvers were told it is overdue), not the parts decided.
                    "roles": list(
                        dict.fromkeys(r for _, roles in open_slots(stage, decisions) for r in roles)
                    ),
                },
                stage_id=stage.id,
            )
        )
    rows = outbox.queue_many(session, notices, request_id=request.id, at=now)
    queued = [row for row in rows if row is not None]
    if not queued:
        return None
    if event == "escalation":
        record_escalation(
            session,
            request,
            stage,
            to=escalation_role(stage),
            approvers=approvers,
            due_at=stage.due_at,
            reason="its deadline passed without a decision",
            at=now,
        )
        return approvers
    audit.append(
        session,
        actor=SYSTEM,
        entity="stage",
        entity_id=f"{request.ref}/{stage.key}",
        request_id=request.id,
        action="reminded",
        details={"due_at": stage.due_at, "approvers": approvers, "escalated_to": None},
        at=now,
    )
    return approvers
