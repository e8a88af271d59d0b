"""The notification dispatcher as a task: one run sends what is due, in leased chunks."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.errors import InputError
from tasks.db import engine, read
from tasks.requests import now, retry_unless_refused


@task(
    name="send-notifications",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_refused,
    cache_policy=NO_CACHE,
)
def send_notifications(requests: list[str] | None = None) -> dict[str, Any]:
    """Send the due rows, of every request or of `requests` (PR-0042; an unknown one is
    refused, naming it, before anything is sent). A retry is safe: delivered destinations are
    skipped, claimed rows are leased. Without a routes file nothing is sent and the rows wait,
    with a warning."""
    from models.actions import get_request
    from notifications.dispatch import dispatcher
    from procure import settings

    log = get_run_logger()
    request_ids: list[int] | None = None
    if requests is not None:
        with read() as session:
            request_ids = [get_request(session, ref).id or 0 for ref in requests]
    config = settings.load()
    moment = now()
    try:
        relay = dispatcher(engine(), config, now=moment)
    except InputError as exc:
        log.warning("notifications stay queued: %s", exc)
        return {"skipped": str(exc)}
    report = relay.run(now=moment, request_ids=request_ids)
    for line in report.failures[:50]:
        log.warning(line)  # destinations appear with their secrets masked
    for line in report.warnings[:20]:
        log.warning(line)
    if report.claimed:
        log.info("%s", report.summary)  # as `procure notify send` prints it: the counts add up
    return report.as_dict()
