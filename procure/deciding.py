"""One way to record a decision, for the CLI, the approval pages and the HTTP API.

A decision is one transaction (the rules, the transition, the audit row, the notifications it
queues, and for an approval link the record that the link was used). After it commits, the
`advance` flow is started when a Prefect server is configured, and the web app sends the
request's new notifications at once (so the next approver has the email within a second).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from models import actions, links
from models.db import transaction
from models.errors import AlreadyDecided, RuleViolation
from models.lifecycle import RequestStatus, StageStatus
from models.org import Person
from models.requests import Request, Stage
from models.tokens import ApprovalToken
from models.types import label


class LinkUsed(AlreadyDecided):
    """The approval link was used before: it decides once."""


class LinkRefused(RuleViolation):
    """The link's addressee may not decide its stage now (no longer active, a delegation not
    in force, one person per stage, ...): what `decide` would refuse, said on opening."""


class LinkOutdated(RuleViolation):
    """The stage this link was sent for has moved on (decided, reopened, request changed), or
    its addressee's part of it was decided (by them elsewhere, or by someone else)."""


@dataclass(frozen=True)
class Decision:
    ref: str | int
    actor_email: str
    outcome: str
    comment: str = ""
    stage_key: str | None = None
    confirm_terms: bool = False


def describe(result: actions.DecisionResult) -> dict[str, Any]:
    """A decision's result as the CLI's --json and the API print it."""
    return {
        "id": result.ref,
        "stage": result.stage,
        "outcome": result.outcome,
        "role": result.role,
        "by": result.actor,
        "on_behalf_of": result.on_behalf_of,
        "changed": not result.noop,
        "stage_status": result.stage_status,
        "status": result.request_status,
        "message": result.message,
    }


def check_link(
    session: Any, grant: ApprovalToken, *, now: datetime
) -> tuple[Request, Stage, Person]:
    """What an approval link is for, if it can still decide; else LinkUsed / LinkOutdated
    (used, the request or stage moved on, or its addressee's part decided already)."""
    request = session.get(Request, grant.request_id)
    stage = session.get(Stage, grant.stage_id)
    person = session.get(Person, grant.person_id)
    if request is None or stage is None or person is None or stage.request_id != request.id:
        raise LinkOutdated("this link points at a request that no longer exists")
    earlier = links.used(session, grant.nonce)
    if earlier is not None:
        raise LinkUsed(
            f"this link was already used: {earlier.outcome.replace('_', ' ')} on "
            f"{actions.local_time(session, request, earlier.used_at)}; it decides once"
        )
    if request.status != RequestStatus.IN_REVIEW:
        raise LinkOutdated(
            f"{request.ref} is {request.status.replace('_', ' ')}: nothing waits for a decision"
        )
    if stage.round != grant.round or stage.status != StageStatus.OPEN:
        raise LinkOutdated(
            f"{stage.name} of {request.ref} has moved on since this link was sent "
            f"(it is {stage.status.replace('_', ' ')}); a newer email has the current link"
        )
    before = actions.standing(session, request, stage, person, now=now)
    if isinstance(before, AlreadyDecided):
        raise LinkOutdated(str(before))
    if isinstance(before, RuleViolation):
        # Not theirs to decide now, for a reason a newer email does not change: said on opening
        # the link, not after they have chosen and pressed the button.
        raise LinkRefused(str(before))
    if before is not None:
        if before.actor_id == person.id:
            raise LinkOutdated(
                f"you already decided {stage.name} of {request.ref}: {label(before.outcome)} "
                f"on {actions.local_time(session, request, before.decided_at)}; "
                "a decision cannot be changed"
            )
        raise LinkOutdated(
            f"{stage.name} of {request.ref} has moved on since this link was sent: "
            f"{actions.part_of(before.slot)} was already decided by "
            f"{actions.decided_by(session, request, before)}"
        )
    return request, stage, person


def record(
    engine: Engine,
    decision: Decision,
    *,
    now: datetime,
    link: ApprovalToken | None = None,
    after: Callable[[actions.DecisionResult], None] | None = None,
) -> actions.DecisionResult:
    """Apply one decision (and consume the link it came with) in one transaction; then start
    what follows it. Raises the engine's errors (InputError, RuleViolation, ...) unchanged."""
    try:
        with transaction(engine) as session:
            stage_key = decision.stage_key
            actor = decision.actor_email
            if link is not None:
                actions.lock_request(session, link.request_id)  # one decision at a time
                _, stage, person = check_link(session, link, now=now)
                stage_key, actor = stage.key, person.email
            result = actions.decide(
                session,
                ref=link.request_id if link is not None else decision.ref,
                actor_email=actor,
                outcome=decision.outcome,
                comment=decision.comment,
                stage_key=stage_key,
                now=now,
                confirm_terms=decision.confirm_terms,
            )
            if link is not None:
                session.add(
                    links.UsedLink(
                        nonce=link.nonce,
                        request_id=link.request_id,
                        stage_id=link.stage_id,
                        person_id=link.person_id,
                        outcome=result.outcome,
                        used_at=now,
                    )
                )
                session.flush()
    except IntegrityError:
        if link is None:
            raise
        raise LinkUsed("this link was already used: it decides once") from None
    if not result.noop:
        from procure.orchestration import trigger

        # With a Prefect server configured, orchestration follows at once; without one, the
        # database holds the decision and the scheduled flows take it on.
        trigger("advance", {"request": result.ref})
        if after is not None:
            after(result)
    return result
