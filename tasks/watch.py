"""Tasks of the scheduled watches: SLA reminders and escalations, device lifecycle, slipping
dates, the weekly digest, the HR sync. Each works on one batch in one transaction."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from models import digest, hr, pipeline, sla, watch
from models.types import plural
from tasks.db import read, write
from tasks.requests import RETRIES, now, retry_unless_refused


@task(name="stages-to-watch", **RETRIES)
def stages_to_watch() -> list[int]:
    with read() as session:
        return sla.watched_stages(session, now=now())


@task(name="sla-sweep", **RETRIES)
def sla_sweep(stage_ids: list[int]) -> dict[str, Any]:
    """Remind and escalate for one batch of stages (never twice for one deadline): the counts,
    and `told`: a row per reminder or escalation queued (sla.told_row)."""
    with write() as session:
        result = sla.sweep(session, stage_ids=stage_ids, now=now())
    if result.reminders or result.escalations:
        get_run_logger().info(
            "%s checked: %s, %s",
            plural(result.checked, "stage"),
            plural(result.reminders, "reminder"),
            plural(result.escalations, "escalation"),
        )
    return {
        "checked": result.checked,
        "reminders": result.reminders,
        "escalations": result.escalations,
        "told": result.told,
    }


@task(name="assets-to-watch", **RETRIES)
def assets_to_watch() -> list[int]:
    with read() as session:
        _, spec = pipeline.active(session)
        return watch.ending_assets(session, today=spec.calendar.today(now()))


@task(name="lifecycle-batch", **RETRIES)
def lifecycle_batch(asset_ids: list[int]) -> dict[str, Any]:
    """Alert, draft refreshes and ask leased devices back, for one batch of devices."""
    with write() as session:
        _, spec = pipeline.active(session)
        result = watch.lifecycle_watch(session, asset_ids=asset_ids, spec=spec, now=now())
    log = get_run_logger()
    for ref in result.drafts:
        log.info("%s drafted: a refresh to check and send", ref)
    for serial in result.returns:
        log.info("%s asked back: its lease or DaaS term ends", serial)
    return {
        "checked": result.checked,
        "alerts": result.alerts,
        "drafts": result.drafts,
        "returns": result.returns,
    }


@task(name="leavers-to-watch", **RETRIES)
def leavers_to_watch() -> list[int]:
    with read() as session:
        _, spec = pipeline.active(session)
        return hr.leavers_to_watch(session, spec=spec, now=now())


@task(name="leaver-batch", **RETRIES)
def leaver_batch(person_ids: list[int]) -> dict[str, Any]:
    """Ask leavers whose return day has come for their devices, deactivate those who left."""
    with write() as session:
        _, spec = pipeline.active(session)
        result = hr.leaver_watch(session, person_ids=person_ids, spec=spec, now=now())
    log = get_run_logger()
    for serial in result.returns:
        log.info("%s asked back: its holder leaves soon", serial)
    for email in result.deactivated:
        log.info("%s left: deactivated", email)
    return {"leaver_returns": result.returns, "left": result.deactivated}


@task(name="requests-to-check", **RETRIES)
def requests_to_check() -> list[int]:
    with read() as session:
        return watch.slipping_requests(session)


@task(name="slip-batch", **RETRIES)
def slip_batch(request_ids: list[int]) -> dict[str, Any]:
    with write() as session:
        _, spec = pipeline.active(session)
        result = watch.delivery_slips(session, request_ids=request_ids, spec=spec, now=now())
    log = get_run_logger()
    for ref in result.late_orders:
        log.info("%s is past its order-by date and not ordered: purchasing told", ref)
    for ref in result.late_deliveries:
        log.info("%s will be delivered after it is needed: purchasing and IT told", ref)
    return {
        "checked": result.checked,
        "late_orders": result.late_orders,
        "late_deliveries": result.late_deliveries,
    }


@task(name="send-digests", **RETRIES)
def send_digests() -> list[str]:
    with write() as session:
        _, spec = pipeline.active(session)
        return digest.send_digests(session, spec=spec, now=now())


@task(
    name="read-hr-export",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_refused,
)
def read_hr_export(path: str) -> list[hr.HrRow]:
    """Parse and check the whole export before anything is written."""
    with read() as session:
        return hr.read_checked(session, path, now=now()).rows


@task(name="hr-batch", **RETRIES)
def hr_batch(rows: list[hr.HrRow]) -> dict[str, Any]:
    """Apply one batch of joiners and leavers (a row applied twice changes nothing more)."""
    with write() as session:
        _, spec = pipeline.active(session)
        result = hr.apply(session, rows=rows, now=now(), spec=spec)
    log = get_run_logger()
    for ref in result.joiners:
        log.info("%s: onboarding request for a joiner", ref)
    for ref in result.moved:
        log.info("%s: the joiner's start date moved (the request keeps its date)", ref)
    for entry in result.leavers:
        log.info("leaver %s", hr.leaver_text(entry))
    if result.returns:
        log.info(
            "%s asked back: %s",
            plural(len(result.returns), "device"),
            "its holder leaves" if len(result.returns) == 1 else "their holders leave",
        )
    for email in result.withdrawn:
        log.info("%s: leave withdrawn, no longer leaving", email)
    return {
        "joiners": result.joiners,
        "moved": result.moved,
        "leavers": result.leavers,
        "returns": result.returns,
        "deactivated": result.deactivated,
        "withdrawn": result.withdrawn,
        "unchanged": result.unchanged,
    }
