"""What the Prefect UI shows of a request: its summary, its decisions, its money; progress of bulk runs.

Artifact keys are lowercase letters, digits and dashes (request-pr-0042). Nothing secret goes
into an artifact: requests hold no credentials, and the database URL is never read here.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from models.types import plural


def key_for(kind: str, ref: str) -> str:
    """request-pr-0042, timeline-pr-0042, costs-pr-0042."""
    return f"{kind}-{ref.lower()}"


def summary_rows(detail: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {"field": "status", "value": detail["status"]},
        {"field": "kind", "value": detail["kind"]},
        {"field": "requester", "value": detail["requester"]},
        {"field": "for", "value": detail["on_behalf_of"]},
        {"field": "cost centre", "value": detail["cost_centre"]},
        {"field": "total", "value": f"{detail['total']} {detail['currency']}"},
        {"field": "needed by", "value": detail["needed_by"]},
        {"field": "order by", "value": detail["order_by"]},
    ]
    rows += [
        {
            "field": f"line {ln['line']}",
            "value": f"{ln['quantity']} x {ln['sku']} at {ln['unit_price']} = {ln['total']}",
        }
        for ln in detail["lines"]
    ]
    rows += [
        {
            "field": f"waiting for {p['stage']}",
            "value": (", ".join(p["approvers"]) or "nobody eligible")
            + "".join(f"; escalated to {e['to']}: {e['reason']}" for e in p["escalated"]),
        }
        for p in detail["pending"]
    ]
    return rows


def timeline_markdown(detail: dict[str, Any]) -> str:
    lines = [
        f"# {detail['id']}: {detail['status']}",
        "",
        "| when (UTC) | what | move | by |",
        "|---|---|---|---|",
    ]
    for e in detail["timeline"]:
        move = f"{e['from']} → {e['to']}" if e["to"] and e["from"] != e["to"] else ""
        by = e["actor"] + (f" for {e['on_behalf_of']}" if e["on_behalf_of"] else "")
        lines.append(
            f"| {e['at'][:19].replace('T', ' ')} | {e['entity_id']} {e['action']} | {move} | {by} |"
        )
    return "\n".join(lines)


def cost_rows(detail: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for t in detail["tco"]:
        for o in t["options"]:
            rows.append(
                {
                    "line": t["line"],
                    "sku": t["sku"],
                    "option": o["option"] + (" (cheapest)" if o["cheapest"] else ""),
                    "provider": o["provider"],
                    "capex": o["capex"],
                    "opex": o["opex"],
                    "total": o["total"],
                    "per month": o["monthly"],
                }
            )
    ledger = detail["ledger"]
    for e in ledger["entries"]:
        rows.append(
            {
                "line": "",
                "sku": "",
                "option": e["label"],
                "provider": plural(e["devices"], "device"),
                "capex": "",
                "opex": "",
                "total": e["incurred"],
                "per month": "",
            }
        )
    return rows


@task(name="publish-request", cache_policy=NO_CACHE)
def publish_request(detail: dict[str, Any]) -> None:
    """The request's summary (table), decision timeline (markdown) and cost comparison (table)."""
    ref = detail["id"]
    create_table_artifact(
        key=key_for("request", ref), table=summary_rows(detail), description=f"{ref}: summary"
    )
    create_markdown_artifact(
        key=key_for("timeline", ref),
        markdown=timeline_markdown(detail),
        description=f"{ref}: decisions and moves",
    )
    create_table_artifact(
        key=key_for("costs", ref),
        table=cost_rows(detail),
        description=f"{ref}: buy / lease / DaaS and the late-involvement cost",
    )


@task(name="start-progress", cache_policy=NO_CACHE)
def start_progress(key: str, total: int, what: str) -> UUID:
    """A progress artifact for a bulk run (at 0 %)."""
    return create_progress_artifact(progress=0.0, key=key, description=f"0 of {total} {what}")  # type: ignore[return-value]


@task(name="update-progress", cache_policy=NO_CACHE)
def update_progress(artifact_id: UUID, done: int, total: int, what: str) -> None:
    update_progress_artifact(
        artifact_id=artifact_id,
        progress=min(100.0, 100.0 * done / max(total, 1)),
        description=f"{done} of {total} {what}",
    )


@task(name="publish-table", cache_policy=NO_CACHE)
def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A table artifact (purchase orders of a run, what a watch did, ...)."""
    create_table_artifact(
        key=key, table=rows or [{"result": "nothing to do"}], description=description
    )
