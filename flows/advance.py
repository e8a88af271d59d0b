"""advance: after a decision, show the request in the UI and, once it is approved, order it."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from models.requests import canonical_ref
from tasks.artifacts import publish_request
from tasks.requests import load_detail, orders_automatically, place_orders


def _name() -> str:
    return f"advance-{canonical_ref(flow_run.parameters.get('request', ''))}"


@flow(name="advance", flow_run_name=_name)
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
