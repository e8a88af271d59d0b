"""delivery-slip-check (daily): requests past their order-by date, deliveries after the need."""

from __future__ import annotations

from typing import Any

from prefect import flow

from models.types import plural
from tasks.artifacts import publish_table
from tasks.batching import BatchSize, chunks
from tasks.watch import requests_to_check, slip_batch


@flow(name="delivery-slip-check", flow_run_name="delivery-slip-check")
async def delivery_slip_check(batch_size: BatchSize = 500) -> dict[str, Any]:
    totals: dict[str, Any] = {"checked": 0, "late_orders": [], "late_deliveries": []}
    for batch in chunks(requests_to_check(), batch_size):
        for key, value in slip_batch(batch).items():
            totals[key] += value
    rows = [{"request": r, "slipping": "order-by date passed"} for r in totals["late_orders"]]
    rows += [
        {"request": r, "slipping": "delivery after the needed-by date"}
        for r in totals["late_deliveries"]
    ]
    publish_table("delivery-slips", rows, f"{plural(len(rows), 'request')} slipping (newly told)")
    return totals


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(delivery_slip_check()))
