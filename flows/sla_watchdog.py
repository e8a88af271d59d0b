"""sla-watchdog (every 15 minutes): reminders at half a stage's SLA, escalations past it."""

from __future__ import annotations

from prefect import flow

from models.types import plural
from tasks.artifacts import publish_table
from tasks.batching import BatchSize, chunks
from tasks.watch import sla_sweep, stages_to_watch


@flow(name="sla-watchdog", flow_run_name="sla-watchdog")
async def sla_watchdog(batch_size: BatchSize = 500) -> dict[str, int]:
    """Check every open stage with an SLA, in batches; nobody hears twice about one deadline.
    The `sla-watchdog` artifact lists each reminder and escalation: request, stage, deadline,
    who was told, and the role it was escalated to."""
    totals = {"checked": 0, "reminders": 0, "escalations": 0}
    told: list[dict[str, str]] = []
    for batch in chunks(stages_to_watch(), batch_size):
        swept = sla_sweep(batch)
        for key in totals:
            totals[key] += swept[key]
        told += swept["told"]
    if told:
        publish_table(
            "sla-watchdog",
            told,
            f"{plural(totals['reminders'], 'reminder')} and "
            f"{plural(totals['escalations'], 'escalation')} of this run "
            f"({plural(totals['checked'], 'stage')} with an SLA checked)",
        )
    return totals


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(sla_watchdog()))
