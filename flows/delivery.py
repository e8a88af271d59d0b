"""delivery: a supplier's shipping notice recorded (one request, or many in one file), then the
devices handed out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from models.assets import by_request
from models.types import plural
from tasks.artifacts import publish_request, publish_table, start_progress, update_progress
from tasks.batching import BatchSize, as_is, chunks
from tasks.requests import (
    check_shipments,
    load_detail,
    read_assignments,
    read_serials,
    record_deliveries,
    roll_out,
)


def _name() -> str:
    request = flow_run.parameters.get("request")
    return (
        f"delivery-{request}"
        if request
        else f"delivery-{Path(str(flow_run.parameters.get('serials_file', 'file'))).stem}"
    )


@flow(name="delivery", flow_run_name=_name)
async def delivery(
    serials_file: str,
    request: str | None = None,
    assignments_file: str | None = None,
    hand_out: bool = True,
    batch_size: BatchSize = 50,
) -> list[dict[str, Any]]:
    """Record the delivered serials (a `request` column, or the one request given); requests
    whose last unit arrived have their devices handed out (by the assignments file, or each to
    the person it was requested for)."""
    shipments = by_request(read_serials(serials_file), request, serials_file)
    check_shipments(as_is(shipments), serials_file)
    assignments = read_assignments(assignments_file) if assignments_file else None
    progress = start_progress("delivery", len(shipments), "requests delivered")
    results: list[dict[str, Any]] = []
    for refs in chunks(sorted(shipments), batch_size):
        delivered = record_deliveries(as_is({ref: shipments[ref] for ref in refs}), serials_file)
        complete = [d["id"] for d in delivered if d["status"] == "delivered"]
        if hand_out and complete:
            handed = {r["id"]: r for r in roll_out(complete, assignments)}
            for d in delivered:
                if d["id"] in handed:
                    d["rollout"] = handed[d["id"]]
        results += delivered
        update_progress(progress, len(results), len(shipments), "requests delivered")
    if request is not None:
        publish_request(load_detail(request))
    else:
        publish_table(
            "delivery", results, f"{plural(len(results), 'request')} in {Path(serials_file).name}"
        )
    return results


if __name__ == "__main__":
    import asyncio
    import sys

    print(asyncio.run(delivery(sys.argv[1])))
