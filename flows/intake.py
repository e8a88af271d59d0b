"""intake: a file of requests checked whole, then submitted in batches, with progress."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from models.types import plural
from tasks.artifacts import publish_table, start_progress, update_progress
from tasks.batching import BatchSize, as_is, chunks
from tasks.requests import read_requests, submit_batch


def _name() -> str:
    return f"intake-{Path(str(flow_run.parameters.get('source', 'file'))).stem}"


@flow(name="intake", flow_run_name=_name)
async def intake(source: str, batch_size: BatchSize = 200) -> list[str]:
    """Check every request of the file (nothing is written if one is wrong), submit them in
    batches of `batch_size` (each batch one transaction, safe to retry), return their ids."""
    drafts = read_requests(source)
    progress = start_progress("intake", len(drafts), "requests submitted")
    submitted: list[dict[str, object]] = []
    for batch in chunks(drafts, batch_size):
        submitted += submit_batch(as_is(batch))
        update_progress(progress, len(submitted), len(drafts), "requests submitted")
    publish_table(
        "intake", submitted, f"{plural(len(submitted), 'request')} from {Path(source).name}"
    )
    return [str(r["id"]) for r in submitted]


if __name__ == "__main__":
    import asyncio
    import sys

    print(asyncio.run(intake(sys.argv[1])))
