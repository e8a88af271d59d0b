"""advance: after a decision, show the request in the UI and, once it is approved, order it."""

from __future__ import annotations

from prefect import flow

from tasks.artifacts import publish_request
from tasks.requests import load_detail, orders_automatically, place_orders


@flow(name="advance", flow_run_name="advance-{request}")
async def advance(request: str) -> str:
    """Publish the request's summary, timeline and costs; an approved request whose pipeline
    orders automatically is ordered now. Returns the request's status."""
    detail = load_detail(request)
    if detail["status"] == "approved" and orders_automatically(request):
        place_orders([detail["id"]])
        detail = load_detail(request)
    publish_request(detail)
    return str(detail["status"])


if __name__ == "__main__":
    import asyncio
    import sys

    asyncio.run(advance(sys.argv[1]))
