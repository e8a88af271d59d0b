"""Running the flows: locally (Prefect's temporary server), served (`procure serve`), or on workers.

This module sets Prefect's environment before Prefect is imported (quiet, no telemetry, the
temporary server's database under PROCURE_HOME), lists the deployments once for `procure
serve` and prefect.yaml alike, and triggers a deployment over Prefect's REST API without
importing Prefect (a decision from the CLI or the web app starts its `advance` run that way).
"""

from __future__ import annotations

import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import ProcureError

TIMEZONE = "Europe/Berlin"
# `procure serve`'s runner asks for runs to start this often (Prefect's default: 10 s).
RUNNER_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: its flow (module:function), schedule and default parameters."""

    name: str
    entrypoint: str  # flows/advance.py:advance
    description: str
    cron: str | None = None
    interval_seconds: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.entrypoint.split(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def function(self) -> str:
        return self.entrypoint.split(":")[1]


DEPLOYMENTS = (
    DeploymentSpec("intake", "flows/intake.py:intake", "Submit a file of requests in batches"),
    DeploymentSpec(
        "record-decision",
        "flows/record_decision.py:record_decision",
        "An approver's decision from the Prefect UI, then advance",
    ),
    DeploymentSpec(
        "advance", "flows/advance.py:advance", "After a decision: publish, order once approved"
    ),
    DeploymentSpec(
        "order",
        "flows/order.py:order",
        "Order the approved requests of pipelines that order automatically",
        cron="*/15 * * * *",
    ),
    DeploymentSpec(
        "delivery", "flows/delivery.py:delivery", "Record delivered serials, then hand devices out"
    ),
    DeploymentSpec(
        "returns", "flows/returns.py:returns", "Ask devices back, record erasure certificates"
    ),
    DeploymentSpec(
        "sla-watchdog",
        "flows/sla_watchdog.py:sla_watchdog",
        "Reminders at half the SLA, escalations past it",
        cron="*/15 * * * *",
    ),
    DeploymentSpec(
        "lifecycle-watch",
        "flows/lifecycle_watch.py:lifecycle_watch",
        "Warranty, lease and DaaS ends at 90/60/30 days; leavers' devices before their last day",
        cron="0 6 * * *",
    ),
    DeploymentSpec(
        "delivery-slip-check",
        "flows/delivery_slip_check.py:delivery_slip_check",
        "Requests past their order-by date, deliveries after the need",
        cron="30 6 * * *",
    ),
    DeploymentSpec(
        "digest", "flows/digest.py:digest", "Each team's weekly digest", cron="0 7 * * 1"
    ),
    DeploymentSpec(
        "dispatch-notifications",
        "flows/dispatch_notifications.py:dispatch_notifications",
        "Send due notifications; retry with back-off, tell the operators about dead ones",
        cron="* * * * *",
    ),
    DeploymentSpec(
        "hr-sync",
        "flows/hr_sync.py:hr_sync",
        "Joiners get onboarding requests, leavers give devices back before their last day",
        cron="0 5 * * *",
    ),
)


def by_name(name: str) -> DeploymentSpec:
    for spec in DEPLOYMENTS:
        if spec.name == name:
            return spec
    raise ProcureError(f"unknown flow {name!r} (known: {', '.join(d.name for d in DEPLOYMENTS)})")


def prepare_environment(home: Path | None = None) -> None:
    """Prefect settings for procure, set before Prefect is imported (an operator's own win)."""
    from procure import settings

    base = (home or settings.load().home).expanduser()
    defaults = {
        # The temporary server's database lives with procure's, not in ~/.prefect.
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The temporary server logs 'database is locked' and cancellation noise at exit.
        "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
        # Its first start migrates a new database: give it time on a slow machine.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_COLORS": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def load_flow(spec: DeploymentSpec) -> Any:
    import importlib

    return getattr(importlib.import_module(spec.module), spec.function)


def run_local(name: str, **parameters: Any) -> Any:
    """Run a flow in this process (against PREFECT_API_URL, else Prefect's temporary server)."""
    import asyncio

    prepare_environment()
    flow = load_flow(by_name(name))
    coroutine: Coroutine[Any, Any, Any] = flow(**parameters)
    return asyncio.run(coroutine)


class PrefectUnavailable(ProcureError):
    """The Prefect server procure is to use cannot be reached, or the one it starts did not
    start. Not a bug and not a rule: CLI exit 2, as for a database that cannot be opened."""


def api_setting() -> tuple[str, str] | None:
    """The Prefect API this installation talks to and where that is set, if one is configured:
    (url, "PREFECT_API_URL") from the environment, else from the active Prefect profile."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url.rstrip("/"), "PREFECT_API_URL"
    profile_url = _profile_setting("PREFECT_API_URL")
    if profile_url:
        return profile_url.rstrip("/"), f"PREFECT_API_URL in {_profiles_path()}"
    return None


def api_url() -> str | None:
    """The Prefect API this installation talks to, if one is configured."""
    found = api_setting()
    return found[0] if found else None


def check_api(*, timeout: float = 5.0) -> str | None:
    """The configured Prefect API, once it answers; None when none is configured (Prefect's
    temporary server, or the one `procure serve` starts, is used then). PrefectUnavailable,
    naming the address and where it is set, when nothing answers there or what answers is no
    Prefect API: said before anything starts, not as a traceback from inside Prefect."""
    found = api_setting()
    if found is None:
        return None
    url, where = found
    import httpx

    try:
        answer = httpx.get(f"{url}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise PrefectUnavailable(
            f"cannot reach the Prefect server at {url} ({where}): {reason}"
        ) from None
    if answer.status_code == 404:
        # Something answers, but not Prefect's API (a wrong port, or the URL without /api).
        raise PrefectUnavailable(
            f"cannot reach the Prefect server at {url} ({where}): {url}/health answers 404, "
            "so this is not a Prefect API (it ends in /api, e.g. http://127.0.0.1:4200/api)"
        )
    return url


def runner_poll_seconds() -> float | None:
    """How often `procure serve` asks its Prefect server for runs to start: every second, so
    that a decision's advance run starts about 2 s after it (bench/results/orchestration.md),
    not up to Prefect's 10 s later; None when the operator set PREFECT_RUNNER_POLL_FREQUENCY
    (in the environment or the Prefect profile), which Prefect then applies."""
    if os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") or _profile_setting(
        "PREFECT_RUNNER_POLL_FREQUENCY"
    ):
        return None
    return RUNNER_POLL_SECONDS


def _profiles_path() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")) / "profiles.toml"


def _profile_setting(name: str) -> str | None:
    # `prefect config set NAME=...` writes it to the profile; read it without Prefect.
    path = _profiles_path()
    if not path.exists():
        return None
    try:
        import tomllib

        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    active = data.get("active", "ephemeral")
    value = data.get("profiles", {}).get(active, {}).get(name)
    return str(value) if value else None


def trigger(name: str, parameters: dict[str, Any], *, timeout: float = 5.0) -> str | None:
    """Start a run of a deployment over Prefect's REST API; returns its id, or None when no
    Prefect server is configured. A failure is reported, never raised: the database already
    holds the change, and the scheduled flows catch up with whatever a lost trigger missed."""
    url = api_url()
    if url is None:
        return None
    import httpx

    spec = by_name(name)
    flow_name = spec.function.replace("_", "-")
    try:
        with httpx.Client(timeout=timeout) as client:
            found = client.get(f"{url}/deployments/name/{flow_name}/{spec.name}")
            found.raise_for_status()
            created = client.post(
                f"{url}/deployments/{found.json()['id']}/create_flow_run",
                json={"parameters": parameters},
            )
            created.raise_for_status()
            return str(created.json()["id"])
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        import sys

        print(f"procure: note: could not start the {name} flow at {url}: {exc}", file=sys.stderr)
        return None
