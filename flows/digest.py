"""digest (weekly): each team's digest of what waits for it and what is late."""

from __future__ import annotations

from prefect import flow

from tasks.watch import send_digests


@flow(name="digest", flow_run_name="digest")
async def digest() -> list[str]:
    """Queue this week's digest for every team (a second run in the same week sends nothing)."""
    return send_digests()


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(digest()))
