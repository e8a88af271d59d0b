"""`procure demo`: one onboarding request from submission to certified erasure, through the CLI.

Every step runs a real `procure` command against a fresh SQLite database in the output
folder and prints the command and what it answered, so the demo doubles as a tutorial.
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import typer

RITA = "rita.requester@example.com"
NINA = "nina.newhire@example.com"
IDA = "ida.it@example.com"
PAUL = "paul.purchasing@example.com"
HANNA = "hanna.hr@example.com"
BOB = "bob.budget@example.com"
CARL = "carl.deputy@example.com"


class Step:
    """Runs CLI commands in-process against the demo database, printing each like a terminal."""

    def __init__(self, db: Path):
        self.db = f"sqlite:///{db}"
        self.number = 0
        self.failures: list[str] = []

    def title(self, text: str) -> None:
        self.number += 1
        typer.echo(f"\n── {self.number}. {text}")

    def say(self, text: str) -> None:
        typer.echo(textwrap.fill(text, width=100, initial_indent="   ", subsequent_indent="   "))

    def run(self, *args: str, expect: int = 0) -> None:
        from procure.cli import main

        shown = " ".join(shlex.quote(a) for a in args)
        typer.echo(f"\n$ procure {shown}")
        code = main(["--db", self.db, *args])
        if code != expect:
            self.failures.append(f"`procure {shown}` exited {code}, expected {expect}")
            typer.echo(f"   !! exited {code}, expected {expect}")
        elif expect:
            typer.echo(f"   (exit {code}: refused, as it should be)")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def run_demo(out: Path, today: date | None = None) -> int:
    """Run the scenario in `out` (a fresh database each time); returns 0 if every step behaved."""
    out.mkdir(parents=True, exist_ok=True)
    db = out / "procure.db"
    for stale in (db, out / "procure.db-wal", out / "procure.db-shm"):
        stale.unlink(missing_ok=True)
    from models.types import utcnow

    today = today or utcnow().date()
    step = Step(db)
    typer.echo(
        "procure demo: an onboarding request for Nina Newhire, from submission to certified erasure."
    )
    typer.echo(f"Database: {db} (SQLite, embedded). Files written to: {out}/")

    step.title("A fresh database with the sample organisation, catalog and the default pipeline")
    step.run("init", "--sample")
    step.run("pipeline", "show")

    step.title("Bob, Engineering's budget owner, is away: Carl decides on his behalf for two weeks")
    delegation = write(
        out / "delegation.yaml",
        f"""
        delegations:
          - {{delegator: {BOB}, delegate: {CARL}, from: {today}, to: {today + timedelta(days=14)}, reason: Conference}}
        """,
    )
    step.run("org", "load", str(delegation))

    step.title("Rita asks for Nina's workplace: she starts in four weeks")
    request = write(
        out / "request.yaml",
        f"""
        kind: onboarding
        requester: {RITA}
        on_behalf_of: {NINA}
        cost_centre: CC-ENG
        needed_by: {today + timedelta(days=28)}
        justification: Nina joins the platform team as a developer.
        lines:
          - {{sku: LAPTOP-DEV-16, quantity: 1}}
          - {{sku: MON-27, quantity: 2}}
          - {{sku: DOCK-USB4, quantity: 1}}
        """,
    )
    step.run("request", "submit", str(request))
    step.say(
        "Submitting the same file again changes nothing: the request is recognised by its content."
    )
    step.run("request", "submit", str(request))
    step.run("request", "show", "PR-0001")

    step.title("Joint review: IT and purchasing decide together")
    step.run("inbox", "--as", IDA)
    step.run(
        "decide",
        "PR-0001",
        "--as",
        IDA,
        "--approve",
        "--comment",
        "Spec fits the platform team's build.",
    )
    step.say("Rita cannot approve her own request:")
    step.run("decide", "PR-0001", "--as", RITA, "--approve", expect=1)
    step.run(
        "decide",
        "PR-0001",
        "--as",
        PAUL,
        "--send-back",
        "--comment",
        "The 14-inch standard laptop covers this role and keeps us in one order; please switch.",
    )

    step.title("Rita switches to the standard laptop and resubmits")
    change = write(
        out / "change.yaml",
        """
        lines:
          - {sku: LAPTOP-STD-14, quantity: 1}
          - {sku: MON-27, quantity: 2}
          - {sku: DOCK-USB4, quantity: 1}
        """,
    )
    step.run(
        "request",
        "resubmit",
        "PR-0001",
        str(change),
        "--as",
        RITA,
        "--comment",
        "Switched to the standard laptop.",
    )
    step.say("The lines changed, so the joint review decides again:")
    step.run("decide", "PR-0001", "--as", IDA, "--approve")
    step.run(
        "decide",
        "PR-0001",
        "--as",
        PAUL,
        "--approve",
        "--comment",
        "Warranty, returns and erasure terms confirmed.",
    )

    step.title("The budget owner's stage: Carl approves on Bob's behalf")
    step.run("inbox", "--as", CARL)
    step.run("decide", "PR-0001", "--as", CARL, "--approve")

    step.title("Purchasing orders; the supplier confirms a delivery date")
    step.run("order", "PR-0001", "--as", PAUL)
    step.run("schedule", "PR-0001", "--date", str(today + timedelta(days=12)), "--as", PAUL)

    step.title("Delivery: the devices arrive with their serial numbers")
    serials = write(
        out / "serials.csv",
        """
        serial,sku
        SN-LAP-0001,LAPTOP-STD-14
        SN-MON-0001,MON-27
        SN-MON-0002,MON-27
        SN-DOCK-0001,DOCK-USB4
        """,
    )
    step.run("deliver", "PR-0001", "--serials", str(serials), "--as", IDA)

    step.title("Rollout: IT hands everything to Nina, who confirms")
    step.run("rollout", "PR-0001", "--as", IDA)
    step.run("asset", "ack", "SN-LAP-0001", "--as", NINA)
    step.run("asset", "show", "SN-LAP-0001")

    step.title(
        "Nina leaves: HR asks for the devices back, IT collects them, the provider erases them"
    )
    for serial in ("SN-LAP-0001", "SN-MON-0001", "SN-MON-0002", "SN-DOCK-0001"):
        step.run("asset", "request-return", serial, "--reason", "Leaver", "--as", HANNA)
        step.run("asset", "return", serial, "--as", IDA)
        step.run(
            "asset",
            "erase",
            serial,
            "--certificate",
            f"ERASE-{serial}",
            "--method",
            "NIST 800-88 purge",
            "--provider",
            "DaaS Company",
            "--as",
            IDA,
        )
    step.say("With the last certificate the request is closed. Its whole story:")
    step.run("request", "show", "PR-0001")

    step.title("The audit trail is hash-chained: nothing was altered")
    step.run("audit", "verify")

    typer.echo("")
    if step.failures:
        typer.echo("The demo did not go as expected:", err=True)
        for failure in step.failures:
            typer.echo(f"  - {failure}", err=True)
        return 1
    typer.echo(
        f"Demo complete. Explore it yourself: procure --db sqlite:///{db} request show PR-0001"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_demo(Path(argv[0]) if argv else Path("demo-output"))
