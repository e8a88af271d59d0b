"""record-decision: an approver's decision from the Prefect UI (a validated form), then advance.

Run the `record-decision` deployment from the UI ("Run" > "Custom run"): the form is the
DecisionCreate model (request, approver, decision, comment, stage, confirm_terms); Prefect
validates it before the run starts. The run is queued in the Prefect database and executed by
a worker, so it survives restarts; the decision itself follows the same rules as everywhere.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.advance import advance
from models.requests import DecisionCreate, canonical_ref
from tasks.requests import apply_decision


def _name() -> str:
    decision = flow_run.parameters.get("decision") or {}
    request = decision.get("request", "") if isinstance(decision, dict) else decision.request
    return f"decide-{canonical_ref(request)}"


@flow(name="record-decision", flow_run_name=_name)
async def record_decision(decision: DecisionCreate) -> dict[str, Any]:
    """Apply one decision, then advance the request."""
    result = apply_decision(
        decision.request,
        decision.approver,
        decision.decision,
        comment=decision.comment,
        stage=decision.stage,
        confirm_terms=decision.confirm_terms,
    )
    result["request_status"] = await advance(result["id"])
    return result


if __name__ == "__main__":
    import asyncio
    import json
    import sys

    print(asyncio.run(record_decision(DecisionCreate.model_validate(json.loads(sys.argv[1])))))
