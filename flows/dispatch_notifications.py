"""dispatch-notifications (every minute): the outbox relay, sending what is due."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.artifacts import publish_table
from tasks.notify import send_notifications


@flow(name="dispatch-notifications", flow_run_name="dispatch-notifications")
async def dispatch_notifications(requests: list[str] | None = None) -> dict[str, Any]:
    """Send every due notification (or only those of some requests, as procure writes them:
    PR-0042); failures are retried with back-off and, after the last attempt, reported to the
    operators' team. An unknown request fails the run, naming it, and sends nothing."""
    report = send_notifications(requests)
    if report.get("failures"):
        publish_table(
            "notification-failures",
            [{"failure": line} for line in report["failures"][:100]],
            "notifications not delivered in this run (retried later)",
        )
    return report


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(dispatch_notifications()))
