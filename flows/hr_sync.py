"""hr-sync (daily): joiners get their onboarding request; leavers' last days are recorded, their
devices asked back now if the day is near (else by the lifecycle watch when it comes); withdrawn
leaves are cancelled."""

from __future__ import annotations

from typing import Any

from prefect import flow

from models import hr
from tasks.artifacts import publish_table, start_progress, update_progress
from tasks.batching import BatchSize, as_is, chunks
from tasks.watch import hr_batch, read_hr_export


@flow(name="hr-sync", flow_run_name="hr-sync")
async def hr_sync(export: str, batch_size: BatchSize = 200) -> dict[str, Any]:
    """Read the HR export (checked whole first), apply it in batches (each safe to repeat)."""
    rows = read_hr_export(export)
    progress = start_progress("hr-sync", len(rows), "people synced")
    totals: dict[str, Any] = {
        "joiners": [],
        "moved": [],
        "leavers": [],
        "returns": [],
        "deactivated": [],
        "withdrawn": [],
        "unchanged": 0,
    }
    done = 0
    for batch in chunks(rows, batch_size):
        for key, value in hr_batch(as_is(batch)).items():
            totals[key] += value
        done += len(batch)
        update_progress(progress, done, len(rows), "people synced")
    publish_table(
        "hr-sync",
        [{"onboarding request": ref} for ref in totals["joiners"]]
        + [{"start date moved": ref} for ref in totals["moved"]]
        + [{"leaver": hr.leaver_text(entry)} for entry in totals["leavers"]]
        + [{"asked back": serial} for serial in totals["returns"]]
        + [{"left": email} for email in totals["deactivated"]]
        + [{"leave withdrawn": email} for email in totals["withdrawn"]],
        hr.sync_summary(totals),
    )
    return totals


if __name__ == "__main__":
    import asyncio
    import sys

    print(asyncio.run(hr_sync(sys.argv[1])))
