"""lifecycle-watch (daily): warranty, lease and DaaS ends at 90/60/30 days; leavers' devices
asked back shortly before their last day."""

from __future__ import annotations

from typing import Any

from prefect import flow

from models.types import plural
from tasks.artifacts import publish_table
from tasks.batching import BatchSize, chunks
from tasks.watch import assets_to_watch, leaver_batch, leavers_to_watch, lifecycle_batch


@flow(name="lifecycle-watch", flow_run_name="lifecycle-watch")
async def lifecycle_watch(batch_size: BatchSize = 500) -> dict[str, Any]:
    """Alert IT and purchasing once per group of devices ending together, draft refreshes (one
    per group), ask leased and DaaS devices back; ask leavers whose return day has come for
    their devices, deactivate those past their last day."""
    totals: dict[str, Any] = {
        "checked": 0,
        "alerts": 0,
        "drafts": [],
        "returns": [],
        "leaver_returns": [],
        "left": [],
    }
    for batch in chunks(assets_to_watch(), batch_size):
        for key, value in lifecycle_batch(batch).items():
            totals[key] += value
    for batch in chunks(leavers_to_watch(), batch_size):
        for key, value in leaver_batch(batch).items():
            totals[key] += value
    publish_table(
        "lifecycle-watch",
        [{"drafted": ref} for ref in totals["drafts"]]
        + [{"asked back": s} for s in totals["returns"]]
        + [{"asked back from a leaver": s} for s in totals["leaver_returns"]]
        + [{"left": email} for email in totals["left"]],
        f"{plural(totals['alerts'], 'alert')}, "
        f"{plural(len(totals['drafts']), 'refresh', 'refreshes')} drafted, "
        f"{plural(len(totals['returns']), 'device')} asked back at the contract's end, "
        f"{len(totals['leaver_returns'])} from leavers",
    )
    return totals


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(lifecycle_watch()))
