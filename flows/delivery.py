"""delivery: serials from the supplier recorded, then the devices handed out."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.artifacts import publish_request
from tasks.requests import load_detail, read_assignments, read_serials, record_delivery, roll_out


@flow(name="delivery", flow_run_name="delivery-{request}")
async def delivery(
    request: str, serials_file: str, assignments_file: str | None = None, hand_out: bool = True
) -> dict[str, Any]:
    """Record the delivered serials; once all arrived, hand the devices out (by the assignments
    file, or all to the person they were requested for)."""
    delivered = record_delivery(request, read_serials(serials_file))
    if hand_out and delivered["status"] == "delivered":
        assignments = read_assignments(assignments_file) if assignments_file else None
        delivered["rollout"] = roll_out(request, assignments)
    publish_request(load_detail(request))
    return delivered


if __name__ == "__main__":
    import asyncio
    import sys

    print(asyncio.run(delivery(sys.argv[1], sys.argv[2])))
