"""A request waits a week across the autumn DST change, with every process restarted during
the wait (each step is its own `procure` process; the Prefect server the watchdog runs report
to is stopped and started again over the weekend): the reminder and the escalation fire once
each, and approval then completes it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Databases
from tests.factories import BOB, IDA, PAUL, RITA
from tests.prefect_server import PrefectServer

PROCURE = str(Path(sys.executable).with_name("procure"))
# Thursday before the change to winter time (Sunday 25 October 2026 in Berlin).
SUBMITTED = "2026-10-22T09:30:00+02:00"
WATCHES = (
    "2026-10-22T18:00:00+02:00",  # after hours: 7.5 of the 16 business hours gone, nothing
    "2026-10-23T12:00:00+02:00",  # Friday, past half the SLA (Fri 09:30): the reminder
    "2026-10-26T10:00:00+01:00",  # Monday, winter time, past the deadline (09:30): escalation
    "2026-10-29T09:30:00+01:00",  # a week later: nothing fires twice
)


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[PrefectServer]:
    """A Prefect server on its own PostgreSQL database (a watchdog run without one starts a
    temporary server of its own: about 17 s of CPU each, which the suite cannot afford four
    times)."""
    server = PrefectServer(tmp_path / "prefect-server")
    server.tmp.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
def test_a_week_long_wait_across_restarts_and_dst_reminds_and_escalates_once(
    databases: Databases, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    url = databases.url("sample")
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PROCURE_HOME": str(tmp_path / "home"),
        "PROCURE_DATABASE_URL": url,
        "PREFECT_API_URL": prefect_server.api,
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }

    def procure(at: str, *args: str) -> str:
        done = subprocess.run(
            [PROCURE, *args], env={**base, "PROCURE_NOW": at}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    request = tmp_path / "request.yaml"
    request.write_text(
        f"kind: refresh\nrequester: {RITA}\ncost_centre: CC-ENG\nneeded_by: 2026-12-15\n"
        "lines: [{sku: MON-27, quantity: 2}]\n"
    )
    (ref,) = json.loads(procure(SUBMITTED, "request", "submit", str(request), "--json"))["ids"]
    for at in WATCHES:
        if at.startswith("2026-10-26"):  # Monday: the server went down over the weekend
            prefect_server.restart()
        procure(at, "run", "sla-watchdog")
    # All four runs went through the server, and it kept them across its restart.
    runs = httpx.post(f"{prefect_server.api}/flow_runs/filter", json={}, timeout=30).json()
    assert sorted((r["name"], r["state_type"]) for r in runs) == [
        ("sla-watchdog", "COMPLETED")
    ] * len(WATCHES), runs
    shown = json.loads(procure(WATCHES[-1], "request", "show", ref, "--json"))
    assert shown["status"] == "in_review"

    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as db:
        rows = db.execute(
            sqlalchemy.text("SELECT event, audience, created_at FROM notification")
        ).all()
    engine.dispose()
    reminders = Counter(a for e, a, _ in rows if e == "reminder")
    escalations = Counter(a for e, a, _ in rows if e == "escalation")
    assert reminders and set(reminders.values()) == {1}, reminders
    assert escalations and set(escalations.values()) == {1}, escalations
    assert "team:management" in escalations  # the joint review escalates to management
    # Each fired at the first watch after it was due (times in UTC): the reminder on Friday
    # (summer time), the escalation on Monday morning (winter time), in business hours.
    when = {e: {str(c)[:16] for ev, _, c in rows if ev == e} for e in ("reminder", "escalation")}
    assert when == {"reminder": {"2026-10-23 10:00"}, "escalation": {"2026-10-26 09:00"}}, when
    # The approvers are told it is overdue, once each, with their decision links; management
    # gets the escalation, and both render from the rows the sweep queued (not sample data).
    overdue = Counter(a for e, a, _ in rows if e == "overdue")
    assert {f"person:{IDA}", f"person:{PAUL}"} <= set(overdue), overdue
    assert set(overdue.values()) == {1}, overdue
    escalated = procure(
        WATCHES[-1], "notify", "preview", "escalation", "--request", ref, "--to", "management"
    )
    assert f"Overdue: {ref}" in escalated and "without a decision from IT, purchasing" in escalated
    told = procure(WATCHES[-1], "notify", "preview", "overdue", "--request", ref, "--to", IDA)
    assert f"Subject: Overdue: {ref} waited for your decision" in told
    assert "decision=approve" in told and "you can still decide it now" in told

    # Approved after the wait, the request completes its review.
    later = "2026-10-29T10:00:00+01:00"
    procure(later, "decide", ref, "--as", IDA, "--approve")
    procure(later, "decide", ref, "--as", PAUL, "--approve", "--confirm-terms")
    procure(later, "decide", ref, "--as", BOB, "--approve")
    assert json.loads(procure(later, "request", "show", ref, "--json"))["status"] == "approved"
