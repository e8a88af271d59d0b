"""order: approved requests ordered in batches: purchase orders per supplier, call-offs."""

from __future__ import annotations

from typing import Any

from prefect import flow

from models.types import plural
from tasks.artifacts import publish_table, start_progress, update_progress
from tasks.batching import BatchSize, chunks
from tasks.requests import approved_requests, place_orders


@flow(name="order", flow_run_name="order")
async def order(
    requests: list[str] | None = None, batch_size: BatchSize = 50
) -> list[dict[str, Any]]:
    """Order the given requests, or every approved one whose pipeline orders automatically."""
    refs = requests if requests is not None else approved_requests()
    progress = start_progress("order", len(refs), "requests ordered")
    placed: list[dict[str, Any]] = []
    done = 0
    for batch in chunks(refs, batch_size):
        placed += place_orders(batch)
        done += len(batch)
        update_progress(progress, done, len(refs), "requests ordered")
    publish_table("purchase-orders", placed, plural(len(placed), "purchase order"))
    return placed


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(order()))
