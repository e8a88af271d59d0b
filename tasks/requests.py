"""Tasks over the request lifecycle: submit, decide, order, deliver, roll out, return, erase.

Each body is one transaction through models.actions and recognises what is already done,
so a retry after a commit changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from models import actions
from models.assets import (
    Assignment,
    SerialIn,
    read_assignments_file,
    read_certificates_file,
    read_serials_file,
)
from models.errors import (
    ConcurrentUpdate,
    FieldErrors,
    InputError,
    ProcureError,
    RuleViolation,
    problems_of,
)
from models.lifecycle import AssetStatus, RequestStatus
from models.requests import Draft, read_request_file
from models.types import plural
from models.views import request_detail
from tasks.db import read, write


def retry_unless_refused(_task: Any, _run: Any, state: State[Any]) -> bool:
    """Retry what a second try may get through (a lost connection, a busy database, a row
    changed meanwhile), never what procure refused on purpose (bad input, a rule): that would
    be refused again, only later and after more log lines."""
    error = state.data
    return not isinstance(error, ProcureError) or isinstance(error, ConcurrentUpdate)


RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 5, 15],
    "retry_condition_fn": retry_unless_refused,
    "cache_policy": NO_CACHE,
}


def now() -> datetime:
    """The clock of this installation (PROCURE_NOW for rehearsals, else the real one)."""
    from models.types import utcnow
    from procure import settings

    return settings.load().now or utcnow()


@task(name="read-requests", cache_policy=NO_CACHE)
def read_requests(path: str) -> list[Draft]:
    """Parse a request file and check every reference in it before anything is written (those
    of its valid requests too when others have bad fields: every problem at once)."""
    try:
        drafts = read_request_file(path)
    except FieldErrors as exc:
        with read() as session:
            raise exc.with_checks(
                lambda valid: actions.check_drafts(session, drafts=valid, now=now())
            ) from None
    with read() as session:
        problems = actions.check_drafts(session, drafts=drafts, now=now())
    if problems:
        raise InputError(problems)
    return drafts


@task(name="read-serials", cache_policy=NO_CACHE)
def read_serials(path: str) -> list[SerialIn]:
    return read_serials_file(path)


@task(name="check-shipments", cache_policy=NO_CACHE)
def check_shipments(shipments: dict[str, list[SerialIn]], source: str) -> None:
    """The notice as a whole, before anything is recorded: every problem at once
    (actions.check_shipments)."""
    with read() as session:
        actions.check_shipments(session, shipments, source)


@task(name="read-assignments", cache_policy=NO_CACHE)
def read_assignments(path: str) -> list[Assignment]:
    return read_assignments_file(path)


@task(name="read-certificates", cache_policy=NO_CACHE)
def read_certificates(path: str) -> list[dict[str, str]]:
    """Parse an erasure file and check that every device in it exists, before any is touched
    (those of its valid rows too when others have bad fields: every problem at once)."""
    try:
        certificates = read_certificates_file(path)
    except FieldErrors as exc:
        with read() as session:
            raise exc.with_checks(
                lambda valid: problems_of(lambda: actions.check_certificates(session, valid, path))
            ) from None
    with read() as session:
        actions.check_certificates(session, certificates, path)
    return certificates


@task(name="submit-batch", **RETRIES)
def submit_batch(drafts: list[Draft]) -> list[dict[str, Any]]:
    """Submit a batch of requests in one transaction; resubmitted keys return their request."""
    with write() as session:
        results = actions.submit(session, drafts=drafts, now=now())
    # One line a batch, not one a request: a 1,000-request file is five lines, and its
    # artifact table lists each request.
    created = [r.ref for r in results if r.created]
    known = [r.ref for r in results if not r.created]
    log = get_run_logger()
    if created:
        log.info("%s submitted: %s", len(created), ", ".join(created))
    if known:
        log.info("%s already submitted, nothing new: %s", len(known), ", ".join(known))
    return [{"id": r.ref, "status": str(r.status), "created": r.created} for r in results]


@task(name="apply-decision", **RETRIES)
def apply_decision(
    request: str,
    approver: str,
    outcome: str,
    comment: str = "",
    stage: str | None = None,
    confirm_terms: bool = False,
) -> dict[str, Any]:
    """Record one approver's decision; the same decision again is a no-op."""
    with write() as session:
        result = actions.decide(
            session,
            ref=request,
            actor_email=approver,
            outcome=outcome,
            comment=comment,
            stage_key=stage,
            now=now(),
            confirm_terms=confirm_terms,
            actor_field="approver",
        )
    for_ = f" on behalf of {result.on_behalf_of}" if result.on_behalf_of else ""
    note = " (already recorded)" if result.noop else ""
    get_run_logger().info(
        "%s %s: %s by %s%s as %s → stage %s, request %s%s",
        result.ref,
        result.stage,
        result.outcome,
        result.actor,
        for_,
        result.role,
        result.stage_status,
        result.request_status,
        note,
    )
    return {
        "id": result.ref,
        "stage": result.stage,
        "outcome": result.outcome,
        "status": str(result.request_status),
        "changed": not result.noop,
    }


@task(name="approved-requests", cache_policy=NO_CACHE)
def approved_requests(limit: int = 10_000) -> list[str]:
    """Approved requests whose pipeline orders automatically, oldest approval first."""
    from sqlmodel import col, select

    from models.requests import Request

    with read() as session:
        rows = session.exec(
            select(Request)
            .where(Request.status == RequestStatus.APPROVED)
            .order_by(col(Request.decided_at))
            .limit(limit)
        ).all()
        return [r.ref for r in rows if actions.spec_for(session, r).auto_order]


