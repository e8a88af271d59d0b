"""sla-watchdog (every 15 minutes): reminders at half a stage's SLA, escalations past it."""

from __future__ import annotations

from prefect import flow

from tasks.artifacts import publish_table
from tasks.batching import BatchSize, chunks
from tasks.watch import sla_sweep, stages_to_watch


@flow(name="sla-watchdog", flow_run_name="sla-watchdog")
async def sla_watchdog(batch_size: BatchSize = 500) -> dict[str, int]:
    """Check every open stage with an SLA, in batches; nobody hears twice about one deadline."""
    totals = {"checked": 0, "reminders": 0, "escalations": 0}
    for batch in chunks(stages_to_watch(), batch_size):
        for key, value in sla_sweep(batch).items():
            totals[key] += value
    if totals["reminders"] or totals["escalations"]:
        publish_table("sla-watchdog", [totals], "reminders and escalations of this run")
    return totals


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(sla_watchdog()))
