"""returns: devices asked back, then received and erased as the provider's certificates arrive."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.artifacts import publish_table
from tasks.batching import BatchSize, chunks
from tasks.requests import ask_returns, read_certificates, record_erasures


@flow(name="returns", flow_run_name="returns")
async def returns(
    serials: list[str] | None = None,
    reason: str = "",
    certificates_file: str | None = None,
    batch_size: BatchSize = 200,
) -> dict[str, Any]:
    """Ask these devices back; record the erasure certificates in the file (CSV: serial,
    certificate, method, provider), which receives the devices first if need be."""
    # The file is read and checked whole first: a bad one changes nothing.
    certificates = read_certificates(certificates_file) if certificates_file else []
    asked: list[str] = []
    for batch in chunks(serials or [], batch_size):
        asked += ask_returns(batch, reason)
    erased: list[str] = []
    for chunk in chunks(certificates, batch_size):
        erased += record_erasures(chunk)
    publish_table(
        "returns",
        [{"serial": s, "done": "asked back"} for s in asked]
        + [{"serial": s, "done": "erased"} for s in erased],
        f"{len(asked)} asked back, {len(erased)} erased",
    )
    return {"asked": asked, "erased": erased}


if __name__ == "__main__":
    import asyncio
    import sys

    print(asyncio.run(returns(certificates_file=sys.argv[1])))