@task(name="orders-automatically", cache_policy=NO_CACHE)
def orders_automatically(request: str) -> bool:
    """Whether the request's pipeline orders approved requests without waiting for purchasing."""
    with read() as session:
        return actions.spec_for(session, actions.get_request(session, request)).auto_order


@task(name="place-orders", **RETRIES)
def place_orders(requests: list[str]) -> list[dict[str, Any]]:
    """Order a batch of approved requests, one transaction each (a request already ordered is
    skipped, so a retried batch orders nothing twice); returns the purchase orders."""
    log = get_run_logger()
    placed: list[dict[str, Any]] = []
    for ref in requests:
        with write() as session:
            request = actions.get_request(session, ref)
            if request.status != RequestStatus.APPROVED:
                continue
            try:
                result = actions.place_order(session, ref=ref, now=now())
            except RuleViolation as exc:
                # e.g. an agreement ran out of volume: purchasing must re-source it; the rest go on.
                log.warning("%s not ordered: %s", ref, exc)
                continue
        for po in result["purchase_orders"]:
            units = sum(line["quantity"] for line in po["lines"])
            log.info(
                "%s ordered: %s from %s, %s, %s %s",
                ref,
                po["number"],
                po["supplier"],
                plural(units, "unit"),
                po["total"],
                po["currency"],
            )
            placed.append(
                {
                    "request": ref,
                    **{k: po[k] for k in ("number", "supplier", "currency")},
                    "units": units,
                    "total": str(po["total"]),
                }
            )
    return placed


@task(name="record-deliveries", **RETRIES)
def record_deliveries(
    shipments: dict[str, list[SerialIn]], source: str | None = None
) -> list[dict[str, Any]]:
    """Record delivered serials for a batch of requests, one transaction each; serials already
    recorded for their request are skipped, so a retried batch records nothing twice. `source`:
    the shipping notice, which a problem with a serial names with its line."""
    log = get_run_logger()
    done = []
    for request, units in shipments.items():
        with write() as session:
            current = actions.get_request(session, request)
            fresh = actions.undelivered(session, current, units)
            if fresh:
                progress = actions.deliver(
                    session, ref=request, units=fresh, now=now(), source=source
                )
                delivered, remaining, status = progress.done, progress.remaining, progress.status
            else:
                remaining = sum(
                    1
                    for a in actions.assets_of(session, current)
                    if a.status == AssetStatus.ORDERED
                )
                delivered, status = 0, current.status
        if delivered:
            log.info("%s: %s delivered, %s to come", request, delivered, remaining)
        done.append(
            {"id": request, "delivered": delivered, "remaining": remaining, "status": str(status)}
        )
    return done


@task(name="roll-out", **RETRIES)
def roll_out(
    requests: list[str], assignments: list[Assignment] | None = None
) -> list[dict[str, Any]]:
    """Hand the delivered devices of a batch of requests out (by the assignments, or each to the
    person it was requested for); devices already handed out are skipped."""
    log = get_run_logger()
    done = []
    for request in requests:
        with write() as session:
            current = actions.get_request(session, request)
            delivered = {
                a.serial
                for a in actions.assets_of(session, current)
                if a.status == AssetStatus.DELIVERED
            }
            mine = (
                [a for a in assignments if a.serial in delivered]
                if assignments is not None
                else None
            )
            if not delivered or mine == []:
                done.append({"id": request, "assigned": 0, "status": str(current.status)})
                continue
            progress = actions.roll_out(session, ref=request, assignments=mine, now=now())
        log.info(
            "%s: %s handed out, %s to go",
            request,
            plural(progress.done, "device"),
            progress.remaining,
        )
        done.append({"id": request, "assigned": progress.done, "status": str(progress.status)})
    return done


@task(name="ask-returns", **RETRIES)
def ask_returns(serials: list[str], reason: str) -> list[str]:
    """Ask devices back; those already asked for (or back) are skipped."""
    asked = []
    for serial in serials:
        with write() as session:
            if actions.find_asset(session, serial).status != AssetStatus.DEPLOYED:
                continue
            actions.request_return(session, serial=serial, reason=reason, now=now())
            asked.append(serial)
    return asked


@task(name="record-erasures", **RETRIES)
def record_erasures(certificates: list[dict[str, str]]) -> list[str]:
    """Record the erasure certificates of devices asked back or returned (check_certificates has
    checked the file whole): one asked back is received first; one erased already under the
    same certificate is skipped."""
    erased = []
    log = get_run_logger()
    for cert in certificates:
        with write() as session:
            asset = actions.find_asset(session, cert["serial"])
            if asset.status == AssetStatus.RETURN_REQUESTED:
                actions.receive_return(session, serial=cert["serial"], now=now())
            if asset.status != AssetStatus.RETURNED:
                continue
            actions.erase(
                session,
                serial=cert["serial"],
                certificate=cert["certificate"],
                method=cert["method"],
                provider=cert["provider"],
                now=now(),
            )
        log.info(
            "%s erased (certificate %s from %s)",
            cert["serial"],
            cert["certificate"],
            cert["provider"],
        )
        erased.append(cert["serial"])
    return erased


@task(name="request-detail", cache_policy=NO_CACHE)
def load_detail(request: str) -> dict[str, Any]:
    """Everything about a request, as the CLI's `request show --json` prints it."""
    with read() as session:
        return request_detail(session, actions.get_request(session, request), now=now())
